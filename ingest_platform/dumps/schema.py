"""The table-schema model and the reader of the platform's own ``<table>.json`` schema."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ingest_platform.dumps.dialect import Dialect
from ingest_platform.errors import SchemaError

# What PostgreSQL and the platform's own names leave to a dump's tables (checked when a dump is
# opened, so a dump that can never load is refused before any run; postgres/versioned_tables
# checks the same again against the database).
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer names
MAX_COLUMNS = 1600 - 1  # PostgreSQL's limit, less the platform's version column
VERSION_COLUMN = "_version"  # postgres.versioned_tables.VERSION_COLUMN
REGISTRY_TABLE = "_ingest_versions"  # postgres.version_registry.REGISTRY_TABLE


@dataclass
class Column:
    name: str  # exact source name (quoted later with psycopg.sql.Identifier)
    source_type: str  # as the source declares it, e.g. "nvarchar(50)", "int(10) unsigned"
    pg_type: str  # PostgreSQL type, from the dialect's type map
    nullable: bool = True
    computed: bool = False  # computed (SQL Server) or generated (MySQL): the export holds its value
    # Codec of this column's bytes where the file's format says columns keep their own charset
    # (FileFormat.column_charsets; MySQL's SELECT INTO OUTFILE), None: the file's encoding.
    encoding: str | None = None


@dataclass
class TableSchema:
    name: str  # the table's key in the dump (its data file's stem)
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    source_schema: str | None = None  # e.g. "Person" for [Person].[Address]; informational

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def validate(self) -> TableSchema:
        names = self.column_names
        if not isinstance(self.name, str) or not self.name or "\0" in self.name:
            raise SchemaError(f"table name {self.name!r}: give the table a non-empty name")
        if self.name == REGISTRY_TABLE:
            raise SchemaError(
                f"table {self.name!r} has the name of the platform's registry table; rename it "
                "in its schema"
            )
        if not names:
            raise SchemaError(f"table {self.name!r} has no columns")
        if len(names) > MAX_COLUMNS:
            raise SchemaError(
                f"table {self.name!r} has {len(names)} columns; PostgreSQL tables hold at most "
                f"{MAX_COLUMNS} besides the platform's {VERSION_COLUMN}: split the table or "
                "leave columns out of its schema"
            )
        for name in names:
            if not name or "\0" in name:
                raise SchemaError(
                    f"table {self.name!r}, column {name!r}: give the column a name without NUL"
                )
            if len(name.encode()) > MAX_IDENTIFIER_BYTES:
                raise SchemaError(
                    f"table {self.name!r}, column {name!r}: the name is longer than "
                    f"{MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL truncates; rename the column "
                    "in the schema"
                )
            if name == VERSION_COLUMN:
                raise SchemaError(
                    f"table {self.name!r}, column {name!r}: the name is reserved for the "
                    "platform's version column; rename the column in the schema"
                )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"table {self.name!r} declares columns {duplicates} more than once")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise SchemaError(f"table {self.name!r}: primary key columns {missing} are not columns")
        return self


def read_json_schema(
    text: str, dialect: Dialect, default_name: str, file: str = ""
) -> tuple[TableSchema, dict]:
    """Read a ``<table>.json`` schema; returns the schema and its optional file-format overrides."""
    where = file or f"{default_name}.json"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(f"{where}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("columns"), list):
        raise SchemaError(f"{where}: expected an object with a 'columns' list")
    columns = []
    for position, spec in enumerate(document["columns"], start=1):
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("type"), str)
            or not isinstance(spec.get("pg_type", ""), str)
            or not isinstance(spec.get("nullable", True), bool)
            or not isinstance(spec.get("computed", False), bool)
        ):
            raise SchemaError(
                f"{where}: column {position} needs a string 'name' and 'type' (and optionally "
                "a string 'pg_type', true/false 'nullable' and 'computed')"
            )
        try:
            pg_type = spec.get("pg_type") or dialect.map_type(spec["type"])
        except SchemaError as error:
            raise SchemaError(f"{where}: column {spec['name']!r}: {error}") from None
        columns.append(
            Column(
                name=spec["name"],
                source_type=spec["type"],
                pg_type=pg_type,
                nullable=spec.get("nullable", True),
                computed=spec.get("computed", False),
            )
        )
    primary_key = document.get("primary_key", [])
    if not isinstance(primary_key, list) or not all(isinstance(k, str) for k in primary_key):
        raise SchemaError(f"{where}: 'primary_key' must be a list of column names")
    name, source_schema = document.get("name", default_name), document.get("source_schema")
    if not isinstance(name, str) or not isinstance(source_schema, str | None):
        raise SchemaError(
            f"{where}: 'name' and 'source_schema' must be strings (\"name\": \"{name}\")"
        )
    try:
        schema = TableSchema(name, columns, list(primary_key), source_schema).validate()
    except SchemaError as error:
        raise SchemaError(f"{where}: {error}") from None
    overrides = document.get("format", {})
    if not isinstance(overrides, dict):
        raise SchemaError(f"{where}: 'format' must be an object")
    return schema, overrides
