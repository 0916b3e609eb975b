"""The PostgreSQL side of a mirror: a table (or a slice of it) with a key, read in chunks and
turned into serialized protobuf rows.

``MirrorSource`` is everything the mirror needs to know: schema, table, the columns with their
BigQuery mapping, the key columns, and a filter (``_version = '2.0'``, ``_last_change_id > 41``).
Dump parent tables and CDC merged tables are both just sources.

Rows come through a server-side cursor (binary protocol) in chunks of ``chunk_rows``; the
SELECT already converts each value to what the Storage Write API takes (epoch microseconds,
days, numeric text), so Python only checks ranges and fills the message (``ProtoRowEncoder``) or
builds a column (``arrow_rows.ArrowBatchEncoder``). ``read_ahead`` fetches the next chunk in a
thread while the caller encodes the last one. Memory stays flat.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ingest_platform.bigquery.kinds import ValueRejected
from ingest_platform.bigquery.proto import message_class, row_descriptor
from ingest_platform.bigquery.types import MirrorColumn, bq_column_names, map_column
from ingest_platform.errors import IngestError, SchemaError
from ingest_platform.postgres import catalog

CHUNK_ROWS = 5000
# column op value; "not in" compares the column's text with a list of texts (CDC object ids).
# Values are literals, not parameters: psycopg reads "%" in a composed statement as a
# placeholder whenever parameters are passed, and an identifier may hold "%s" (a column "%s").
_FILTER_OPS = {
    "=": sql.SQL("{} = {}"),
    ">": sql.SQL("{} > {}"),
    ">=": sql.SQL("{} >= {}"),
    "not in": sql.SQL("NOT ({}::text = ANY({}::text[]))"),
}


class MirrorValueError(IngestError):
    """A value BigQuery cannot hold; names table, key and column. Nothing of the run commits."""

    def __init__(self, table: str, key: dict, column: str, problem: str):
        self.table, self.key, self.column, self.problem = table, key, column, problem
        super().__init__(
            f'{table}, key {_format_key(key)}, column "{column}": {problem}. Nothing of this run '
            "was committed to BigQuery; fix the value in PostgreSQL (or exclude the column) and "
            "run again."
        )


def _format_key(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items()) if key else "(no key)"


@dataclass(frozen=True)
class MirrorSource:
    schema: str
    table: str
    columns: tuple[MirrorColumn, ...]
    key: tuple[str, ...]  # PostgreSQL names; () = no key
    filters: tuple[tuple[str, str, object], ...] = ()  # (column, op of _FILTER_OPS, value)
    fill_nulls: bool = False

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def column(self, name: str) -> MirrorColumn:
        return next(c for c in self.columns if c.name == name)

    def where(self) -> sql.Composable:
        """The filters as a WHERE clause holding its values (run it without parameters)."""
        if not self.filters:
            return sql.SQL("")
        parts = [
            _FILTER_OPS[op].format(sql.Identifier(c), sql.Literal(v)) for c, op, v in self.filters
        ]
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)

    def with_filters(self, *filters: tuple[str, str, object]) -> MirrorSource:
        return MirrorSource(
            self.schema, self.table, self.columns, self.key, tuple(filters), self.fill_nulls
        )


# ----------------------------------------------------------------------------- catalog


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
    oid = catalog.relation_oid(conn, schema, table)
    if oid is None:
        raise SchemaError(f'Table "{schema}"."{table}" does not exist in PostgreSQL.')
    found = [c for c in catalog.columns(conn, oid) if c.name not in set(exclude)]
    names = bq_column_names([c.name for c in found])
    columns = tuple(
        map_column(f"{schema}.{table}", c.name, c.type, bq, bignumeric=bignumeric)
        for c, bq in zip(found, names, strict=True)
    )
    key = tuple(key) if key is not None else catalog.primary_key(conn, oid)
    missing = [k for k in key if k not in {c.name for c in columns}]
    if missing:
        raise SchemaError(f"{schema}.{table}: key column(s) {', '.join(missing)} not found.")
    return MirrorSource(schema, table, columns, key, fill_nulls=fill_nulls)


# ----------------------------------------------------------------------------- reading


def _select_expression(column: MirrorColumn, ref: sql.Composable, arrow: bool) -> sql.Composable:
    """One value as the Storage Write API takes it (as a protobuf field, or for an Arrow column)."""
    spec = column.spec
    return sql.SQL((arrow and spec.arrow_read) or spec.pg_read).format(v=ref)


def select_statement(source: MirrorSource, *, arrow: bool = False) -> sql.Composed:
    exprs: list[sql.Composable] = []
    for column in source.columns:
        ref = sql.Identifier(column.name)
        if column.repeated:
            element = _select_expression(column, sql.SQL("_e"), arrow)
            exprs.append(
                sql.SQL(
                    "CASE WHEN {0} IS NULL THEN NULL ELSE ARRAY(SELECT {1} FROM unnest({0})"
                    " WITH ORDINALITY AS _u(_e, _o) ORDER BY _o) END"
                ).format(ref, element)
            )
        else:
            exprs.append(_select_expression(column, ref, arrow))
    return sql.SQL("SELECT {} FROM {}{}").format(
        sql.SQL(", ").join(exprs), catalog.qualified(source.schema, source.table), source.where()
    )


def read_rows(
    conn: psycopg.Connection,
    source: MirrorSource,
    chunk_rows: int = CHUNK_ROWS,
    *,
    arrow: bool = False,
) -> Iterator[list[tuple]]:
    """Chunks of converted rows through a server-side cursor (one statement: one snapshot);
    `arrow`: values as the Arrow columns take them (``Kind.arrow_read``)."""
    statement = select_statement(source, arrow=arrow)
    with conn.transaction():
        with conn.cursor(name=f"ingest_mirror_{secrets.token_hex(4)}", binary=True) as cursor:
            cursor.itersize = chunk_rows
            cursor.execute(statement)
            while rows := cursor.fetchmany(chunk_rows):
                yield rows


_END = object()


def read_ahead(chunks: Iterator[list[tuple]], depth: int = 2) -> Generator[list[tuple], None, None]:
    """`chunks`, fetched by a thread up to `depth` chunks ahead: PostgreSQL computes and sends the
    next chunk while the caller encodes this one. The thread owns the iterator (and so the
    cursor and its transaction) and closes it, also when the caller stops early."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def fetch() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    break
            put(_END)
        except BaseException as error:  # handed to the caller, raised there
            put(error)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    thread = threading.Thread(target=fetch, name="ingest-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------- encoding


class ProtoRowEncoder:
    """Converted rows -> serialized protobuf rows, with BigQuery's limits checked per value."""

    def __init__(self, source: MirrorSource, *, cdc_pseudo_columns: bool = False):
        self.source = source
        self.descriptor = row_descriptor(
            source.table, source.columns, cdc_pseudo_columns=cdc_pseudo_columns
        )
        self.message = message_class(self.descriptor)
        self._fields = [(c.bq_name, _converter(c, source.fill_nulls), c) for c in source.columns]

    @property
    def writer_schema(self):
        """What the writer sends as the rows' schema: the protobuf descriptor."""
        return self.descriptor

    def key_of(self, row: tuple) -> dict:
        return key_of(self.source, row)

    def encode(self, row: tuple, extra: dict | None = None) -> bytes:
        values = {}
        for (name, convert, column), value in zip(self._fields, row, strict=True):
            try:
                value = convert(value)
            except ValueRejected as reject:
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
            field = _find_bad_field(self.message, values) or "?"
            problem = "text is not valid UTF-8" if "utf-8" in str(error).lower() else str(error)
            raise MirrorValueError(
                self.source.label, self.key_of(row), _pg_name(self.source, field), problem
            ) from None


def key_of(source: MirrorSource, row: tuple) -> dict:
    """The key columns of a row as read, for error messages."""
    columns = source.columns
    return {c.name: value for c, value in zip(columns, row, strict=True) if c.name in source.key}


def _pg_name(source: MirrorSource, bq_name: str) -> str:
    return next((c.name for c in source.columns if c.bq_name == bq_name), bq_name)


def _find_bad_field(message, values: dict) -> str | None:
    for name, value in values.items():
        try:
            message(**{name: value})
        except (ValueError, TypeError):
            return name
    return None


def _converter(column: MirrorColumn, fill_nulls: bool) -> Callable[[Any], Any]:
    scalar = column.spec.check
    default = column.spec.null_default if fill_nulls else None
    if column.repeated:

        def convert_array(values):
            if values is None:
                return None
            if any(v is None for v in values):
                raise ValueRejected(
                    "the array holds NULL elements, which BigQuery arrays cannot hold"
                )
            return [scalar(v) for v in values] if scalar else list(values)

        return convert_array
    if scalar is None:
        return (lambda v: default if v is None else v) if fill_nulls else (lambda v: v)

    def convert(value):
        return default if value is None else scalar(value)

    return convert
