"""The CSV import directory: which table each file goes to, and how it is read.

Layout (``INGEST_CSV_IMPORT_DIR``)::

    <dir>/<schema>.<table>/<any name>.csv     each file is imported into schema.table
    <dir>/<schema>.<table>/import.toml        optional: how that table's files are read

``import.toml`` holds any of ``encoding`` ("utf-8"), ``delimiter`` (","), ``header`` (false),
``on_reject`` ("quarantine" here, since files arrive unattended: the good rows load and the bad ones
are kept and named) and ``max_rejects`` (none). One directory per table rather than a glob-to-table
config: the table a file goes to is visible where the file lies, and moving a file to another
directory is the whole configuration.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ingest_platform.errors import ConfigError
from ingest_platform.migration.csv_import import CsvOptions

OPTIONS_FILE = "import.toml"
SUFFIX = ".csv"
DEFAULTS = CsvOptions(on_reject="quarantine")
# Dagster refuses these in a partition key (the file name is the partition).
FORBIDDEN_IN_NAME = (",", "[", "]", "...")


@dataclass(frozen=True)
class ImportTable:
    schema: str
    table: str
    directory: Path

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"


def import_tables(directory: Path) -> list[ImportTable]:
    """The table directories (named ``schema.table``) under `directory`, sorted."""
    if not directory.is_dir():
        return []
    found = []
    for sub in sorted(directory.iterdir()):
        schema, dot, table = sub.name.partition(".")
        if sub.is_dir() and dot and schema and table and "." not in table:
            found.append(ImportTable(schema, table, sub))
    return found


def csv_files(table: ImportTable) -> list[Path]:
    return sorted(
        p for p in table.directory.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIX)
    )


def unusable_name(name: str) -> str | None:
    """Why a file name cannot be a partition key, or None."""
    bad = [s for s in FORBIDDEN_IN_NAME if s in name]
    return f"its name holds {' and '.join(map(repr, bad))}; rename it" if bad else None


def read_options(table: ImportTable) -> CsvOptions:
    """The table's ``import.toml`` over the defaults; an error naming the file and the key."""
    path = table.directory / OPTIONS_FILE
    if not path.exists():
        return DEFAULTS
    try:
        given = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not readable TOML ({exc}); fix it.") from None
    kinds = {"encoding": str, "delimiter": str, "header": bool, "on_reject": str,
             "max_rejects": int}  # fmt: skip
    for key, value in given.items():
        if key not in kinds:
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(kinds)}.")
        if not isinstance(value, kinds[key]) or isinstance(value, bool) != (kinds[key] is bool):
            raise ConfigError(f"{path}: {key} must be a {kinds[key].__name__}, not {value!r}.")
    if given.get("on_reject", "quarantine") not in ("fail", "quarantine"):
        raise ConfigError(f"{path}: on_reject must be fail or quarantine.")
    return CsvOptions(**{**DEFAULTS.__dict__, **given})
