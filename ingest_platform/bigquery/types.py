"""PostgreSQL -> BigQuery column mapping for the mirror, and BigQuery-safe names.

Every column becomes a ``MirrorColumn``: its PostgreSQL name and type, its BigQuery name and
type, and a *kind* (``kinds.KINDS``) that decides the same way everywhere how a value is read,
carried, checked and hashed. The mapping, as the README's type table shows it: the kind of the
type (``kinds.KIND_OF_PG_TYPE``); numeric(p,s) with s <= 9 and p-s <= 29 is NUMERIC, up to 38.38
(or unconstrained, each value checked) BIGNUMERIC, beyond that an error; types no kind lists
(uuid, inet, interval, timetz, enums, domains, ``"char"``) are STRING in PostgreSQL's text form;
T[] is REPEATED T (a NULL array becomes empty, NULL elements are an error); arrays of arrays are
an error.

Column names: BigQuery takes letters, digits and underscores, not starting with a digit; other
characters become ``_`` and clashes get a numeric suffix (``bq_column_names``). Table names: see
``bq_table_names``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ingest_platform.bigquery.kinds import (
    BIGNUMERIC_MAX_INTEGER_DIGITS,
    BIGNUMERIC_MAX_SCALE,
    KIND_OF_PG_TYPE,
    KINDS,
    NUMERIC_MAX_INTEGER_DIGITS,
    NUMERIC_MAX_SCALE,
    STRING,
    Kind,
)
from ingest_platform.errors import SchemaError
from ingest_platform.postgres.catalog import parsed_type
from ingest_platform.postgres.type_widening import PgType


@dataclass(frozen=True)
class MirrorColumn:
    """One mirrored column."""

    name: str  # PostgreSQL column name
    pg_type: str  # as format_type prints it
    bq_name: str  # BigQuery column name
    bq_type: str  # the kind's BigQuery type; STRING for BIGNUMERIC on the emulator
    kind: str  # a key of kinds.KINDS
    repeated: bool = False  # a PostgreSQL array -> REPEATED

    @property
    def mode(self) -> str:
        return "REPEATED" if self.repeated else "NULLABLE"

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]


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
    kind = _numeric_kind(table, name, pg_type, parsed) or KIND_OF_PG_TYPE.get(parsed.name, STRING)
    bq_type = kind.bq_type
    if bq_type == "BIGNUMERIC" and not bignumeric:
        bq_type = "STRING"
    return MirrorColumn(
        name=name,
        pg_type=pg_type,
        bq_name=bq_name or bq_column_names([name])[0],
        bq_type=bq_type,
        kind=kind.name,
        repeated=parsed.array_dims == 1,
    )


def comparable_column(name: str, pg_type: str) -> MirrorColumn:
    """A column as the consistency checks hash it between two PostgreSQL tables: the kind of its
    type, without BigQuery's limits (any numeric is numeric text, arrays of arrays are arrays)."""
    parsed = parsed_type(pg_type)
    kind = (
        KINDS["numeric"] if parsed.name == "numeric" else KIND_OF_PG_TYPE.get(parsed.name, STRING)
    )
    return MirrorColumn(
        name, pg_type, bq_name(name), kind.bq_type, kind.name, repeated=parsed.array_dims > 0
    )


def _numeric_kind(table: str, name: str, pg_type: str, t: PgType) -> Kind | None:
    if t.name != "numeric":
        return None
    if not t.modifiers:
        return KINDS["bignumeric"]
    precision, scale = (t.modifiers + (0,))[:2]
    integer_digits = precision - scale
    if 0 <= scale <= NUMERIC_MAX_SCALE and integer_digits <= NUMERIC_MAX_INTEGER_DIGITS:
        return KINDS["numeric"]
    if 0 <= scale <= BIGNUMERIC_MAX_SCALE and integer_digits <= BIGNUMERIC_MAX_INTEGER_DIGITS:
        return KINDS["bignumeric"]
    raise SchemaError(
        f'{table}: column "{name}" is {pg_type}, beyond BigQuery BIGNUMERIC '
        f"({BIGNUMERIC_MAX_INTEGER_DIGITS} integer and {BIGNUMERIC_MAX_SCALE} fractional digits). "
        "Narrow the column or exclude it from the mirror."
    )


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


def bq_table_names(names: Iterable[str], dataset: str = "") -> dict[str, str]:
    """BigQuery table names for the PostgreSQL tables mirrored into one dataset, distinct even
    where only case differs, or SchemaError naming the two tables.

    A name BigQuery holds is kept; any other becomes ``bq_name`` + "_" + 8 hex digits of its
    SHA-256 ("1x" -> "_1x_<hash>", so it never meets a table "_1x"). Real BigQuery's table names
    are case-sensitive, the emulator's are not: of names equal but for case ("Item", "item"), all
    but the all-lowercase one get the hash too, so both tables exist on either."""
    names = list(names)
    lower_count: dict[str, int] = {}
    for name in names:
        lower_count[bq_name(name).lower()] = lower_count.get(bq_name(name).lower(), 0) + 1
    result: dict[str, str] = {}
    owner: dict[str, str] = {}  # lowercased BigQuery name -> PostgreSQL name
    for name in names:
        fitted = bq_name(name)
        twin = lower_count[fitted.lower()] > 1 and name != name.lower()
        table = name if fitted == name and not twin else f"{fitted[:291]}_{_short_hash(name)}"
        other = owner.setdefault(table.lower(), name)
        if other != name or name in result:
            where = f"BigQuery dataset {dataset}: " if dataset else ""
            raise SchemaError(
                f"{where}PostgreSQL tables {other!r} and {name!r} would both mirror to table "
                f"{table!r} (BigQuery and its emulator compare names without case). "
                "Rename one of them."
            )
        result[name] = table
    return result


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def bq_column_names(names: list[str]) -> list[str]:
    """BigQuery names for a table's columns, distinct (case-insensitively, as BigQuery compares)."""
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, n = bq_name(name), 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{bq_name(name)[:290]}_{n}"
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
