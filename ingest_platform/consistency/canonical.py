"""Canonical text of a row, computed identically by PostgreSQL and BigQuery SQL.

A row's canonical form is its mirrored columns in order, separated by ``|``, each either ``N``
(NULL) or ``<length>:<text>`` (length in characters, so no value can imitate a separator). The
per-kind text (``kind`` as in ``ingest_platform.bigquery.types``):

==========  =================================  ===========================================
kind        PostgreSQL                         BigQuery
==========  =================================  ===========================================
int         ``x::text``                        ``CAST(x AS STRING)``
numeric     ``trim_scale(x::numeric)::text``   ``CAST(x AS STRING)`` without trailing zeros
float       shortest round-trip text; NaN,     ``CAST(x AS STRING)``, trailing ``.0`` removed;
            inf, -inf, 0 spelled alike         NaN, inf, -inf, 0 spelled alike
bool        ``t`` / ``f``                      ``t`` / ``f``
string      ``x::text``                        ``x``
bytes       ``encode(x, 'hex')``               ``TO_HEX(x)``
date        days since 1970-01-01              ``UNIX_DATE(x)``
timestamp   microseconds since the epoch        ``UNIX_MICROS(x)``
datetime    microseconds since 1970-01-01       ``UNIX_MICROS(TIMESTAMP(x))`` (UTC)
time        microseconds since midnight         ``TIME_DIFF(x, TIME '00:00:00', MICROSECOND)``
json        ``J`` (presence only: the two      ``J``
            systems print JSON differently)
array       elements in order, ``,``-joined;   the same; BigQuery has no NULL arrays, so
            NULL array = empty array            NULL = empty on both sides
==========  =================================  ===========================================

The row hash is ``md5(canonical)`` in PostgreSQL and ``TO_HEX(MD5(canonical))`` in BigQuery: the
same 32 lowercase hex digits for the same row. The key's canonical form is built the same way
from the key columns; its md5 decides the row's bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from ingest_platform.bigquery.types import MirrorColumn, quote_bq_column

NULL_MARK = "N"
FIELD_SEPARATOR = "|"


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_text(kind: str, ref: sql.Composable, money: bool = False) -> sql.Composable:
    if kind == "int" or kind == "string":
        return sql.SQL("({})::text").format(ref)
    if kind == "numeric":
        return sql.SQL("trim_scale(({})::numeric)::text").format(ref)
    if kind == "float":
        return sql.SQL(
            "(CASE WHEN {0} = 'NaN' THEN 'NaN' WHEN {0} = 'Infinity' THEN 'inf'"
            " WHEN {0} = '-Infinity' THEN '-inf' WHEN {0} = 0 THEN '0' ELSE ({0})::float8::text END)"
        ).format(ref)
    if kind == "bool":
        return sql.SQL("(CASE WHEN {0} THEN 't' WHEN NOT {0} THEN 'f' END)").format(ref)
    if kind == "bytes":
        return sql.SQL("encode({}, 'hex')").format(ref)
    if kind == "date":
        return sql.SQL("(({}) - DATE '1970-01-01')::text").format(ref)
    if kind in ("timestamp", "datetime", "time"):
        return sql.SQL("trunc(extract(epoch FROM {}) * 1000000)::int8::text").format(ref)
    if kind == "json":
        return sql.SQL("(CASE WHEN {} IS NOT NULL THEN 'J' END)").format(ref)
    raise ValueError(kind)


def _pg_wrap(text: sql.Composable) -> sql.Composable:
    return sql.SQL("coalesce(length({0})::text || ':' || {0}, {1})").format(
        text, sql.Literal(NULL_MARK)
    )


def pg_text(column: MirrorColumn) -> sql.Composable:
    """The column's field text before wrapping (an array: its wrapped elements, joined)."""
    ref = sql.Identifier(column.name)
    if column.repeated:
        element = _pg_wrap(_pg_text(column.kind, sql.SQL("_e")))
        return sql.SQL(
            "coalesce((SELECT string_agg({}, ',' ORDER BY _o) FROM unnest({}) WITH ORDINALITY AS _u(_e, _o)), '')"
        ).format(element, ref)
    return _pg_text(column.kind, ref)


def pg_field(column: MirrorColumn) -> sql.Composable:
    return _pg_wrap(pg_text(column))


def pg_canonical_of(texts: Sequence[sql.Composable]) -> sql.Composable:
    """The canonical form of already computed field texts (column references of a subquery that
    computes each text once: wrapping uses its text twice)."""
    if not texts:
        return sql.SQL("''")
    return sql.SQL(" || '|' || ").join(_pg_wrap(t) for t in texts)


def pg_canonical(columns: Sequence[MirrorColumn]) -> sql.Composable:
    return pg_canonical_of([pg_text(c) for c in columns])


# ----------------------------------------------------------------------------- BigQuery


def _bq_text(kind: str, ref: str) -> str:
    if kind == "int":
        return f"CAST({ref} AS STRING)"
    if kind == "string":
        return f"CAST({ref} AS STRING)"
    if kind == "numeric":
        s = f"CAST({ref} AS STRING)"
        return f"IF(STRPOS({s}, '.') > 0, RTRIM(RTRIM({s}, '0'), '.'), {s})"
    if kind == "float":
        return (
            f"(CASE WHEN IS_NAN({ref}) THEN 'NaN' WHEN IS_INF({ref}) AND {ref} > 0 THEN 'inf'"
            f" WHEN IS_INF({ref}) THEN '-inf' WHEN {ref} = 0 THEN '0'"
            f" ELSE REGEXP_REPLACE(CAST({ref} AS STRING), r'\\.0$', '') END)"
        )
    if kind == "bool":
        return f"(CASE WHEN {ref} THEN 't' WHEN NOT {ref} THEN 'f' END)"
    if kind == "bytes":
        return f"TO_HEX({ref})"
    if kind == "date":
        return f"CAST(UNIX_DATE({ref}) AS STRING)"
    if kind == "timestamp":
        return f"CAST(UNIX_MICROS({ref}) AS STRING)"
    if kind == "datetime":
        return f"CAST(UNIX_MICROS(TIMESTAMP({ref})) AS STRING)"
    if kind == "time":
        return f"CAST(TIME_DIFF({ref}, TIME '00:00:00', MICROSECOND) AS STRING)"
    if kind == "json":
        return f"IF({ref} IS NOT NULL, 'J', NULL)"
    raise ValueError(kind)


def _bq_wrap(text: str) -> str:
    # CHAR_LENGTH, not LENGTH: the emulator expands LENGTH (STRING or BYTES) into a CASE that
    # evaluates its argument three times.
    return f"COALESCE(CAST(CHAR_LENGTH({text}) AS STRING) || ':' || {text}, '{NULL_MARK}')"


def bq_text(column: MirrorColumn, alias: str = "") -> str:
    """The column's field text before wrapping (an array: its wrapped elements, joined)."""
    ref = (alias + "." if alias else "") + quote_bq_column(column.bq_name)
    # BIGNUMERIC kept as STRING (emulator) is still numeric text: normalize it like a number.
    kind = column.kind
    if column.repeated:
        element = _bq_wrap(_bq_text(kind, "_e"))
        return f"ARRAY_TO_STRING(ARRAY(SELECT {element} FROM UNNEST({ref}) AS _e WITH OFFSET AS _o ORDER BY _o), ',')"
    return _bq_text(kind, ref)


def bq_field(column: MirrorColumn, alias: str = "") -> str:
    return _bq_wrap(bq_text(column, alias))


def bq_canonical_of(texts: Sequence[str]) -> str:
    """The canonical form of already computed field texts (see pg_canonical_of)."""
    if not texts:
        return "''"
    return " || '|' || ".join(_bq_wrap(t) for t in texts)


def bq_canonical(columns: Sequence[MirrorColumn], alias: str = "") -> str:
    return bq_canonical_of([bq_text(c, alias) for c in columns])


# ----------------------------------------------------------------------------- keys back to values


def parse_canonical(text: str) -> list[str | None]:
    """The field texts of a canonical form (None for NULL): the inverse of the wrapping."""
    fields: list[str | None] = []
    i = 0
    while i < len(text):
        if text[i] == NULL_MARK:
            fields.append(None)
            i += 1
        else:
            colon = text.index(":", i)
            length = int(text[i:colon])
            fields.append(text[colon + 1 : colon + 1 + length])
            i = colon + 1 + length
        if i < len(text):
            if text[i] != FIELD_SEPARATOR:
                raise ValueError(f"not a canonical form: {text!r}")
            i += 1
    return fields
