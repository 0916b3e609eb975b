"""Decimals to PostgreSQL's binary ``numeric``, a whole column of a chunk of rows at a time.

psycopg's binary dumper costs ~1.5 us a Decimal (``as_tuple()`` and a loop over its digits): with
two numeric columns that was most of a row's client time. Here a list of Decimals is encoded with a
few C-level operations over the whole list (~0.35 us a value): ``str()`` of each value, zero-padded
to one width; a few bytes operations check that every value is plain ``-ddd.ddd`` with the same
number of decimals (else ``None``: the caller falls back to psycopg, value by value, e.g. for NaN,
Infinity, ``1E+3``, ``0E-10`` or mixed scales); extended slices move the digits into groups of
four, aligned on the decimal point; and integer arithmetic on the whole chunk as one big number
turns each group of four ASCII digits into its base-10000 value (SWAR: pairs of digits, then pairs
of pairs).

The result for each value is the field psycopg would send, except that it may carry leading zero
base-10000 digits (the values are padded to one width) and trailing zero digits (up to the next
group of four decimals); PostgreSQL's ``numeric_recv`` strips both, so what is stored is the same
value with the same display scale (the number of decimals of the Decimal, as psycopg sends it).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from itertools import repeat

_MAX_WIDTH = 64  # longer values (rare) go through psycopg
_SIGN = bytes.maketrans(
    b"-0", b"\x40\x00"
)  # '-' -> NUMERIC_NEG (0x4000, high byte), '0' -> NUMERIC_POS
_splitters: dict[tuple[int, int], struct.Struct] = {}


@lru_cache(maxsize=16)  # a few sizes recur: chunks of one size, a few widths
def _constants(size: int) -> tuple[int, int, int]:
    """ASCII '0' in every byte, a mask of the low byte of each 16-bit lane, of the low 16 bits of
    each 32-bit lane; `size` bytes each."""
    return (
        int.from_bytes(b"0" * size, "big"),
        int.from_bytes(b"\x00\xff" * (size // 2), "big"),
        int.from_bytes(b"\x00\x00\xff\xff" * (size // 4), "big"),
    )


def encode_decimals(values: list, width: int = 0) -> tuple[tuple[bytes, ...], int] | None:
    """(the binary numeric field of each Decimal of `values`, the width used), or None if they are
    not all plain numbers with the same number of decimals (the caller then encodes them one by
    one). `values`: Decimals (not subclasses), no None. `width`: the width used for the previous
    chunk of the column (0: none), tried first, which saves finding the longest value."""
    texts = list(map(str, values))
    if width:
        encoded = _encode(texts, width)
        if encoded is not None:
            return encoded, width
    width = max(map(len, texts)) + 1  # + 1: every value gets a sign slot, '-' or '0'
    encoded = _encode(texts, width) if width <= _MAX_WIDTH else None
    return None if encoded is None else (encoded, width)


def _encode(texts: list[str], width: int) -> tuple[bytes, ...] | None:
    count = len(texts)
    joined = "".join(map(str.zfill, texts, repeat(width, count))).encode()
    dot = joined.find(b".", 0, width)
    integer_digits, scale = (dot - 1, width - dot - 1) if dot > 0 else (width - 1, 0)
    # Every value `width` long: only digits, but a '-' or '0' in its sign slot and a '.' at `dot`.
    signs = joined[0::width]
    if (
        len(joined) != count * width
        or signs.translate(None, b"-0")
        or (scale and joined[dot::width].count(b".") != count)
    ):
        return None
    if len(joined.translate(None, b"0123456789")) != signs.count(b"-") + (count if scale else 0):
        return None

    # The digits of each value, zero-padded to whole groups of four on both sides of the point.
    integer_groups, fraction_groups = (integer_digits + 3) // 4, (scale + 3) // 4
    groups = integer_groups + fraction_groups
    stride = 4 * groups
    digits = bytearray(b"0" * (count * stride))
    start = stride - 4 * fraction_groups - integer_digits
    for position in range(integer_digits):
        digits[start + position :: stride] = joined[1 + position :: width]
    for position in range(scale):
        digits[4 * integer_groups + position :: stride] = joined[
            2 + integer_digits + position :: width
        ]

    # ASCII digits -> base-10000 groups, each in the low 16 bits of a 32-bit lane.
    size = count * stride
    zeros, byte_mask, pair_mask = _constants(size)
    x = int.from_bytes(digits, "big") - zeros  # one digit a byte
    x = (x >> 8 & byte_mask) * 10 + (x & byte_mask)  # two digits a 16-bit lane
    lanes = ((x >> 16 & pair_mask) * 100 + (x & pair_mask)).to_bytes(
        size, "big"
    )  # four a 32-bit lane

    # Each field: ndigits, weight, sign, dscale (int16 each), then the groups (uint16 each).
    length = 8 + 2 * groups
    fields = bytearray(
        (struct.pack(">HhHH", groups, integer_groups - 1, 0, scale) + bytes(2 * groups)) * count
    )
    for group in range(groups):
        fields[8 + 2 * group :: length] = lanes[4 * group + 2 :: stride]
        fields[9 + 2 * group :: length] = lanes[4 * group + 3 :: stride]
    fields[4::length] = joined[0::width].translate(_SIGN)
    splitter = _splitters.get((length, count))
    if splitter is None:
        if len(_splitters) > 256:
            _splitters.clear()
        splitter = _splitters[length, count] = struct.Struct(f"{length}s" * count)
    return splitter.unpack(fields)
