"""Arrow record batches as PostgreSQL binary COPY rows, a whole column at a time.

No value becomes a Python object: each column of the target table is taken from the Arrow field of
the same name and turned into binary COPY fields (a 4-byte big-endian length, -1 for NULL, then
the value in PostgreSQL's binary form) with numpy and ``pyarrow.compute`` over the whole array:

- fixed-width kinds (smallint .. bigint, real, double, boolean, date, timestamp(tz), time, numeric
  from decimals or integers) are written big-endian into a numpy block, one row of it per record;
  neighbouring fields without NULLs share the block, with the lengths of the next text field;
- text and bytes are their lengths (in a block) and the Arrow values as they are, jsonb with its
  version byte; a fixed-width field with NULLs is its lengths and the values of its other rows;
- ``pyarrow.compute.binary_join_element_wise`` concatenates the pieces of each row (the blocks
  seen as binary arrays without a copy; NULL values as nothing), and the data buffer of its
  result is the batch's COPY data, written as it is.

Fixed-width columns go first in the COPY's column list (``ArrowEncoder.columns``), which is what
lets them share a block. The server checks what it checks for any COPY (NOT NULL, lengths,
ranges of dates and numerics, UTF-8), and its error names the line: the record.

Conversions. A field whose Arrow type is not its column's (``_ARROW_TYPES``) is converted with
``pyarrow.compute.cast(safe=True)``, which refuses to change a value: an integer that does not fit,
a fraction into an integer, a timestamp with nanoseconds, a string that does not parse are errors
naming record and column (``ArrowValueError``), never rounded. Refused as psycopg refuses the same
Python values: timestamps without a time zone into ``timestamptz`` and with one into ``timestamp``,
floats into ``numeric`` (cast them to a decimal type: the rounding is the caller's choice).
Decimals go to numeric with their own scale; the column's typmod rounds them on the server, as it
does Python Decimals. A column of another PostgreSQL type (interval, inet, arrays, enums, domains,
...) is not encoded here: ``ArrowEncoder.of`` returns None and the caller sends the batch through
the row path as Python values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.types.numeric import DecimalBinaryDumper as _DECIMAL_DUMPER

_PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01
_PG_EPOCH_MICROS = _PG_EPOCH_DAYS * 86_400_000_000
# A batch is encoded in slices of at most so many rows and about so many bytes of COPY data.
_MAX_SLICE_ROWS = 1 << 16
_MAX_SLICE_BYTES = 1 << 24
_EMPTY = pa.scalar(b"", pa.binary())
_NULL_LENGTH = -1

# The Arrow type each PostgreSQL type takes without conversion, by pg_type.typname.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"),
    "time": pa.time64("us"),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "bytea": pa.binary(),
}
_NUMPY_TYPES = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "bool": "u1",
    "date": ">i4",
    "timestamp": ">i8",
    "timestamptz": ">i8",
    "time": ">i8",
}
_FIXED = set(_NUMPY_TYPES) | {"numeric"}
_TEXT_TYPES = {"text", "varchar", "bpchar", "name", "json", "jsonb"}


class ArrowValueError(Exception):
    """A value the column cannot take, found in the client: `record` is 0-based in its batch."""

    def __init__(self, record: int, column: str, message: str):
        super().__init__(message)
        self.record, self.column, self.message = record, column, message


@dataclass(frozen=True)
class _Field:
    column: str  # the table's column (= the Arrow field's name)
    pg_type: str  # pg_type.typname
    index: int  # of the Arrow field in the schema


class _Raw:
    """Bytes of one width in every row, written into a block shared with the neighbouring ones."""

    def __init__(self, width: int, fill: Callable[[np.ndarray], None]):
        self.width, self.fill = width, fill  # fill(view): writes the (rows x width) view


# A piece of every row of a slice: bytes of one width, or a binary array (NULL: nothing).
Piece: TypeAlias = "_Raw | pa.Array"


class ArrowEncoder:
    """Encodes record batches of one Arrow schema for one table (its columns and their types)."""

    def __init__(self, fields: list[_Field]):
        self.fields = fields

    @property
    def columns(self) -> tuple[str, ...]:
        """The COPY's column list: the fixed-width columns first, then the others."""
        return tuple(f.column for f in self.fields)

    @classmethod
    def of(
        cls, schema: pa.Schema, columns: Sequence[str], pg_types: Sequence[str]
    ) -> ArrowEncoder | None:
        """The encoder for batches of `schema` into a table of `columns` (pg_type.typname each);
        None if a column's type is not encoded here. The schema's names must be the columns'
        (``check_names`` says which are not)."""
        if any(t not in _ARROW_TYPES and t != "numeric" for t in pg_types):
            return None
        position = {name: i for i, name in enumerate(schema.names)}
        fields = [_Field(c, t, position[c]) for c, t in zip(columns, pg_types, strict=True)]
        for field in fields:
            arrow_type = _storage(schema.field(field.index).type)
            _refusal(field, arrow_type)  # a refused pair fails before anything is sent
        fields.sort(key=lambda f: f.pg_type not in _FIXED)  # stable: table order within each
        return cls(fields)

    def encode(self, batch: pa.RecordBatch) -> list[Any]:
        """The COPY rows of `batch` (no header or trailer), a buffer per slice of the batch.
        Raises ArrowValueError."""
        if not batch.num_rows:
            return []
        per_row = max(1, batch.get_total_buffer_size() // batch.num_rows)
        step = max(1, min(_MAX_SLICE_ROWS, _MAX_SLICE_BYTES // per_row))
        return [
            self._encode_slice(batch.slice(start, step), start)
            for start in range(0, batch.num_rows, step)
        ]

    def _encode_slice(self, batch: pa.RecordBatch, start: int) -> Any:
        pieces: list[Piece] = [_constant(struct.pack(">h", len(self.fields)))]  # field count
        for field in self.fields:
            try:
                pieces += _pieces(field, batch.column(field.index))
            except ArrowValueError as error:
                if error.record >= 0:
                    error.record += start
                raise
        parts = _blocks(pieces, batch.num_rows)
        if len(parts) == 1 and isinstance(parts[0], np.ndarray):  # fixed widths, no NULLs
            return pa.py_buffer(parts[0])
        joined = pc.binary_join_element_wise(
            *(_binary(p) if isinstance(p, np.ndarray) else p for p in parts),
            _EMPTY,
            null_handling="replace",
            null_replacement="",
        )
        offsets = np.frombuffer(joined.buffers()[1], np.int32, len(joined) + 1, joined.offset * 4)
        return joined.buffers()[2][offsets[0] : offsets[-1]]


def check_names(schema: pa.Schema, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(columns the schema lacks, fields the table lacks); duplicated field names count as
    unknown."""
    names = schema.names
    missing = [c for c in columns if c not in names]
    wanted = set(columns)
    seen: set[str] = set()
    unknown = []
    for name in names:
        if name not in wanted or name in seen:
            unknown.append(name)
        seen.add(name)
    return missing, unknown


# ------------------------------------------------------------------------------ one column


def _storage(arrow_type: pa.DataType) -> pa.DataType:
    """The type of the values: an extension type's storage, a dictionary's values."""
    if isinstance(arrow_type, pa.ExtensionType):
        arrow_type = arrow_type.storage_type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return arrow_type


def _refusal(field: _Field, arrow_type: pa.DataType) -> None:
    """Raise for the pairs refused whatever the values (record -1: the whole column)."""
    pg = field.pg_type
    if pg in ("timestamp", "timestamptz") and pa.types.is_timestamp(arrow_type):
        if pg == "timestamptz" and arrow_type.tz is None:
            raise ArrowValueError(
                -1,
                field.column,
                f"the Arrow type {arrow_type} has no time zone and the column is timestamp "
                "with time zone: give the field a time zone (pyarrow.compute.assume_timezone, "
                "or cast to timestamp('us', 'UTC'))",
            )
        if pg == "timestamp" and arrow_type.tz is not None:
            raise ArrowValueError(
                -1,
                field.column,
                f"the Arrow type {arrow_type} has a time zone and the column is timestamp "
                "without time zone: cast the field to a timestamp without one",
            )
    if pg == "numeric" and pa.types.is_floating(arrow_type):
        raise ArrowValueError(
            -1,
            field.column,
            f"the Arrow type {arrow_type} is binary floating point and the column is numeric: "
            "cast the field to a decimal type (pyarrow.compute.cast(..., pa.decimal128(p, s))) "
            "so that the rounding is yours",
        )
    if pg == "numeric" and not (pa.types.is_integer(arrow_type) or pa.types.is_decimal(arrow_type)):
        raise ArrowValueError(
            -1,
            field.column,
            f"the Arrow type {arrow_type} cannot be stored as numeric: give the field a decimal "
            "or integer type",
        )


def _pieces(field: _Field, array: pa.Array) -> list[Piece]:
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    pg = field.pg_type
    if pg == "numeric":
        return _numeric(field, array)
    target = _ARROW_TYPES[pg]
    if pg in _TEXT_TYPES:
        if not pa.types.is_string(array.type):
            array = _cast(field, array, target)
        return _variable(array.view(pa.binary()), b"\x01" if pg == "jsonb" else b"")
    if pg == "bytea":
        if not pa.types.is_binary(array.type):
            array = _cast(field, array, target)
        return _variable(array, b"")
    if array.type != target:
        array = _cast(field, array, target)
    if array.null_count:
        filled = pc.fill_null(array, False if pg == "bool" else pa.scalar(0, target))
    else:
        filled = array
    if pg == "bool":
        values = filled.to_numpy(zero_copy_only=False).view(np.uint8)
    elif pg == "date":
        values = _shifted(field, array, filled.view(pa.int32()), _PG_EPOCH_DAYS, np.int32)
    elif pg in ("timestamp", "timestamptz"):
        values = _shifted(field, array, filled.view(pa.int64()), _PG_EPOCH_MICROS, np.int64)
    elif pg == "time":
        values = filled.view(pa.int64()).to_numpy()
    else:
        values = filled.to_numpy()
    return _numbers(values, _NUMPY_TYPES[pg], array)


def _cast(field: _Field, array: pa.Array, target: pa.DataType) -> pa.Array:
    """`array` as `target`, changing no value; else the first record that cannot be converted."""
    try:
        return pc.cast(array, target, safe=True)
    except pa.ArrowNotImplementedError:
        raise ArrowValueError(
            -1,
            field.column,
            f"the Arrow type {array.type} cannot be converted to {target} for the column "
            f"({field.pg_type}): give the field a type that can",
        ) from None
    except pa.ArrowInvalid as error:
        low, high = 0, len(array)  # bisect: the first failing record lies in [low, high)
        while high - low > 1:
            middle = (low + high) // 2
            try:
                pc.cast(array.slice(low, middle - low), target, safe=True)
                low = middle
            except pa.ArrowInvalid:
                high = middle
        raise ArrowValueError(
            low,
            field.column,
            f"the value {array[low].as_py()!r:.80} ({array.type}) cannot be stored as "
            f"{field.pg_type} unchanged ({error})",
        ) from None


def _shifted(
    field: _Field, array: pa.Array, numbers: pa.Array, epoch: int, dtype: type
) -> np.ndarray:
    """Days or microseconds counted from PostgreSQL's epoch (2000-01-01), not 1970-01-01; a
    value whose count does not fit `dtype` is an error (PostgreSQL's range is narrower still,
    and the server checks it)."""
    values = numbers.to_numpy().astype(np.int64)
    limits = np.iinfo(dtype)
    bad = values < limits.min + epoch
    if dtype is np.int32:  # (int64 cannot go above: the epoch is later)
        bad |= values > limits.max + epoch
    if bad.any():
        record = int(np.argmax(bad))
        raise ArrowValueError(
            record, field.column, f"the value {array[record]} is out of range for {field.pg_type}"
        )
    return values - epoch


def _numbers(values: np.ndarray, dtype: str, array: pa.Array) -> list[Piece]:
    """Fields of `values` (NULLs filled) written as `dtype` (big-endian), NULL where `array` has
    one."""
    width = np.dtype(dtype).itemsize
    if not array.null_count:
        header = np.frombuffer(struct.pack(">i", width), np.uint8)

        def fill(view: np.ndarray) -> None:
            view[:, :4] = header
            view[:, 4:].view(dtype)[:, 0] = values

        return [_Raw(4 + width, fill)]
    payload = values.astype(dtype).view(np.uint8).reshape(len(values), width)
    return _with_nulls(payload, array)


def _payload(payload: np.ndarray, array: pa.Array) -> list[Piece]:
    """Fields of the rows of `payload` (rows x width bytes), NULL where `array` has one."""
    if array.null_count:
        return _with_nulls(payload, array)
    header = np.frombuffer(struct.pack(">i", payload.shape[1]), np.uint8)

    def fill(view: np.ndarray) -> None:
        view[:, :4] = header
        view[:, 4:] = payload

    return [_Raw(4 + payload.shape[1], fill)]


def _with_nulls(payload: np.ndarray, array: pa.Array) -> list[Piece]:
    """Fields of fixed width with NULLs: their lengths (-1 for NULL), then the values of the other
    rows (a NULL row's value is empty)."""
    n, width = payload.shape
    valid = pc.is_valid(array).to_numpy(zero_copy_only=False)
    lengths = np.where(valid, width, _NULL_LENGTH).astype(np.int32)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    values = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(payload[valid].tobytes())]
    )
    return [_lengths(lengths), values]


def _constant(value: bytes) -> _Raw:
    constant = np.frombuffer(value, np.uint8)

    def fill(view: np.ndarray) -> None:
        view[:] = constant

    return _Raw(len(value), fill)


def _lengths(lengths: np.ndarray) -> _Raw:
    """Field lengths (int32, -1 for NULL), written big-endian."""

    def fill(view: np.ndarray) -> None:
        view.view(">i4")[:, 0] = lengths

    return _Raw(4, fill)


def _variable(array: pa.Array, prefix: bytes) -> list[Piece]:
    """Fields of binary values (text: its UTF-8 bytes), each value after `prefix`."""
    n = len(array)
    lengths = pc.fill_null(pc.binary_length(array), _NULL_LENGTH - len(prefix)).to_numpy()
    if prefix:
        lengths = lengths + len(prefix)
        array = pc.binary_join_element_wise(
            pa.array([prefix] * n, pa.binary()), array, _EMPTY, null_handling="emit_null"
        )
    return [_lengths(lengths), array]


def _numeric(field: _Field, array: pa.Array) -> list[Piece]:
    """numeric fields: integers with scale 0, decimals with their own scale."""
    if pa.types.is_integer(array.type):
        if array.type != pa.int64():
            array = _cast(field, array, pa.int64())
        values = (pc.fill_null(array, 0) if array.null_count else array).to_numpy()
        pieces = _numeric_pieces(values, 0, array)
    else:
        unscaled = _unscaled_int64(array)
        pieces = None if unscaled is None else _numeric_pieces(unscaled, array.type.scale, array)
    if pieces is not None:
        return pieces
    # Beyond 64 bits (rare): Python Decimals through psycopg's dumper, one by one.
    dump = _DECIMAL_DUMPER(Decimal).dump
    fields = [None if v is None else bytes(dump(v) or b"") for v in array.to_pylist()]
    lengths = np.array([_NULL_LENGTH if f is None else len(f) for f in fields], np.int32)
    return [_lengths(lengths), pa.array(fields, pa.binary())]


def _unscaled_int64(array: pa.Array) -> np.ndarray | None:
    """The unscaled values of a decimal128 array as int64 (NULLs as 0), or None if one does not
    fit in 64 bits (or the array is not decimal128)."""
    if not isinstance(array.type, pa.Decimal128Type):
        return None
    n = len(array)
    words = np.frombuffer(array.buffers()[1], "<i8", 2 * n, 16 * array.offset)
    low, high = words[0::2], words[1::2]
    if array.null_count:
        valid = pc.is_valid(array).to_numpy(zero_copy_only=False)
        low, high = np.where(valid, low, 0), np.where(valid, high, 0)
    if not np.array_equal(high, low >> 63):
        return None
    return low


def _numeric_pieces(values: np.ndarray, scale: int, array: pa.Array) -> list[Piece] | None:
    """numeric fields of the unscaled int64 `values` with `scale` decimals, all of one width:
    (ndigits, weight, sign, dscale, base-10000 digits), each value with as many digits as the
    largest needs, aligned on the decimal point. ``numeric_recv`` strips the zero digits this
    adds on either side, so value and display scale are as given. None if the aligned values
    would not fit in 64 bits."""
    n = len(values)
    fraction_groups = max(0, (scale + 3) // 4)
    pad = 10 ** (4 * fraction_groups - scale)  # a negative scale: a multiple of 10**-scale
    magnitude = np.abs(values).astype(np.uint64)  # int64's minimum comes out right as uint64
    largest = int(magnitude.max()) * pad if n else 0
    if largest >= 1 << 64:
        return None
    magnitude *= np.uint64(pad)
    groups = max(fraction_groups, (len(str(largest)) + 3) // 4, 1)
    payload = np.empty((n, 8 + 2 * groups), np.uint8)
    payload[:, 0:4] = np.frombuffer(
        struct.pack(">hh", groups, groups - fraction_groups - 1), np.uint8
    )
    payload[:, 4:6].view(">u2")[:, 0] = np.where(values < 0, 0x4000, 0)
    payload[:, 6:8] = np.frombuffer(struct.pack(">H", max(scale, 0)), np.uint8)
    for k in reversed(range(groups)):  # base-10000 digits, the last first
        magnitude, digit = np.divmod(magnitude, np.uint64(10000))
        payload[:, 8 + 2 * k : 10 + 2 * k].view(">u2")[:, 0] = digit
    return _payload(payload, array)


# ------------------------------------------------------------------------------ assembling


def _blocks(pieces: list[Piece], n: int) -> list[np.ndarray | pa.Array]:
    """The pieces with each run of neighbouring fixed-width ones written into one block."""
    out: list[np.ndarray | pa.Array] = []
    run: list[_Raw] = []
    for piece in [*pieces, None]:
        if isinstance(piece, _Raw):
            run.append(piece)
            continue
        if run:
            block = np.empty((n, sum(r.width for r in run)), np.uint8)
            at = 0
            for raw in run:
                raw.fill(block[:, at : at + raw.width])
                at += raw.width
            out.append(block)
            run = []
        if piece is not None:
            out.append(piece)
    return out


def _binary(block: np.ndarray) -> pa.Array:
    """A 2-D uint8 block as a binary array of its rows, without a copy."""
    n, width = block.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(block)])
