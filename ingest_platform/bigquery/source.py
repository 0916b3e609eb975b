"""The PostgreSQL side of a mirror: a table (or a slice of it) with a key, read in chunks and
turned into serialized protobuf rows.

``MirrorSource`` is everything the mirror needs to know: schema, table, the columns with their
BigQuery mapping, the key columns, and a filter (``_version = '2.0'``, ``_last_change_id > 41``).
Dump parent tables and CDC merged tables are both just sources.

Rows come through a server-side cursor (binary protocol) in chunks of ``chunk_rows``; the
SELECT already converts each value to what the Storage Write API takes (epoch microseconds,
days, numeric text), so Python only checks ranges and fills the message. Memory stays flat.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest_platform.bigquery.proto import message_class, row_descriptor
from ingest_platform.bigquery.types import (
    BIGNUMERIC_MAX_INTEGER_DIGITS,
    BIGNUMERIC_MAX_SCALE,
    DATE_MAX_DAYS,
    DATE_MIN_DAYS,
    INFINITY_SENTINEL,
    NUMERIC_MAX_INTEGER_DIGITS,
    NUMERIC_MAX_SCALE,
    TIMESTAMP_MAX_MICROS,
    TIMESTAMP_MIN_MICROS,
    MirrorColumn,
    bq_column_names,
    map_column,
)
from ingest_platform.errors import IngestError, SchemaError

CHUNK_ROWS = 5000
_EPOCH = dt.datetime(1970, 1, 1)
_FILTER_OPS = {"=": sql.SQL("="), ">": sql.SQL(">"), ">=": sql.SQL(">=")}


class MirrorValueError(IngestError):
    """A value BigQuery cannot hold; names table, key and column. Nothing of the run is committed."""

    def __init__(self, table: str, key: dict, column: str, problem: str):
        self.table, self.key, self.column, self.problem = table, key, column, problem
        super().__init__(
            f'{table}, key {_format_key(key)}, column "{column}": {problem}. Nothing of this run '
            "was committed to BigQuery; fix the value in PostgreSQL (or exclude the column) and run again."
        )


def _format_key(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items()) if key else "(no key)"


@dataclass(frozen=True)
class MirrorSource:
    schema: str
    table: str
    columns: tuple[MirrorColumn, ...]
    key: tuple[str, ...]  # PostgreSQL names; () = no key
    filters: tuple[tuple[str, str, object], ...] = ()  # (column, "=" | ">" | ">=", value)
    fill_nulls: bool = False

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def column(self, name: str) -> MirrorColumn:
        return next(c for c in self.columns if c.name == name)

    def where(self) -> tuple[sql.Composable, list]:
        if not self.filters:
            return sql.SQL(""), []
        parts = [
            sql.SQL("{} {} %s").format(sql.Identifier(c), _FILTER_OPS[op])
            for c, op, _ in self.filters
        ]
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), [v for _, _, v in self.filters]

    def with_filters(self, *filters: tuple[str, str, object]) -> MirrorSource:
        return MirrorSource(
            self.schema, self.table, self.columns, self.key, tuple(filters), self.fill_nulls
        )


# ----------------------------------------------------------------------------- catalog


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    if not rows:
        raise SchemaError(
            f'Table "{schema}"."{table}" does not exist in PostgreSQL (or has no columns).'
        )
    return [(_text(n), _text(t)) for n, t in rows]


def _text(value) -> str:
    """Catalog names arrive as bytes from a SQL_ASCII database."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def primary_key(conn: psycopg.Connection, schema: str, table: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
        " WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary ORDER BY k.ord",
        (schema, table),
    ).fetchall()
    return tuple(_text(r[0]) for r in rows)


def source_for_table(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    key: Sequence[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    fill_nulls: bool = False,
    bignumeric: bool = True,
) -> MirrorSource:
    """A source for a whole table; the key defaults to its primary key."""
    found = [(n, t) for n, t in table_columns(conn, schema, table) if n not in set(exclude)]
    names = bq_column_names([n for n, _ in found])
    columns = tuple(
        map_column(f"{schema}.{table}", n, t, bq, bignumeric=bignumeric)
        for (n, t), bq in zip(found, names)
    )
    key = tuple(key) if key is not None else primary_key(conn, schema, table)
    missing = [k for k in key if k not in {c.name for c in columns}]
    if missing:
        raise SchemaError(f"{schema}.{table}: key column(s) {', '.join(missing)} not found.")
    return MirrorSource(schema, table, columns, key, fill_nulls=fill_nulls)


# ----------------------------------------------------------------------------- reading


def _select_expression(column: MirrorColumn, ref: sql.Composable) -> sql.Composable:
    """One value as the Storage Write API takes it."""
    kind = column.kind
    if kind == "numeric":
        return (
            sql.SQL("({}::numeric)::text").format(ref)
            if column.money
            else sql.SQL("({})::text").format(ref)
        )
    if kind == "float":
        return sql.SQL("({})::float8").format(ref)
    if kind in ("string", "json", "time"):
        return sql.SQL("({})::text").format(ref)
    if kind == "date":
        return sql.SQL(
            "CASE WHEN {0} IS NULL THEN NULL WHEN isfinite({0}) THEN ({0} - DATE '1970-01-01') ELSE {1} END"
        ).format(ref, sql.Literal(INFINITY_SENTINEL))
    if kind in ("timestamp", "datetime"):
        return sql.SQL(
            "CASE WHEN {0} IS NULL THEN NULL WHEN isfinite({0}) THEN trunc(extract(epoch FROM {0}) * 1000000)::int8 ELSE {1} END"
        ).format(ref, sql.Literal(INFINITY_SENTINEL))
    return ref  # int, bool, bytes


def select_statement(source: MirrorSource) -> tuple[sql.Composable, list]:
    exprs = []
    for column in source.columns:
        ref = sql.Identifier(column.name)
        if column.repeated:
            element = _select_expression(column, sql.SQL("_e"))
            exprs.append(
                sql.SQL(
                    "CASE WHEN {0} IS NULL THEN NULL ELSE ARRAY(SELECT {1} FROM unnest({0})"
                    " WITH ORDINALITY AS _u(_e, _o) ORDER BY _o) END"
                ).format(ref, element)
            )
        else:
            exprs.append(_select_expression(column, ref))
    where, params = source.where()
    statement = sql.SQL("SELECT {} FROM {}.{}{}").format(
        sql.SQL(", ").join(exprs),
        sql.Identifier(source.schema),
        sql.Identifier(source.table),
        where,
    )
    return statement, params


def read_rows(
    conn: psycopg.Connection, source: MirrorSource, chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[tuple]]:
    """Chunks of converted rows through a server-side cursor (one statement: one snapshot)."""
    statement, params = select_statement(source)
    with conn.transaction():
        with conn.cursor(name=f"ingest_mirror_{secrets.token_hex(4)}", binary=True) as cursor:
            cursor.itersize = chunk_rows
            cursor.execute(statement, params)
            while rows := cursor.fetchmany(chunk_rows):
                yield rows


# ----------------------------------------------------------------------------- encoding


class RowEncoder:
    """Converted rows -> serialized protobuf rows, with BigQuery's limits checked per value."""

    def __init__(
        self,
        source: MirrorSource,
        *,
        extra_fields: Sequence[str] = (),
        cdc_pseudo_columns: bool = False,
    ):
        self.source = source
        self.descriptor = row_descriptor(
            source.table, source.columns, cdc_pseudo_columns=cdc_pseudo_columns
        )
        self.message = message_class(self.descriptor)
        self._fields = [(c.bq_name, _converter(c, source.fill_nulls), c) for c in source.columns]
        self._key_positions = [i for i, c in enumerate(source.columns) if c.name in source.key]

    def key_of(self, row: tuple) -> dict:
        return {self.source.columns[i].name: row[i] for i in self._key_positions}

    def encode(self, row: tuple, extra: dict | None = None) -> bytes:
        values = {}
        for (name, convert, column), value in zip(self._fields, row):
            try:
                value = convert(value)
            except _Reject as reject:
                raise MirrorValueError(
                    self.source.label, self.key_of(row), column.name, str(reject)
                ) from None
            if value is not None:
                values[name] = value
        if extra:
            values.update(extra)
        try:
            return self.message(**values).SerializeToString()
        except (ValueError, TypeError) as error:
            column = _find_bad_field(self.message, values) or "?"
            problem = "text is not valid UTF-8" if "utf-8" in str(error).lower() else str(error)
            raise MirrorValueError(
                self.source.label, self.key_of(row), _pg_name(self.source, column), problem
            ) from None


def _pg_name(source: MirrorSource, bq_name: str) -> str:
    return next((c.name for c in source.columns if c.bq_name == bq_name), bq_name)


def _find_bad_field(message, values: dict) -> str | None:
    for name, value in values.items():
        try:
            message(**{name: value})
        except (ValueError, TypeError):
            return name
    return None


class _Reject(Exception):
    pass


_DEFAULTS = {
    "int": 0,
    "numeric": "0",
    "float": 0.0,
    "bool": False,
    "string": "",
    "bytes": b"",
    "date": 0,
    "timestamp": 0,
    "datetime": "1970-01-01T00:00:00",
    "time": "00:00:00",
    "json": "null",
}


def _converter(column: MirrorColumn, fill_nulls: bool):
    scalar = _scalar_converter(column)
    default = _DEFAULTS[column.kind] if fill_nulls else None
    if column.repeated:

        def convert_array(values):
            if values is None:
                return None
            if any(v is None for v in values):
                raise _Reject("the array holds NULL elements, which BigQuery arrays cannot hold")
            return [scalar(v) for v in values] if scalar else list(values)

        return convert_array
    if scalar is None:
        return (lambda v: default if v is None else v) if fill_nulls else (lambda v: v)

    def convert(value):
        return default if value is None else scalar(value)

    return convert


def _scalar_converter(column: MirrorColumn):
    kind = column.kind
    if kind == "timestamp":
        return _check_timestamp
    if kind == "datetime":
        return _datetime_text
    if kind == "date":
        return _check_date
    if kind == "numeric" and (column.check_numeric or column.bq_type == "BIGNUMERIC"):
        limits = (
            (NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE)
            if column.bq_type == "NUMERIC"
            else (BIGNUMERIC_MAX_INTEGER_DIGITS, BIGNUMERIC_MAX_SCALE)
        )
        name = "NUMERIC" if column.bq_type == "NUMERIC" else "BIGNUMERIC"
        return lambda value: _check_numeric(value, *limits, name)
    if kind == "time":
        return _check_time
    return None


def _check_timestamp(micros: int) -> int:
    if not TIMESTAMP_MIN_MICROS <= micros <= TIMESTAMP_MAX_MICROS:
        raise _Reject(
            "infinite timestamp"
            if micros == INFINITY_SENTINEL
            else f"timestamp {_EPOCH_TEXT(micros)} is outside BigQuery's range 0001-01-01 .. 9999-12-31"
        )
    return micros


def _EPOCH_TEXT(micros: int) -> str:
    return f"{micros} microseconds since 1970-01-01"


def _datetime_text(micros: int) -> str:
    if not TIMESTAMP_MIN_MICROS <= micros <= TIMESTAMP_MAX_MICROS:
        raise _Reject(
            "infinite timestamp"
            if micros == INFINITY_SENTINEL
            else f"timestamp {_EPOCH_TEXT(micros)} is outside BigQuery's range 0001-01-01 .. 9999-12-31"
        )
    return (_EPOCH + dt.timedelta(microseconds=micros)).isoformat(timespec="microseconds")


def _check_date(days: int) -> int:
    if not DATE_MIN_DAYS <= days <= DATE_MAX_DAYS:
        raise _Reject(
            "infinite date"
            if days == INFINITY_SENTINEL
            else f"date {days} days from 1970-01-01 is outside BigQuery's range 0001-01-01 .. 9999-12-31"
        )
    return days


def _check_time(text: str) -> str:
    if text.startswith("24:"):
        raise _Reject(f"time {text} is outside BigQuery's range 00:00:00 .. 23:59:59.999999")
    return text


def _check_numeric(text: str, max_integer_digits: int, max_scale: int, bq_type: str) -> str:
    if text in ("NaN", "Infinity", "-Infinity"):
        raise _Reject(f"{text} cannot be stored in a BigQuery {bq_type}")
    integer, _, fraction = text.lstrip("-").partition(".")
    fraction = fraction.rstrip("0")
    if len(integer.lstrip("0")) > max_integer_digits or len(fraction) > max_scale:
        raise _Reject(
            f"{text} is beyond {bq_type} precision ({max_integer_digits} integer and "
            f"{max_scale} fractional digits)"
        )
    return text
