"""What the catalog says about an exposed table, and the request model made from it.

Columns, types, NOT NULL and defaults come from ``postgres/catalog.py`` and ``pg_attrdef``; the
foreign keys from ``migration/csv_import.foreign_keys`` (the one query for them). A column the
server numbers (identity, or a primary key whose default is ``nextval``) is left out of the
request: its values come from the table's own sequence. Read once when the app starts: a changed
table needs a restart of the API.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired, Required

import psycopg
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
)
from typing_extensions import TypedDict

from ingest_platform.errors import ConfigError
from ingest_platform.migration.csv_import import ForeignKey, foreign_keys
from ingest_platform.postgres import catalog

from .config import ApiTable

INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class ApiColumn:
    name: str
    type: str  # as format_type prints it (safe to put in SQL text)
    not_null: bool
    default: str | None  # the default expression as pg_get_expr prints it


@dataclass(frozen=True)
class TableShape:
    config: ApiTable
    columns: tuple[ApiColumn, ...]  # the columns a request may give (server id left out)
    id_column: str | None  # numbered by the server from `sequence`
    sequence: str | None
    key_column: str | None  # the single-column primary key returned as each record's id
    foreign_keys: tuple[ForeignKey, ...]
    unique_keys: tuple[tuple[str, tuple[str, ...]], ...]  # (constraint, columns) without id

    @property
    def name(self) -> str:
        return self.config.name

    def column(self, name: str) -> ApiColumn | None:
        return next((c for c in self.columns if c.name == name), None)


def read_shape(conn: psycopg.Connection, table: ApiTable) -> TableShape:
    """The shape of an exposed table; ConfigError when it does not exist."""
    oid = catalog.relation_oid(conn, table.schema, table.table)
    if oid is None:
        raise ConfigError(
            f"API table {table.label} does not exist: create it (the HR example: "
            "`ingest-platform demo-hr`) or remove it from INGEST_API_CONFIG."
        )
    extra = {
        name: (default, identity)
        for name, default, identity in conn.execute(
            "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d"
            "  ON d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attgenerated = ''"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (oid,),
        ).fetchall()
    }
    generated = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attgenerated <> ''", (oid,)
        )
    }
    key = catalog.primary_key(conn, oid)
    id_column = sequence = None
    if len(key) == 1:
        default, identity = extra[key[0]]
        if identity or (default or "").startswith("nextval("):
            id_column = key[0]
            sequence = conn.execute(
                "SELECT pg_get_serial_sequence(%s, %s)",
                (catalog.qualified(table.schema, table.table).as_string(conn), id_column),
            ).fetchone()[0]  # type: ignore[index]
            if sequence is None:  # a nextval default on a sequence not OWNED BY the column
                sequence = (default or "").split("'")[1]
    columns = tuple(
        ApiColumn(c.name, c.type, c.not_null, extra[c.name][0] or _identity(extra[c.name][1]))
        for c in catalog.columns(conn, oid)
        if c.name != id_column and c.name not in generated
    )
    uniques = conn.execute(
        "SELECT k.conname, array_agg(a.attname ORDER BY u.ord) FROM pg_constraint k"
        " JOIN LATERAL unnest(k.conkey) WITH ORDINALITY u(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum"
        " WHERE k.conrelid = %s AND k.contype IN ('p', 'u') GROUP BY k.oid, k.conname ORDER BY 1",
        (oid,),
    ).fetchall()
    return TableShape(
        config=table,
        columns=columns,
        id_column=id_column,
        sequence=sequence,
        key_column=key[0] if len(key) == 1 else None,
        foreign_keys=tuple(foreign_keys(conn, oid)),
        unique_keys=tuple(
            (name, tuple(cols)) for name, cols in uniques if id_column not in tuple(cols)
        ),
    )


def _identity(kind: str) -> str | None:
    return "identity" if kind else None


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold U+0000; a clear rejection beats a failed batch.
    if "\x00" in text:
        raise ValueError("text must not contain the NUL character (\\u0000)")
    return text


def _in_utc(value: dt.datetime) -> dt.datetime:
    # Offsets are converted here, not by PostgreSQL: it refuses offsets beyond +-15:59 that ISO
    # 8601 (and pydantic) accept; a year pushed out of 1..9999 by the offset is the sender's error.
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("date-time out of range once converted to UTC") from None


def _utc_naive(value: dt.datetime) -> dt.datetime:
    # `timestamp` columns hold UTC wall time: an offset given is converted, not dropped.
    if value.tzinfo is not None:
        return _in_utc(value).replace(tzinfo=None)
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    return _in_utc(value) if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def python_type(printed: str) -> Any:
    """The pydantic annotation of a PostgreSQL type (strict where JSON has the type itself)."""
    parsed = catalog.parsed_type(printed)
    if parsed.array_dims:
        return list[JsonValue]
    name, mods = parsed.name, parsed.modifiers
    if name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[name]
        return Annotated[StrictInt, Field(ge=low, le=high)]
    if name in ("varchar", "char", "text"):
        length = mods[0] if mods and name != "text" else None
        return Annotated[StrictStr, Field(max_length=length), AfterValidator(_no_nul)]
    if name == "numeric":
        if mods:
            scale = mods[1] if len(mods) > 1 else 0
            return Annotated[
                decimal.Decimal,
                Field(max_digits=mods[0], decimal_places=scale, allow_inf_nan=False),
            ]
        return Annotated[decimal.Decimal, Field(allow_inf_nan=False)]
    if name in ("real", "double precision"):
        return Annotated[float, Field(allow_inf_nan=False, strict=True)]
    if name == "boolean":
        return StrictBool
    if name == "date":
        return dt.date
    if name == "timestamp":
        return Annotated[dt.datetime, AfterValidator(_utc_naive)]
    if name == "timestamptz":
        return Annotated[dt.datetime, AfterValidator(_aware)]
    if name == "uuid":
        return uuid.UUID
    if name in ("json", "jsonb"):
        return JsonValue
    # Any other type: text that PostgreSQL parses (a bad value is rejected by the insert).
    return Annotated[StrictStr, AfterValidator(_no_nul)]


def request_model(shape: TableShape) -> Any:
    """One record of `shape` as a TypedDict (validated by pydantic: fields given stay, fields left
    out stay out, so the insert can tell "absent" (the column default) from null): required
    unless nullable or defaulted; unknown fields refused."""
    fields: dict[str, Any] = {}
    for column in shape.columns:
        annotation = python_type(column.type)
        description = f"{column.type}{' NOT NULL' if column.not_null else ''}"
        if column.default:
            description += f" DEFAULT {column.default}"
        if not column.not_null:
            annotation = annotation | None
        annotation = Annotated[annotation, Field(description=description)]
        required = column.not_null and not column.default
        fields[column.name] = Required[annotation] if required else NotRequired[annotation]
    model_name = "".join(p.capitalize() for p in shape.name.replace("-", "_").split("_"))
    record = TypedDict(f"{model_name}Record", fields)  # type: ignore[misc]
    record.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="forbid", title=f"{shape.config.label} record"
    )
    return record
