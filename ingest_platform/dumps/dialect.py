"""Dialects: a source system's type map and data-file format, read from one TOML file.

A new dialect is a new ``ingest_platform/dialects/<name>.toml``; no code changes.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.errors import ConfigError, SchemaError

DIALECTS_DIR = Path(__file__).resolve().parent.parent / "dialects"

_FORMAT_KEYS = {
    "field_terminator",
    "row_terminator",
    "row_terminator_crlf_sniff",
    "null",
    "empty_string",
    "escape",
    "quote",
    "encoding",
    "header_rows",
    "binary",
    "zero_dates",
    "column_charsets",
    "max_errors",
}


@dataclass(frozen=True)
class FileFormat:
    """How one data file is written.  Picklable: it travels inside load plans."""

    field_terminator: str = "\t"
    row_terminator: str = "\n"
    row_terminator_crlf_sniff: bool = False  # "\n" may really be "\r\n" (bcp): look at the file
    null: str = ""  # the field text that means NULL (compared before unescaping)
    empty_string: str | None = (
        ""  # the field text that means '' (bcp: "\x00"); None: not expressible
    )
    escape: str = ""  # "" (none) or "\\" (MySQL backslash escapes)
    quote: str = ""  # "" (none) or '"' (CSV)
    encoding: str = "utf-8"  # overridden by a byte-order mark in the file
    header_rows: int = 0
    binary: str = "hex"  # how bytea columns are written: "hex" (bare hex) or "raw" bytes
    zero_dates: str = "keep"  # "null": dates with a zero year/month/day become NULL
    column_charsets: bool = False  # text columns are in their own Column.encoding (MySQL)
    # Reject budget: records that may fail to load (quarantined, see postgres/quarantine.py)
    # before the table fails; 0 = strict. BULK INSERT's MAXERRORS sets it per table.
    max_errors: int = 0

    def __post_init__(self) -> None:
        if not self.field_terminator or not self.row_terminator:
            raise ConfigError("field_terminator and row_terminator must not be empty")
        if self.escape not in ("", "\\"):
            raise ConfigError(f"escape must be '' or '\\\\', not {self.escape!r}")
        if self.binary not in ("hex", "raw"):
            raise ConfigError(f"binary must be 'hex' or 'raw', not {self.binary!r}")
        if self.zero_dates not in ("keep", "null"):
            raise ConfigError(f"zero_dates must be 'keep' or 'null', not {self.zero_dates!r}")
        if not isinstance(self.column_charsets, bool):
            raise ConfigError(
                f"column_charsets must be true or false, not {self.column_charsets!r}"
            )
        if (
            not isinstance(self.max_errors, int)
            or isinstance(self.max_errors, bool)
            or self.max_errors < 0
        ):
            raise ConfigError(f"max_errors must be a whole number >= 0, not {self.max_errors!r}")

    def with_overrides(self, overrides: dict) -> FileFormat:
        """A copy with some keys replaced (from a manifest, a JSON schema or BULK INSERT)."""
        unknown = set(overrides) - _FORMAT_KEYS
        if unknown:
            raise ConfigError(
                f"unknown file format keys {sorted(unknown)}; allowed: {sorted(_FORMAT_KEYS)}"
            )
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class Dialect:
    name: str
    file_format: FileFormat
    schema_language: str  # "tsql" | "mysql" | "json": how *.sql members are read
    data_extensions: tuple[str, ...]
    types: dict = field(default_factory=dict, hash=False, compare=False)
    description: str = ""

    def map_type(self, source_type: str) -> str:
        """PostgreSQL type for a source type such as ``nvarchar(50)`` or ``int(10) unsigned``."""
        base, params, modifiers = parse_type_name(source_type)
        keys = []
        if params:
            keys.append(f"{base}({','.join(params)})")
        if modifiers:
            keys.append(f"{base} {modifiers}")
        keys.append(base)
        for key in keys:
            rule = self.types.get(key)
            if rule is not None:
                return _apply_rule(rule, params)
        raise SchemaError(
            f"dialect {self.name!r} has no PostgreSQL type for source type {source_type!r}; "
            f"add {base!r} to [types] in its dialect config"
        )


_TYPE_NAME = re.compile(
    r"^\s*([A-Za-z_][\w ]*?)\s*(?:\((.*)\))?\s*((?:unsigned|signed|zerofill|\s)*)$", re.I
)


def parse_type_name(source_type: str) -> tuple[str, list[str], str]:
    """Split ``int(10) unsigned`` into ("int", ["10"], "unsigned"); names are lower-cased."""
    match = _TYPE_NAME.match(source_type)
    if not match:
        raise SchemaError(f"cannot read source type {source_type!r}")
    base = " ".join(match.group(1).lower().split())
    params = [p.strip().lower() for p in match.group(2).split(",")] if match.group(2) else []
    modifiers = " ".join(m for m in match.group(3).lower().split() if m != "zerofill")
    return base, params, modifiers


def _apply_rule(rule, params: list[str]) -> str:
    if isinstance(rule, dict):
        template = rule.get("template") if params else rule.get("bare", rule.get("template"))
        if template is None:
            raise SchemaError(f"type rule {rule!r} needs 'template' and/or 'bare'")
    else:
        template = rule
    return template.replace("{params}", ",".join(params))


def load_dialect(name_or_path: str | Path) -> Dialect:
    """Load ``mssql``/``mysql``/``csv`` (or any name in the dialects folder) or a TOML file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = DIALECTS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in DIALECTS_DIR.glob("*.toml"))
            raise ConfigError(
                f"unknown dialect {name_or_path!r}; known: {known}, or give a .toml path"
            )
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read dialect config {path}: {error}") from error
    try:
        file_format = FileFormat().with_overrides(config.get("format", {}))
        return Dialect(
            name=config.get("name", path.stem),
            file_format=file_format,
            schema_language=config.get("schema_language", "json"),
            data_extensions=tuple(e.lower() for e in config.get("data_extensions", [".dat"])),
            types={k.lower(): v for k, v in config.get("types", {}).items()},
            description=config.get("description", ""),
        )
    except TypeError as error:
        raise ConfigError(f"dialect config {path} is malformed: {error}") from error
