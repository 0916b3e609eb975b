"""Rows as Apache Arrow record batches: one batch per chunk read, built column by column.

The Storage Write API takes Arrow rows (``AppendRowsRequest.arrow_rows``: the schema once per
connection, then one IPC record batch per request); so does the local emulator, which decodes
them in Arrow's C++ code instead of one protobuf row at a time in Python. Here too no Python
runs per value: psycopg's rows become one Arrow struct array (the types the SELECT yields: int64,
double, bool, text, bytes), and each column is then checked against BigQuery's limits and cast
to the type BigQuery takes (``Kind.arrow_type``: decimal128(38, 9) for NUMERIC, timestamp[us] for
DATETIME, ...) as a whole.

A value BigQuery cannot hold is found on the whole column (a range check, a failed cast) and only
then looked up row by row, so the error names table, key and column as the protobuf path does.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ingest_platform.bigquery.kinds import (
    DATE_MAX_DAYS,
    DATE_MIN_DAYS,
    TIMESTAMP_MAX_MICROS,
    TIMESTAMP_MIN_MICROS,
    ValueRejected,
)
from ingest_platform.bigquery.source import MirrorSource, MirrorValueError, key_of
from ingest_platform.bigquery.types import MirrorColumn
from ingest_platform.errors import IngestError

# The Arrow types of the kinds table, by their spelling there (pyarrow's str() of the type).
ARROW_TYPES: dict[str, pa.DataType] = {
    str(t): t
    for t in (
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.string(),
        pa.binary(),
        pa.decimal128(38, 9),
        pa.decimal256(76, 38),
        pa.date32(),
        pa.timestamp("us"),
        pa.time64("us"),
    )
}
# Allowed values as read (days, microseconds), by kind; the kind's own check words the error.
_RANGES = {
    "date": (DATE_MIN_DAYS, DATE_MAX_DAYS),
    "timestamp": (TIMESTAMP_MIN_MICROS, TIMESTAMP_MAX_MICROS),
    "datetime": (TIMESTAMP_MIN_MICROS, TIMESTAMP_MAX_MICROS),
    "time": (0, 86_400_000_000 - 1),
}
_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
_NULL_ELEMENTS = "the array holds NULL elements, which BigQuery arrays cannot hold"


def read_type(sent: pa.DataType) -> pa.DataType:
    """What the SELECT yields for a column sent as `sent`: numbers as text, dates as days,
    timestamps and times as microseconds (int64: the infinity sentinel is an int8)."""
    if pa.types.is_decimal(sent):
        return pa.string()
    if pa.types.is_date(sent) or pa.types.is_timestamp(sent) or pa.types.is_time(sent):
        return pa.int64()
    return sent


class _Column:
    """How one column goes from the value read to the Arrow array sent."""

    def __init__(self, column: MirrorColumn, fill_nulls: bool):
        self.column = column
        kind = column.spec
        # BIGNUMERIC is STRING on the emulator: the numeric text itself.
        self.element = pa.string() if column.bq_type == "STRING" else ARROW_TYPES[kind.arrow_type]
        self.read_element = read_type(self.element)
        self.range = _RANGES.get(kind.name)
        # Per value only what no range check or cast catches: BIGNUMERIC text on the emulator.
        self.check = kind.check if self.range is None and self.element == pa.string() else None
        self.sent = pa.list_(self.element) if column.repeated else self.element
        self.read = pa.list_(self.read_element) if column.repeated else self.read_element
        self.fill = None
        if fill_nulls and not column.repeated:
            # NULL becomes the kind's default; 0 days or microseconds for dates and times.
            default = 0 if self.read_element == pa.int64() else kind.null_default
            self.fill = pa.scalar(default, self.read_element)


class ArrowBatchEncoder:
    """Chunks of converted rows -> Arrow record batches, BigQuery's limits checked per column."""

    def __init__(self, source: MirrorSource):
        self.source = source
        self._columns = [_Column(c, source.fill_nulls) for c in source.columns]
        self.schema = pa.schema([pa.field(c.column.bq_name, c.sent) for c in self._columns])
        self._read = pa.struct([pa.field(c.column.bq_name, c.read) for c in self._columns])

    @property
    def writer_schema(self) -> pa.Schema:
        """What the writer sends as the rows' schema: the Arrow schema."""
        return self.schema

    def encode(self, rows: Sequence[tuple]) -> pa.RecordBatch:
        try:
            read = pa.RecordBatch.from_struct_array(pa.array(rows, type=self._read))
        except _ERRORS:
            self._reject_unreadable(rows)
            raise
        arrays = [self._convert(c, read.column(i), rows) for i, c in enumerate(self._columns)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    # -- one column

    def _convert(self, column: _Column, values: pa.Array, rows: Sequence[tuple]) -> pa.Array:
        if column.column.repeated:
            return self._convert_list(column, values, rows)
        self._check(column, values, rows, row_of=None)
        if column.fill is not None and values.null_count:
            values = pc.fill_null(values, column.fill)
        return self._cast(column, values, rows, row_of=None)

    def _convert_list(self, column: _Column, lists: pa.Array, rows: Sequence[tuple]) -> pa.Array:
        if lists.null_count:  # a NULL array is an empty one: BigQuery arrays are never NULL
            lists = pc.fill_null(lists, pa.scalar([], lists.type))
        elements = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists)
        if elements.null_count:
            at = _first(pc.is_null(elements))
            self._reject(rows, parents[at].as_py(), column, _NULL_ELEMENTS)
        self._check(column, elements, rows, row_of=parents)
        cast = self._cast(column, elements, rows, row_of=parents)
        offsets = lists.offsets  # the elements' again, from 0
        if offsets[0].as_py():
            offsets = pc.subtract(offsets, offsets[0])
        return pa.ListArray.from_arrays(offsets, cast, type=column.sent)

    def _check(self, column: _Column, values: pa.Array, rows, row_of) -> None:
        if column.range is not None and len(values) > values.null_count:
            low, high = column.range
            smallest, largest = pc.min_max(values).values()
            if smallest.as_py() < low or largest.as_py() > high:
                outside = pc.or_(pc.less(values, low), pc.greater(values, high))
                at = _first(outside)
                self._reject_value(rows, _row(row_of, at), column, values[at].as_py())
        elif column.check is not None:
            for at, value in enumerate(values.to_pylist()):
                if value is not None:
                    self._reject_value(rows, _row(row_of, at), column, value)

    def _cast(self, column: _Column, values: pa.Array, rows, row_of) -> pa.Array:
        target = column.element
        try:
            if pa.types.is_date(target):  # no direct int64 -> date32 cast
                return values.cast(pa.int32()).cast(target)
            return values.cast(target)
        except _ERRORS:
            for at, value in enumerate(values.to_pylist()):
                try:
                    pa.array([value], values.type).cast(target)
                except _ERRORS:
                    row = _row(row_of, at)
                    self._reject_value(rows, row, column, value)  # in the kind's words
                    problem = f"{value} cannot be stored in a BigQuery {column.column.bq_type}"
                    self._reject(rows, row, column, problem)
            raise

    # -- errors

    def _reject_value(self, rows, at: int, column: _Column, value) -> None:
        """The kind's own check words the problem (same message as the protobuf rows)."""
        check = column.column.spec.check
        if check is None:
            return
        if column.column.kind == "time":
            value = _time_text(value)
        try:
            check(value)
        except ValueRejected as reject:
            self._reject(rows, at, column, str(reject))

    def _reject(self, rows, at: int, column: _Column, problem: str) -> None:
        raise MirrorValueError(
            self.source.label, key_of(self.source, rows[at]), column.column.name, problem
        )

    def _reject_unreadable(self, rows: Sequence[tuple]) -> None:
        """The struct conversion failed: find the column and the row (text that is not UTF-8)."""
        for i, column in enumerate(self._columns):
            try:
                pa.array([row[i] for row in rows], column.read)
            except _ERRORS as error:
                for at, row in enumerate(rows):
                    try:
                        pa.array([row[i]], column.read)
                    except _ERRORS:
                        problem = (
                            "text is not valid UTF-8"
                            if "utf8" in str(error).lower()
                            else f"{row[i]!r} is not {column.read}"
                        )
                        self._reject(rows, at, column, problem)
        raise IngestError(f"{self.source.label}: rows could not be made Arrow columns.")


def _first(mask: pa.Array) -> int:
    return pc.index(mask, True).as_py()


def _row(row_of: pa.Array | None, at: int) -> int:
    return at if row_of is None else row_of[at].as_py()


def _time_text(micros: int) -> str:
    seconds, micro = divmod(micros, 1_000_000)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" + (
        f".{micro:06d}" if micro else ""
    )
