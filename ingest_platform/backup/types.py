"""The type table of backups: how each PostgreSQL type is read, stored and restored.

One ``Kind`` per row of the README's table. A column is read by ``COPY (SELECT <wire
expressions>) TO STDOUT (FORMAT csv)`` and parsed by Arrow's CSV reader into *wire* columns of
plain types (integers, floats, decimals, strings): no Python object per value. ``to_arrow`` turns
a column's wire arrays into its stored Arrow type (a zero-copy view for dates; timestamps and
times from their binary send form printed as hex; hex decoding with numpy for bytea and uuid),
which Parquet writes as its logical type.
``to_text`` is the inverse for restores: the stored array as PostgreSQL's COPY text input, again
computed on the whole array. Arrays are the one kind that goes value by value (JSON text in,
array literals out).

Infinite dates and timestamps are stored as the extreme values of their storage type
(``INFINITY``/``-INFINITY`` below) and restored as ``infinity``/``-infinity``; a Parquet reader
sees those as dates or timestamps very far away.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from ingest_platform.errors import SchemaError

DATE_INFINITY, DATE_MINUS_INFINITY = 2**31 - 1, -(2**31)
MICROS_INFINITY, MICROS_MINUS_INFINITY = 2**63 - 1, -(2**63)
DAY_MICROS = 86_400_000_000
# Timestamps and dates restore through Arrow's ISO text, which spells years 1 to 9999 only.
MIN_MICROS, MAX_MICROS = -62135596800_000000, 253402300799_999999
MIN_DAYS, MAX_DAYS = -719162, 2932896
DECIMAL128_DIGITS, DECIMAL256_DIGITS = 38, 76


@dataclass(frozen=True)
class Kind:
    name: str
    wire: Callable[[str], list[tuple[str, pa.DataType]]]  # column SQL -> [(expression, type)]
    arrow: Callable[[dict], pa.DataType]  # column description -> stored Arrow type
    avro: Callable[[dict], object]  # column description -> Avro type (without null)
    to_arrow: Callable[[dict, list[pa.Array]], pa.Array]
    to_text: Callable[[dict, pa.Array], pa.Array]  # -> string array, NULL stays NULL
    binary_copy: bool = True  # restorable by binary COPY (bulk_ingest/arrow_copy.py)


def _plain(t: pa.DataType) -> Callable[[str], list[tuple[str, pa.DataType]]]:
    return lambda v: [(v, t)]


def _same(column: dict, arrays: list[pa.Array]) -> pa.Array:
    return arrays[0]


def _cast_text(column: dict, array: pa.Array) -> pa.Array:
    return pc.cast(array, pa.string())


def _string_text(column: dict, array: pa.Array) -> pa.Array:
    return pc.cast(array, pa.string()) if array.type != pa.string() else array


# ----------------------------------------------------------------------------- integers, floats

_INTS = {"smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64()}
_AVRO_INTS = {"smallint": "int", "integer": "int", "bigint": "long"}
_FLOATS = {"real": pa.float32(), "double precision": pa.float64()}


def _bool_text(column: dict, array: pa.Array) -> pa.Array:
    return pc.if_else(array, "t", "f")


# ----------------------------------------------------------------------------- numeric


def _decimal_type(column: dict) -> pa.DataType:
    p, s = column["precision"], column["scale"]
    return pa.decimal128(p, s) if p <= DECIMAL128_DIGITS else pa.decimal256(p, s)


def _decimal_avro(column: dict) -> object:
    return {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": column["precision"],
        "scale": column["scale"],
    }


# ----------------------------------------------------------------------------- hex (bytea, uuid)

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def _string_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data bytes) of a string/binary array, relative to its first value."""
    array = array.cast(pa.large_binary()) if array.type != pa.large_binary() else array
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, "u1")
    )
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def _unhex(hex_text: pa.Array, prefix: int) -> pa.Array:
    """Binary values of hex texts after `prefix` characters (``\\x`` of bytea), vectorized: the
    hex digits of all values lie back to back, so pairs of digits decode in one pass."""
    if prefix:
        hex_text = pc.utf8_slice_codeunits(hex_text, prefix)
    offsets, data = _string_parts(hex_text)
    digits = _NIBBLE[data]
    if (digits == 255).any() or len(data) % 2:
        raise ValueError("not hex")
    raw = (digits[0::2] << 4) | digits[1::2]
    return pa.Array.from_buffers(
        pa.large_binary(),
        len(hex_text),
        [_validity(hex_text), pa.py_buffer(offsets // 2), pa.py_buffer(raw.tobytes())],
        null_count=hex_text.null_count,
    ).cast(pa.binary())


def _validity(array: pa.Array) -> pa.Buffer | None:
    """The array's validity bitmap starting at its first value (None without NULLs)."""
    return pc.is_valid(array).buffers()[1] if array.null_count else None


def _hex(array: pa.Array) -> pa.Array:
    """Lowercase hex text of binary values (NULL stays NULL)."""
    offsets, data = _string_parts(array)
    digits = np.empty(len(data) * 2, dtype=np.uint8)
    digits[0::2] = _HEX_DIGITS[data >> 4]
    digits[1::2] = _HEX_DIGITS[data & 15]
    return pa.Array.from_buffers(
        pa.large_string(),
        len(array),
        [_validity(array), pa.py_buffer(offsets * 2), pa.py_buffer(digits.tobytes())],
        null_count=array.null_count,
    ).cast(pa.string())


def _bytea_arrow(column: dict, arrays: list[pa.Array]) -> pa.Array:
    return _unhex(arrays[0], 2)


def _bytea_text(column: dict, array: pa.Array) -> pa.Array:
    # COPY text: the backslash of bytea's \x is itself escaped.
    return pc.binary_join_element_wise("\\\\x", _hex(array), "")


def _uuid_arrow(column: dict, arrays: list[pa.Array]) -> pa.Array:
    raw = _unhex(pc.replace_substring(arrays[0], "-", ""), 0)
    fixed = pc.cast(raw, pa.binary(16))
    return pa.ExtensionArray.from_storage(pa.uuid(), fixed)


def _uuid_text(column: dict, array: pa.Array) -> pa.Array:
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    return _hex(pc.cast(storage, pa.binary()))


# ----------------------------------------------------------------------------- money (restores)

# Money as PostgreSQL prints it under the C and en_US locales: "-$1,234,567.89". At most 18
# digits before the point (int8's range has 17; more are caught below, not wrapped).
_MONEY_SHAPE = r"^-?\$\d{1,3}(,\d{3}){0,5}\.\d\d$"


def money_shaped(text: pa.Array) -> bool:
    """Every non-NULL value is money text of the shape "-$1,234.56"."""
    return bool(pc.all(pc.match_substring_regex(text, _MONEY_SHAPE)).as_py() is not False)


def money_cents(text: pa.Array, shaped: bool = False) -> pa.Array | None:
    """Money text ("-$1,234.56") as int64 cents, NULL kept; None if a value has another shape or
    does not fit int8 (`shaped`: ``money_shaped`` said so already). Each value's sign and digits,
    picked out of the column's bytes with numpy, are parsed by Arrow's integer cast: pyarrow's
    replace_substring for "$", "," and "." took 0.25 s per million values, this a fraction."""
    if not shaped and not money_shaped(text):
        return None
    offsets, data = _string_parts(text)
    keep = ((data >= ord("0")) & (data <= ord("9"))) | (data == ord("-"))
    kept = np.concatenate([np.zeros(1, np.int64), np.cumsum(keep, dtype=np.int64)])
    numbers = pa.Array.from_buffers(
        pa.large_string(),
        len(text),
        [_validity(text), pa.py_buffer(kept[offsets]), pa.py_buffer(data[keep])],
        null_count=text.null_count,
    )
    try:
        return pc.cast(numbers, pa.int64())
    except pa.ArrowInvalid:  # beyond int8
        return None


# ----------------------------------------------------------------------------- dates and times


def _finite_or(v: str, finite: str, infinity: int, minus_infinity: int) -> str:
    return (
        f"CASE WHEN {v} IS NULL THEN NULL WHEN isfinite({v}) THEN {finite}"
        f" WHEN {v} > 'epoch' THEN {infinity} ELSE {minus_infinity} END"
    )


def _date_wire(v: str) -> list[tuple[str, pa.DataType]]:
    return [
        (_finite_or(v, f"{v} - DATE '1970-01-01'", DATE_INFINITY, DATE_MINUS_INFINITY), pa.int32())
    ]


# Timestamps and times are read as their binary send form (``timestamp_send``: the stored int8
# of microseconds since 2000-01-01, or since midnight), printed as bytea hex: the server does no
# arithmetic per value (``extract(epoch ...)`` is numeric arithmetic: 0.4 s of server CPU per
# million values against 0.03 s), and the client decodes the hex digits of a whole column at once
# (``_send_int8``). PostgreSQL's infinities are int8's extremes there, as in the stored files.
_SEND = {"timestamp": "timestamp_send", "timestamptz": "timestamptz_send", "time": "time_send"}
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01


def _send_wire(kind: str) -> Callable[[str], list[tuple[str, pa.DataType]]]:
    return lambda v: [(f"{_SEND[kind]}({v})", pa.string())]


def _send_int8(text: pa.Array) -> np.ndarray:
    """The int8 of each "\\x" + 16 hex digits (a send form printed as bytea hex); 0 for NULL."""
    offsets, data = _string_parts(text)
    valid = pc.is_valid(text).to_numpy(zero_copy_only=False)
    starts = offsets[:-1][valid]
    if not (offsets[1:][valid] - starts == 18).all():
        raise ValueError("not an 8-byte send form")
    if len(data) == 18 * len(starts):  # the values back to back (NULLs empty): no gather
        rows = data.reshape(-1, 18)
    else:
        rows = data[starts[:, None] + np.arange(18)]
    raw = np.frombuffer(binascii.unhexlify(np.ascontiguousarray(rows[:, 2:]).tobytes()), ">i8")
    values = np.zeros(len(text), np.int64)
    values[valid] = raw  # big-endian to native
    return values


def _int64(values: np.ndarray, like: pa.Array) -> pa.Array:
    return pa.Array.from_buffers(
        pa.int64(), len(like), [_validity(like), pa.py_buffer(values)], null_count=like.null_count
    )


def _view(column: dict, arrays: list[pa.Array], kind: str) -> pa.Array:
    values = arrays[0]
    if kind == "date":
        _check_range(column, values, MIN_DAYS, MAX_DAYS, DATE_INFINITY, DATE_MINUS_INFINITY)
        return values.view(pa.date32())
    sent = _send_int8(values)
    if kind == "time":
        return _int64(sent, values).view(pa.time64("us"))
    # The range is checked in PostgreSQL's epoch, before the shift to 1970's could overflow.
    since_2000 = _int64(sent, values)
    _check_range(
        column,
        since_2000,
        MIN_MICROS - _PG_EPOCH_MICROS,
        MAX_MICROS - _PG_EPOCH_MICROS,
        MICROS_INFINITY,
        MICROS_MINUS_INFINITY,
    )
    finite = (sent != MICROS_INFINITY) & (sent != MICROS_MINUS_INFINITY)
    sent[finite] += _PG_EPOCH_MICROS  # in place; the infinities stay the extremes
    return _int64(sent, values).view(pa.timestamp("us", "UTC" if kind == "timestamptz" else None))


class OutOfRange(ValueError):
    pass


def _check_range(column: dict, values: pa.Array, low: int, high: int, inf: int, minf: int) -> None:
    finite = pc.and_(pc.not_equal(values, inf), pc.not_equal(values, minf))
    outside = pc.and_(finite, pc.or_(pc.less(values, low), pc.greater(values, high)))
    if pc.any(outside).as_py():
        raise OutOfRange(
            f"column {column['name']} holds a {column['pg_type']} outside the years 1 to 9999,"
            " which backups do not take"
        )


def _infinity_text(
    storage: pa.Array, text: pa.Array, infinity: int, minus_infinity: int
) -> pa.Array:
    if not len(storage):
        return text
    high, low = pc.equal(storage, infinity), pc.equal(storage, minus_infinity)
    if pc.any(high).as_py() or pc.any(low).as_py():
        text = pc.if_else(high, "infinity", text)
        text = pc.if_else(low, "-infinity", text)
    return text


def _date_text(column: dict, array: pa.Array) -> pa.Array:
    storage = array.view(pa.int32())
    safe = pc.if_else(
        pc.or_(pc.equal(storage, DATE_INFINITY), pc.equal(storage, DATE_MINUS_INFINITY)),
        pa.scalar(0, pa.int32()),
        storage,
    ).view(pa.date32())
    return _infinity_text(storage, pc.cast(safe, pa.string()), DATE_INFINITY, DATE_MINUS_INFINITY)


def _timestamp_text(column: dict, array: pa.Array) -> pa.Array:
    storage = array.view(pa.int64())
    infinite = pc.or_(pc.equal(storage, MICROS_INFINITY), pc.equal(storage, MICROS_MINUS_INFINITY))
    safe = pc.if_else(infinite, 0, storage).view(array.type)
    return _infinity_text(
        storage, pc.cast(safe, pa.string()), MICROS_INFINITY, MICROS_MINUS_INFINITY
    )


def _time_text(column: dict, array: pa.Array) -> pa.Array:
    storage = array.view(pa.int64())
    midnight = pc.equal(storage, DAY_MICROS)  # 24:00:00, which Arrow does not print
    safe = pc.if_else(midnight, 0, storage).view(pa.time64("us"))
    return pc.if_else(midnight, "24:00:00", pc.cast(safe, pa.string()))


# ----------------------------------------------------------------------------- interval

INTERVAL_TYPE = pa.struct(
    [
        pa.field("months", pa.int32(), nullable=False),
        pa.field("days", pa.int32(), nullable=False),
        pa.field("micros", pa.int64(), nullable=False),
    ]
)


def _interval_wire(v: str) -> list[tuple[str, pa.DataType]]:
    return [
        (f"(extract(year FROM {v}) * 12 + extract(month FROM {v}))::int4", pa.int32()),
        (f"extract(day FROM {v})::int4", pa.int32()),
        (
            f"(extract(hour FROM {v}) * 3600000000 + extract(minute FROM {v}) * 60000000"
            f" + extract(microseconds FROM {v}))::int8",
            pa.int64(),
        ),
    ]


def _interval_arrow(column: dict, arrays: list[pa.Array]) -> pa.Array:
    months, days, micros = arrays
    mask = pc.is_null(months)
    return pa.StructArray.from_arrays(
        [pc.fill_null(months, 0), pc.fill_null(days, 0), pc.fill_null(micros, 0)],
        fields=list(INTERVAL_TYPE),
        mask=mask if months.null_count else None,
    )


def _interval_text(column: dict, array: pa.Array) -> pa.Array:
    parts = [pc.cast(array.field(i), pa.string()) for i in range(3)]
    text = pc.binary_join_element_wise(
        parts[0], " mons ", parts[1], " days ", parts[2], " microseconds", ""
    )
    return pc.if_else(pc.is_valid(array), text, pa.scalar(None, pa.string()))


_INTERVAL_AVRO = {
    "type": "record",
    "name": "interval",
    "fields": [
        {"name": "months", "type": "int"},
        {"name": "days", "type": "int"},
        {"name": "micros", "type": "long"},
    ],
}


# ----------------------------------------------------------------------------- json, arrays


def _json_arrow(column: dict, arrays: list[pa.Array]) -> pa.Array:
    return pa.ExtensionArray.from_storage(pa.json_(), arrays[0])


def _json_text(column: dict, array: pa.Array) -> pa.Array:
    return array.storage if isinstance(array, pa.ExtensionArray) else array


_ARRAY_ELEMENTS = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
}
_AVRO_ELEMENTS = {
    "smallint": "int",
    "integer": "int",
    "bigint": "long",
    "real": "float",
    "double precision": "double",
    "boolean": "boolean",
}


def _element_type(column: dict) -> pa.DataType:
    return _ARRAY_ELEMENTS.get(column["element"], pa.string())


class NotStorable(ValueError):
    pass


def _array_arrow(column: dict, arrays: list[pa.Array]) -> pa.Array:
    """JSON texts of text[] arrays -> list<element>; the one kind read value by value."""
    values: list[str | None] = []
    offsets = [0]
    validity = []
    for text in arrays[0].to_pylist():
        items = [] if text is None else json.loads(text)
        if any(isinstance(i, list) for i in items):
            raise NotStorable(
                f"column {column['name']} ({column['pg_type']}) holds a multidimensional array,"
                " which backups do not take: store it as one dimension or as json"
            )
        values.extend(items)
        offsets.append(len(values))
        validity.append(text is not None)
    element = _element_type(column)
    strings = pa.array(values, pa.string())
    if element == pa.bool_():
        elements = pc.equal(strings, "true")
    else:
        elements = pc.cast(strings, element)
    mask = pa.array([not v for v in validity], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), elements, mask=mask)


def _quote_element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _array_text(column: dict, array: pa.Array) -> pa.Array:
    return pa.array(
        [
            None if items is None else "{" + ",".join(_quote_element(i) for i in items) + "}"
            for items in array.to_pylist()
        ],
        pa.string(),
    )


def _array_avro(column: dict) -> object:
    return {"type": "array", "items": ["null", _AVRO_ELEMENTS.get(column["element"], "string")]}


# ----------------------------------------------------------------------------- the table

# fmt: off
KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("int", lambda v: [(v, pa.int64())], lambda c: _INTS[c["pg_base"]],
         lambda c: _AVRO_INTS[c["pg_base"]],
         lambda c, a: pc.cast(a[0], _INTS[c["pg_base"]]), _cast_text),
    Kind("float", lambda v: [(v, pa.float64())], lambda c: _FLOATS[c["pg_base"]],
         lambda c: "float" if c["pg_base"] == "real" else "double",
         lambda c, a: pc.cast(a[0], _FLOATS[c["pg_base"]]), _cast_text),
    Kind("bool", _plain(pa.bool_()), lambda c: pa.bool_(), lambda c: "boolean", _same,
         _bool_text),
    Kind("decimal", lambda v: [(v, pa.string())], _decimal_type, _decimal_avro,
         lambda c, a: pc.cast(a[0], _decimal_type(c)), _cast_text),
    Kind("string", lambda v: [(f"({v})::text", pa.string())], lambda c: pa.string(),
         lambda c: "string", _same, _string_text, binary_copy=False),
    Kind("text", _plain(pa.string()), lambda c: pa.string(), lambda c: "string", _same,
         _string_text),
    Kind("bytea", _plain(pa.string()), lambda c: pa.binary(), lambda c: "bytes", _bytea_arrow,
         _bytea_text),
    Kind("date", _date_wire, lambda c: pa.date32(),
         lambda c: {"type": "int", "logicalType": "date"},
         lambda c, a: _view(c, a, "date"), _date_text, binary_copy=False),
    Kind("timestamp", _send_wire("timestamp"), lambda c: pa.timestamp("us"),
         lambda c: {"type": "long", "logicalType": "local-timestamp-micros"},
         lambda c, a: _view(c, a, "timestamp"), _timestamp_text, binary_copy=False),
    Kind("timestamptz", _send_wire("timestamptz"), lambda c: pa.timestamp("us", "UTC"),
         lambda c: {"type": "long", "logicalType": "timestamp-micros"},
         lambda c, a: _view(c, a, "timestamptz"), _timestamp_text, binary_copy=False),
    Kind("time", _send_wire("time"),
         lambda c: pa.time64("us"), lambda c: {"type": "long", "logicalType": "time-micros"},
         lambda c, a: _view(c, a, "time"), _time_text, binary_copy=False),
    Kind("interval", _interval_wire, lambda c: INTERVAL_TYPE, lambda c: _INTERVAL_AVRO,
         _interval_arrow, _interval_text, binary_copy=False),
    Kind("json", _plain(pa.string()), lambda c: pa.json_(), lambda c: "string", _json_arrow,
         _json_text),
    Kind("uuid", lambda v: [(f"({v})::text", pa.string())], lambda c: pa.uuid(),
         lambda c: {"type": "string", "logicalType": "uuid"}, _uuid_arrow, _uuid_text,
         binary_copy=False),
    Kind("array", lambda v: [(f"to_json(({v})::text[])::text", pa.string())],
         lambda c: pa.list_(_element_type(c)), _array_avro, _array_arrow, _array_text,
         binary_copy=False),
]}
# fmt: on

# PostgreSQL type (format_type without modifiers) -> kind; others are "string" (their text).
KIND_OF = {
    **{t: "int" for t in _INTS},
    **{t: "float" for t in _FLOATS},
    "boolean": "bool",
    "text": "text",
    "character varying": "text",
    "character": "text",
    "name": "text",
    "bytea": "bytea",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "interval": "interval",
    "json": "json",
    "jsonb": "json",
    "uuid": "uuid",
}


COLUMNS = """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           format_type(a.atttypid, NULL), t.typtype, t.typcategory,
           format_type(t.typelem, NULL), a.atttypmod, t.typname,
           coalesce(a.attndims, 0)
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    ORDER BY a.attnum"""


def table_columns(conn: psycopg.Connection, oid: int) -> list[dict]:
    """The stored columns of a table (generated ones are computed again by the target), each
    described as the manifest records it: name, pg_type, not_null, kind and its parameters."""
    found = []
    for (
        name,
        printed,
        not_null,
        base,
        typtype,
        category,
        element,
        typmod,
        typname,
        _dims,
    ) in conn.execute(COLUMNS, (oid,)).fetchall():
        column: dict = {"name": name, "pg_type": printed, "not_null": not_null}
        column["pg_base"] = base
        column["typname"] = typname
        if category == "A" and typtype == "b":
            column["kind"] = "array"
            column["element"] = element
        elif base == "numeric":
            column.update(_numeric(typmod))
        elif typtype == "e":
            column["kind"] = "text"  # an enum: its label
        else:
            column["kind"] = KIND_OF.get(base, "string")
        found.append(column)
    return found


def _numeric(typmod: int) -> dict:
    """numeric(p, s) -> decimal(p, s) where a decimal type holds it; numeric without a precision
    (any number of digits, NaN, Infinity) and negative scales stay exact as text."""
    if typmod < 4:
        return {"kind": "string"}
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (typmod - 4) & 0x7FF
    scale = scale - 0x800 if scale & 0x400 else scale  # 11-bit signed (PostgreSQL 15+)
    if not 0 <= scale <= precision or precision > DECIMAL256_DIGITS:
        return {"kind": "string"}
    return {"kind": "decimal", "precision": precision, "scale": scale}


def kind_of(column: dict) -> Kind:
    return KINDS[column["kind"]]


def arrow_field(column: dict) -> pa.Field:
    """The column's stored Arrow field; its PostgreSQL type in the field's metadata."""
    return pa.field(
        column["name"],
        kind_of(column).arrow(column),
        nullable=not column["not_null"],
        metadata={"pg_type": column["pg_type"]},
    )


def arrow_schema(columns: list[dict]) -> pa.Schema:
    return pa.schema([arrow_field(c) for c in columns])


@dataclass
class WirePlan:
    """The SELECT list of a table's COPY and how its CSV columns become stored columns."""

    expressions: list[str] = field(default_factory=list)
    types: list[pa.DataType] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # per column: wire columns


def wire_plan(columns: list[dict], quote: Callable[[str], str]) -> WirePlan:
    plan = WirePlan()
    for column in columns:
        start = len(plan.expressions)
        for expression, wire_type in kind_of(column).wire(quote(column["name"])):
            plan.expressions.append(expression)
            plan.types.append(wire_type)
        plan.spans.append((start, len(plan.expressions)))
    return plan


def refuse(table: str, problem: str) -> SchemaError:
    return SchemaError(f"{table}: {problem}. Nothing was written for this backup.")
