"""Column kinds: the one table that says how the mirror and the consistency checks treat a column.

Every mirrored column has a kind (``types.map_column`` picks it from the PostgreSQL type). A kind
gives, in one row of ``KINDS``: the BigQuery type, the protobuf field type of the Storage Write
API row, the PostgreSQL expression that reads a value already in the form that field takes, the
canonical text of a value in PostgreSQL and in BigQuery SQL (equal for equal values: the row
hashes of ``consistency`` are built from it), the value ``fill_nulls`` puts in place of NULL, the
per-value check of what BigQuery cannot hold, and the Arrow type of the column when rows go as
Arrow record batches (``arrow_rows``; pyarrow's spelling of the type, read with ``arrow_read``
where that differs from ``pg_read``). The Arrow types are those of Google's Arrow sample for the
Storage Write API (TIMESTAMP as timestamp[us] without a zone, its values UTC microseconds, like
DATETIME: the column's type tells them apart). The README's type table is tested against it.

Expressions are templates with ``{v}`` for the value. Canonical texts: integers and strings as
text, numbers without trailing zeros, floats as shortest text (NaN, inf, -inf and 0 spelled
alike), bool ``t``/``f``, bytes as hex, dates in days since 1970-01-01, timestamps, datetimes and
times in microseconds, JSON by presence only (the two systems print JSON differently).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2

NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE = 29, 9
BIGNUMERIC_MAX_INTEGER_DIGITS, BIGNUMERIC_MAX_SCALE = 38, 38

# BigQuery's ranges (inclusive), in the units the Storage Write API takes.
TIMESTAMP_MIN_MICROS = -62135596800_000000  # 0001-01-01 00:00:00 UTC
TIMESTAMP_MAX_MICROS = 253402300799_999999  # 9999-12-31 23:59:59.999999 UTC
DATE_MIN_DAYS, DATE_MAX_DAYS = -719162, 2932896  # 0001-01-01, 9999-12-31
# What the read expression gives for an infinite date or timestamp (outside every range above).
INFINITY_SENTINEL = 9223372036854775807

_F = descriptor_pb2.FieldDescriptorProto


class ValueRejected(Exception):
    """A value BigQuery cannot hold; the message says why (the caller adds table, key, column)."""


@dataclass(frozen=True)
class Kind:
    name: str
    pg_types: tuple[str, ...]  # PgType names of this kind (numeric: chosen by its modifiers)
    bq_type: str
    proto_type: int  # FieldDescriptorProto.TYPE_*
    pg_read: str  # PostgreSQL: the value as the protobuf field takes it
    pg_text: str  # PostgreSQL: canonical text
    bq_text: str  # BigQuery: the same canonical text
    null_default: Any  # what NULL becomes with fill_nulls
    arrow_type: str  # the Arrow type BigQuery receives (str() of the pyarrow type)
    check: Callable[[Any], Any] | None = None  # read value -> value to send, or ValueRejected
    arrow_read: str | None = None  # PostgreSQL: the value for Arrow, when not pg_read


def proto_type_name(proto_type: int) -> str:
    """``int64`` for TYPE_INT64: the name a ``.proto`` file uses."""
    return _F.Type.Name(proto_type).removeprefix("TYPE_").lower()


def _outside(what: str, value: int, sentinel_name: str) -> ValueRejected:
    return ValueRejected(
        sentinel_name
        if value == INFINITY_SENTINEL
        else f"{what} is outside BigQuery's range 0001-01-01 .. 9999-12-31"
    )


def _check_timestamp(micros: int) -> int:
    if not TIMESTAMP_MIN_MICROS <= micros <= TIMESTAMP_MAX_MICROS:
        raise _outside(
            f"timestamp {micros} microseconds since 1970-01-01", micros, "infinite timestamp"
        )
    return micros


_EPOCH = dt.datetime(1970, 1, 1)


def _datetime_text(micros: int) -> str:
    _check_timestamp(micros)
    return (_EPOCH + dt.timedelta(microseconds=micros)).isoformat(timespec="microseconds")


def _check_date(days: int) -> int:
    if not DATE_MIN_DAYS <= days <= DATE_MAX_DAYS:
        raise _outside(f"date {days} days from 1970-01-01", days, "infinite date")
    return days


def _check_time(text: str) -> str:
    if text.startswith("24:"):
        raise ValueRejected(f"time {text} is outside BigQuery's range 00:00:00 .. 23:59:59.999999")
    return text


def _check_numeric(text: str, bq_type: str = "NUMERIC") -> str:
    if text in ("NaN", "Infinity", "-Infinity"):
        raise ValueRejected(f"{text} cannot be stored in a BigQuery {bq_type}")
    return text


def _check_bignumeric(text: str) -> str:
    _check_numeric(text, "BIGNUMERIC")
    integer, _, fraction = text.lstrip("-").partition(".")
    if (
        len(integer.lstrip("0")) > BIGNUMERIC_MAX_INTEGER_DIGITS
        or len(fraction.rstrip("0")) > BIGNUMERIC_MAX_SCALE
    ):
        raise ValueRejected(
            f"{text} is beyond BIGNUMERIC precision ({BIGNUMERIC_MAX_INTEGER_DIGITS} integer and "
            f"{BIGNUMERIC_MAX_SCALE} fractional digits)"
        )
    return text


_AS_TEXT = "({v})::text"
_BQ_AS_TEXT = "CAST({v} AS STRING)"
_NUMBER_TEXT = "trim_scale(({v})::numeric)::text"
_BQ_NUMBER_TEXT = (
    "IF(STRPOS(CAST({v} AS STRING), '.') > 0,"
    " RTRIM(RTRIM(CAST({v} AS STRING), '0'), '.'), CAST({v} AS STRING))"
)
_MICROS = (
    "CASE WHEN {v} IS NULL THEN NULL WHEN isfinite({v})"
    " THEN trunc(extract(epoch FROM {v}) * 1000000)::int8 ELSE " + str(INFINITY_SENTINEL) + " END"
)
_MICROS_TEXT = "trunc(extract(epoch FROM {v}) * 1000000)::int8::text"
# Arrow has no text-to-time cast: a time goes as microseconds since midnight (24:00:00 included,
# so the range check can name it).
_TIME_MICROS = "(extract(epoch FROM {v}) * 1000000)::int8"

# fmt: off
_ALL = [
    Kind("int", ("smallint", "integer", "bigint"), "INT64", _F.TYPE_INT64,
         "{v}", _AS_TEXT, _BQ_AS_TEXT, 0, "int64"),
    Kind("numeric", ("numeric",), "NUMERIC", _F.TYPE_STRING,
         _AS_TEXT, _NUMBER_TEXT, _BQ_NUMBER_TEXT, "0", "decimal128(38, 9)", _check_numeric),
    Kind("bignumeric", ("numeric",), "BIGNUMERIC", _F.TYPE_STRING,
         _AS_TEXT, _NUMBER_TEXT, _BQ_NUMBER_TEXT, "0", "decimal256(76, 38)", _check_bignumeric),
    Kind("money", ("money",), "NUMERIC", _F.TYPE_STRING,
         "(({v})::numeric)::text", _NUMBER_TEXT, _BQ_NUMBER_TEXT, "0", "decimal128(38, 9)"),
    Kind("float", ("real", "double precision"), "FLOAT64", _F.TYPE_DOUBLE,
         "({v})::float8",
         "(CASE WHEN {v} = 'NaN' THEN 'NaN' WHEN {v} = 'Infinity' THEN 'inf'"
         " WHEN {v} = '-Infinity' THEN '-inf' WHEN {v} = 0 THEN '0' ELSE ({v})::float8::text END)",
         "(CASE WHEN IS_NAN({v}) THEN 'NaN' WHEN IS_INF({v}) AND {v} > 0 THEN 'inf'"
         " WHEN IS_INF({v}) THEN '-inf' WHEN {v} = 0 THEN '0'"
         " ELSE REGEXP_REPLACE(CAST({v} AS STRING), r'\\.0$', '') END)",
         0.0, "double"),
    Kind("bool", ("boolean",), "BOOL", _F.TYPE_BOOL,
         "{v}", "(CASE WHEN {v} THEN 't' WHEN NOT {v} THEN 'f' END)",
         "(CASE WHEN {v} THEN 't' WHEN NOT {v} THEN 'f' END)", False, "bool"),
    # Text types, uuid, inet, interval, timetz, enums, domains, "char": anything not listed.
    Kind("string", ("text", "varchar", "char"), "STRING", _F.TYPE_STRING,
         _AS_TEXT, _AS_TEXT, _BQ_AS_TEXT, "", "string"),
    Kind("bytes", ("bytea",), "BYTES", _F.TYPE_BYTES,
         "{v}", "encode({v}, 'hex')", "TO_HEX({v})", b"", "binary"),
    Kind("date", ("date",), "DATE", _F.TYPE_INT32,
         "CASE WHEN {v} IS NULL THEN NULL WHEN isfinite({v}) THEN ({v} - DATE '1970-01-01') ELSE "
         + str(INFINITY_SENTINEL) + " END",
         "(({v}) - DATE '1970-01-01')::text", "CAST(UNIX_DATE({v}) AS STRING)", 0, "date32[day]",
         _check_date),
    Kind("timestamp", ("timestamptz",), "TIMESTAMP", _F.TYPE_INT64,
         _MICROS, _MICROS_TEXT, "CAST(UNIX_MICROS({v}) AS STRING)", 0, "timestamp[us]",
         _check_timestamp),
    Kind("datetime", ("timestamp",), "DATETIME", _F.TYPE_STRING,
         _MICROS, _MICROS_TEXT, "CAST(UNIX_MICROS(TIMESTAMP({v})) AS STRING)",
         "1970-01-01T00:00:00", "timestamp[us]", _datetime_text),
    Kind("time", ("time",), "TIME", _F.TYPE_STRING,
         _AS_TEXT, _MICROS_TEXT, "CAST(TIME_DIFF({v}, TIME '00:00:00', MICROSECOND) AS STRING)",
         "00:00:00", "time64[us]", _check_time, arrow_read=_TIME_MICROS),
    Kind("json", ("json", "jsonb"), "JSON", _F.TYPE_STRING,
         _AS_TEXT, "(CASE WHEN {v} IS NOT NULL THEN 'J' END)", "IF({v} IS NOT NULL, 'J', NULL)",
         "null", "string"),
]
# fmt: on

KINDS: dict[str, Kind] = {kind.name: kind for kind in _ALL}
STRING = KINDS["string"]
# PgType name -> kind, for every type but numeric (its modifiers decide) and the STRING default.
KIND_OF_PG_TYPE: dict[str, Kind] = {
    name: kind for kind in _ALL if "numeric" not in kind.pg_types for name in kind.pg_types
}
