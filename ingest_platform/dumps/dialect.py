"""Dialects: a source system's type map and data-file format, read from one TOML file.

A new dialect is a new ``ingest_platform/dialects/<name>.toml`` (or one in the operator's
``INGEST_DIALECT_DIR``); no code changes.

Where a dialect may come from: by name, from ``INGEST_DIALECT_DIR`` (first, so an operator can
replace a shipped dialect) or the platform's ``dialects/`` folder; from any ``.toml`` path the
operator gives (``--dialect``, ``INGEST_DUMP_DIALECT``: ``load_dialect``); from a ``.toml``
member of the dump itself (``dialect_from_text``, see ``archive``). A dump's manifest never
makes the platform read a file outside the dump: names are plain words, not paths.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.errors import ConfigError, SchemaError

DIALECTS_DIR = Path(__file__).resolve().parent.parent / "dialects"
DIALECT_DIR_ENV = "INGEST_DIALECT_DIR"  # the operator's own dialects, searched first
_DIALECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a word, never a path
SCHEMA_LANGUAGES = ("tsql", "mysql", "json")

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
        # Every key is checked here: a manifest or schema can set any of them, and a wrong type
        # would otherwise surface as a raw TypeError deep in the reader.
        for key in ("field_terminator", "row_terminator", "null", "escape", "quote", "encoding"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{key} must be a string, not {getattr(self, key)!r}")
        if not isinstance(self.empty_string, str | None):
            raise ConfigError(f"empty_string must be a string, not {self.empty_string!r}")
        if not isinstance(self.row_terminator_crlf_sniff, bool):
            raise ConfigError(
                f"row_terminator_crlf_sniff must be true or false, not "
                f"{self.row_terminator_crlf_sniff!r}"
            )
        if type(self.header_rows) is not int or self.header_rows < 0:
            raise ConfigError(f"header_rows must be a whole number >= 0, not {self.header_rows!r}")
        if not self.field_terminator or not self.row_terminator:
            raise ConfigError("field_terminator and row_terminator must not be empty")
        if len(self.quote) > 1:
            raise ConfigError(f"quote must be '' or one character, not {self.quote!r}")
        check_encoding(self.encoding)
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
        if not isinstance(overrides, dict):
            raise ConfigError(f"a file format must be an object of key -> value, not {overrides!r}")
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


def check_encoding(encoding: str) -> None:
    """A Python text codec, or ConfigError (an unknown code page must not surface as LookupError
    in the middle of a load)."""
    try:
        known = codecs.lookup(encoding)._is_text_encoding
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        known = False
    if not known:
        raise ConfigError(
            f"unknown encoding {encoding!r}; use a Python codec name such as 'utf-8', "
            "'cp1252', 'latin-1' or 'utf-16-le'"
        )


def load_dialect(name_or_path: str | Path, environ=os.environ) -> Dialect:
    """A dialect by name (``mssql``, ``mysql``, ``csv``, or one in ``INGEST_DIALECT_DIR``), or
    from a ``.toml`` path. Paths are for the operator; a manifest names a dialect by name or
    names a member of its own dump (``archive``)."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = _named_dialect_path(str(name_or_path), environ)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read dialect config {path}: {error}") from error
    return dialect_from_text(text, path.stem, str(path))


def _named_dialect_path(name: str, environ) -> Path:
    folders = [Path(d) for d in [environ.get(DIALECT_DIR_ENV)] if d] + [DIALECTS_DIR]
    if _DIALECT_NAME.match(name):
        for folder in folders:
            if (folder / f"{name}.toml").is_file():
                return folder / f"{name}.toml"
    known = sorted({p.stem for folder in folders for p in folder.glob("*.toml")})
    raise ConfigError(
        f"unknown dialect {name!r}; known: {known} (the platform's, and those in "
        f"{DIALECT_DIR_ENV}), or give a .toml path with --dialect or INGEST_DUMP_DIALECT"
    )


def dialect_from_text(text: str, default_name: str, where: str) -> Dialect:
    """A dialect from the text of its TOML config; errors name `where` (a path or a member)."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"cannot read dialect config {where}: {error}") from error
    problem = _config_problem(config)
    if problem:
        raise ConfigError(f"dialect config {where}: {problem}")
    try:
        file_format = FileFormat().with_overrides(config.get("format", {}))
    except ConfigError as error:
        raise ConfigError(f"dialect config {where}: [format] {error}") from error
    return Dialect(
        name=config.get("name", default_name),
        file_format=file_format,
        schema_language=config.get("schema_language", "json"),
        data_extensions=tuple(e.lower() for e in config.get("data_extensions", [".dat"])),
        types={k.lower(): v for k, v in config.get("types", {}).items()},
        description=config.get("description", ""),
    )


def _config_problem(config: dict) -> str | None:
    for key in ("name", "description"):
        if not isinstance(config.get(key, ""), str):
            return f"{key} must be a string"
    if config.get("schema_language", "json") not in SCHEMA_LANGUAGES:
        return f"schema_language must be one of {list(SCHEMA_LANGUAGES)}"
    extensions = config.get("data_extensions", [".dat"])
    if not isinstance(extensions, list) or not all(
        isinstance(e, str) and e.startswith(".") for e in extensions
    ):
        return f'data_extensions must be a list like [".dat", ".txt"], not {extensions!r}'
    types = config.get("types", {})
    if not isinstance(types, dict):
        return "[types] must be a table of source type -> PostgreSQL type"
    for source_type, rule in types.items():
        parts = list(rule.values()) if isinstance(rule, dict) else [rule]
        if not parts or not all(isinstance(part, str) for part in parts):
            return (
                f"[types] {source_type!r} must be a PostgreSQL type or "
                f"{{template = ..., bare = ...}}, not {rule!r}"
            )
    return None
