"""PostgreSQL -> BigQuery type mapping for the mirror, and BigQuery-safe names.

Every column becomes a ``MirrorColumn``: its PostgreSQL name and type, its BigQuery name and
type, and a *kind* that decides three things the same way everywhere: the SQL expression that
reads it from PostgreSQL (already in the form the Storage Write API wants), the protobuf field
type that carries it, and its canonical text form for the consistency checks.

=============================  ===========  ========  ==========================================
PostgreSQL                     BigQuery     kind      protobuf field (Storage Write API)
=============================  ===========  ========  ==========================================
smallint, integer, bigint      INT64        int       int64
numeric(p,s), s<=9, p-s<=29    NUMERIC      numeric   string (``12.50``)
numeric(p,s), s<=38, p-s<=38   BIGNUMERIC   numeric   string
numeric (no precision)         BIGNUMERIC   numeric   string; each value checked against 38.38
numeric beyond 38.38           (error)                SchemaError naming table and column
money                          NUMERIC      numeric   string (``money::numeric``)
real, double precision         FLOAT64      float     double
boolean                        BOOL         bool      bool
text, varchar(n), char(n)      STRING       string    string (char without trailing blanks)
uuid, inet, cidr, interval,    STRING       string    string (PostgreSQL's text form)
timetz, anything else
bytea                          BYTES        bytes     bytes
date                           DATE         date      int32 days since 1970-01-01
timestamp with time zone       TIMESTAMP    timestamp int64 microseconds since the epoch (UTC)
timestamp without time zone    DATETIME     datetime  string ``YYYY-MM-DDTHH:MM:SS.ffffff``
time without time zone         TIME         time      string ``HH:MM:SS.ffffff``
json, jsonb                    JSON         json      string (PostgreSQL's text form)
T[] (one dimension)            REPEATED T   as T      repeated T; NULL array -> empty array;
                                                      NULL elements are an error
T[][] (more dimensions)        (error)                SchemaError naming table and column
=============================  ===========  ========  ==========================================

NULL stays NULL (proto2 optional fields left unset), unless a table asks for ``fill_nulls``:
then NULL becomes the kind's default (0, 0.0, false, '', b'', 1970-01-01, the epoch, 00:00:00,
``null`` JSON). Values BigQuery cannot hold are errors naming table, key and column: numbers
beyond NUMERIC/BIGNUMERIC precision or NaN, dates and timestamps outside 0001-01-01 ..
9999-12-31 (infinity included), time 24:00:00, text that is not valid UTF-8.

Column names: BigQuery takes letters, digits and underscores, not starting with a digit; other
characters become ``_`` and clashes get a numeric suffix (``bq_column_names``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest_platform.errors import SchemaError
from ingest_platform.postgres.catalog import parsed_type
from ingest_platform.postgres.type_widening import PgType

NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE = 29, 9
BIGNUMERIC_MAX_INTEGER_DIGITS, BIGNUMERIC_MAX_SCALE = 38, 38

# BigQuery's ranges (inclusive), in the units the Storage Write API takes.
TIMESTAMP_MIN_MICROS = -62135596800_000000  # 0001-01-01 00:00:00 UTC
TIMESTAMP_MAX_MICROS = 253402300799_999999  # 9999-12-31 23:59:59.999999 UTC
DATE_MIN_DAYS, DATE_MAX_DAYS = -719162, 2932896  # 0001-01-01, 9999-12-31
# What the read query returns for an infinite date or timestamp (outside every range above).
INFINITY_SENTINEL = 9223372036854775807

_INTEGERS = {"smallint", "integer", "bigint"}
_FLOATS = {"real", "double precision"}
_STRINGS = {
    "text",
    "varchar",
    "char",
    "uuid",
    "inet",
    "cidr",
    "interval",
    "timetz",
    "citext",
    "name",
    "xml",
}

BQ_TYPE_OF_KIND = {
    "int": "INT64",
    "float": "FLOAT64",
    "bool": "BOOL",
    "string": "STRING",
    "bytes": "BYTES",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "datetime": "DATETIME",
    "time": "TIME",
    "json": "JSON",
}


@dataclass(frozen=True)
class MirrorColumn:
    """One mirrored column."""

    name: str  # PostgreSQL column name
    pg_type: str  # as format_type prints it
    bq_name: str  # BigQuery column name
    bq_type: str  # INT64, NUMERIC, BIGNUMERIC, FLOAT64, BOOL, STRING, BYTES, DATE, ...
    kind: str  # int numeric float bool string bytes date timestamp datetime time json
    repeated: bool = False  # a PostgreSQL array -> REPEATED
    check_numeric: bool = False  # values need a per-value precision check (unconstrained numeric)
    money: bool = False

    @property
    def mode(self) -> str:
        return "REPEATED" if self.repeated else "NULLABLE"


def map_column(
    table: str, name: str, pg_type: str, bq_name: str | None = None, *, bignumeric: bool = True
) -> MirrorColumn:
    """The BigQuery column for a PostgreSQL column, or SchemaError naming table and column.

    ``bignumeric=False`` (the local emulator, whose DuckDB decimals stop at 38 digits): columns
    that would be BIGNUMERIC become STRING holding the same numeric text (values still checked)."""
    parsed = parsed_type(pg_type)  # a spelling parse_pg_type declines ("char", enums) is STRING
    if parsed.array_dims > 1:
        raise SchemaError(
            f'{table}: column "{name}" has type {pg_type}: BigQuery has no arrays of arrays. '
            "Exclude the column from the mirror or flatten it in a view."
        )
    kind, bq_type, check, money = _scalar(table, name, pg_type, parsed)
    if bq_type == "BIGNUMERIC" and not bignumeric:
        bq_type, check = "STRING", True
    return MirrorColumn(
        name=name,
        pg_type=pg_type,
        bq_name=bq_name or bq_column_names([name])[0],
        bq_type=bq_type,
        kind=kind,
        repeated=parsed.array_dims == 1,
        check_numeric=check,
        money=money,
    )


def _scalar(table: str, name: str, pg_type: str, t: PgType) -> tuple[str, str, bool, bool]:
    if t.name in _INTEGERS:
        return "int", "INT64", False, False
    if t.name == "numeric":
        if not t.modifiers:
            return "numeric", "BIGNUMERIC", True, False
        precision, scale = (t.modifiers + (0,))[:2]
        integer_digits = precision - scale
        if (
            scale <= NUMERIC_MAX_SCALE
            and integer_digits <= NUMERIC_MAX_INTEGER_DIGITS
            and scale >= 0
        ):
            return "numeric", "NUMERIC", False, False
        if 0 <= scale <= BIGNUMERIC_MAX_SCALE and integer_digits <= BIGNUMERIC_MAX_INTEGER_DIGITS:
            return "numeric", "BIGNUMERIC", False, False
        raise SchemaError(
            f'{table}: column "{name}" is {pg_type}, beyond BigQuery BIGNUMERIC '
            f"({BIGNUMERIC_MAX_INTEGER_DIGITS} integer and {BIGNUMERIC_MAX_SCALE} fractional digits). "
            "Narrow the column or exclude it from the mirror."
        )
    if t.name == "money":
        return "numeric", "NUMERIC", False, True
    if t.name in _FLOATS:
        return "float", "FLOAT64", False, False
    if t.name == "boolean":
        return "bool", "BOOL", False, False
    if t.name == "bytea":
        return "bytes", "BYTES", False, False
    if t.name == "date":
        return "date", "DATE", False, False
    if t.name == "timestamptz":
        return "timestamp", "TIMESTAMP", False, False
    if t.name == "timestamp":
        return "datetime", "DATETIME", False, False
    if t.name == "time":
        return "time", "TIME", False, False
    if t.name in ("json", "jsonb"):
        return "json", "JSON", False, False
    return "string", "STRING", False, False  # text types, uuid, inet, interval, timetz, enums, ...


# ----------------------------------------------------------------------------- BigQuery names

_BQ_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_BQ_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_BQ_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{0,127}$")


def bq_name(text: str) -> str:
    """A BigQuery-safe column or table name for any PostgreSQL name."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text) or "_"
    if name[0].isdigit():
        name = "_" + name
    return name[:300]


def bq_column_names(names: list[str]) -> list[str]:
    """BigQuery names for a table's columns, distinct (case-insensitively, as BigQuery compares)."""
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, n = bq_name(name), 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{bq_name(name)}_{n}"
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def quote_bq(*parts: str) -> str:
    """`project.dataset.table` or `column`, each part validated, joined in backticks."""
    for part in parts:
        if not (_BQ_NAME.match(part) or _BQ_DATASET.match(part) or _BQ_PROJECT.match(part)):
            raise SchemaError(
                f"{part!r} is not a valid BigQuery name (letters, digits, underscores)."
            )
    return "`" + ".".join(parts) + "`"


def quote_bq_column(name: str) -> str:
    if not _BQ_NAME.match(name):
        raise SchemaError(f"{name!r} is not a valid BigQuery column name.")
    return f"`{name}`"


def type_mapping_markdown() -> str:
    """The mapping table above as markdown (for the README)."""
    rows = [
        ("smallint, integer, bigint", "INT64", "int64"),
        ("numeric(p,s) with s <= 9 and p-s <= 29; money", "NUMERIC", "string"),
        (
            "numeric(p,s) with s <= 38 and p-s <= 38; numeric without precision",
            "BIGNUMERIC",
            "string",
        ),
        ("real, double precision", "FLOAT64", "double"),
        ("boolean", "BOOL", "bool"),
        ("text, varchar, char, uuid, inet, interval, timetz, others", "STRING", "string"),
        ("bytea", "BYTES", "bytes"),
        ("date", "DATE", "int32 days since 1970-01-01"),
        ("timestamp with time zone", "TIMESTAMP", "int64 microseconds since the epoch"),
        ("timestamp without time zone", "DATETIME", "string"),
        ("time", "TIME", "string"),
        ("json, jsonb", "JSON", "string"),
        ("T[]", "REPEATED T", "repeated T"),
    ]
    lines = ["| PostgreSQL | BigQuery | protobuf |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
