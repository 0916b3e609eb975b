"""The delete detection of an integer key from the source's keys themselves: one array,
compared with the kept key-bucket counts in numpy (``fetch.deletes`` says why counts per bucket
find the deletes).

The source sends its keys as ONE value (``PostgresSource.integer_keys``: ``array_agg``, 170 ms for
1M keys where the ``GROUP BY key / width`` of their buckets took 250-380 ms;
``MySQLSource.integer_keys``: ``GROUP_CONCAT``) and numpy counts them per bucket (20-40 ms). A
bucket with ONE key fewer in the source than in the warehouse names that key without reading it:
kept sum of the bucket minus the source's. Such a solved key is soft-deleted only if it is in its
bucket, not among the source's keys, and live in the warehouse (the caller's UPDATE must find
it): the kept numbers can then hide a delete (a hand edit; the snapshot pull's checks are the
backstop) but never delete a row the source holds. Every other differing bucket (two deletes or
more, a key in the source only) has its warehouse keys read.

Sums are of the key's offset in its bucket (``key - bucket * width``), small enough for float64
counting (``bincount``) to be exact while width stays under MAX_WIDTH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ingest_platform.fetch.sources import MySQLSource, PostgresSource

# Above this many rows (the source's estimate) the source groups its keys itself: they are held
# in memory (8 bytes a key), and PostgreSQL's array of them is 12 bytes a key, at most 1 GB.
MAX_KEYS = 20_000_000
MAX_SPAN = 1 << 22  # buckets the dense comparison spans at most (32 MB of counts)
MAX_WIDTH = 1 << 24  # offset sums of a bucket stay below 2**48: exact in float64
_ARRAY_HEADER = 20  # array_send of one dimension: ndim, flags, element oid, length, lower bound
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">i8")])


def read_source_keys(
    source: PostgresSource | MySQLSource, table: str, key: str, width: int
) -> SourceKeys | None:
    """Every key of the source table, in its connection's snapshot, counted per bucket; None
    for more than MAX_KEYS rows, or buckets too far apart: the caller groups them in the source
    instead."""
    keys = source.integer_keys(table, key, MAX_KEYS)
    return None if keys is None else count_keys(keys, width)


def int8_array(sent: bytes | None) -> np.ndarray:
    """The values of ``array_send`` of a bigint[] without NULLs (None: an empty array_agg)."""
    if not sent:
        return np.zeros(0, dtype=np.int64)
    elements = np.frombuffer(sent, dtype=_ELEMENT, offset=_ARRAY_HEADER)
    return elements["value"].astype(np.int64)


def buckets_of(keys: np.ndarray, width: int) -> np.ndarray:
    """``key / width`` truncating toward zero, as PostgreSQL and MySQL's DIV divide."""
    if not len(keys) or keys.min() >= 0:
        return keys // width
    return np.where(keys >= 0, keys // width, -((-keys) // width))


@dataclass
class SourceKeys:
    """The source's keys, counted per bucket from `low` on."""

    keys: np.ndarray
    index: np.ndarray  # each key's bucket - low
    low: int
    n: np.ndarray
    offsets: np.ndarray  # per bucket: the sum of key - bucket * width


def count_keys(keys: np.ndarray, width: int) -> SourceKeys | None:
    """None where the keys span more than MAX_SPAN buckets or these are wider than MAX_WIDTH."""
    if width > MAX_WIDTH:
        return None
    buckets = buckets_of(keys, width)
    low = int(buckets.min()) if len(keys) else 0
    size = (int(buckets.max()) if len(keys) else 0) - low + 1
    if size > MAX_SPAN:
        return None
    index = buckets - low
    offsets = np.bincount(
        index, weights=(keys - buckets * width).astype(np.float64), minlength=size
    )
    n = np.bincount(index, minlength=size)
    return SourceKeys(keys, index, low, n, np.rint(offsets).astype(np.int64))


@dataclass
class KeyComparison:
    """The source's keys against the kept counts of the child (integer buckets)."""

    solved: list[int]  # deleted keys found from their bucket's count and sum (one per bucket)
    unsolved: list[int]  # other differing buckets: their warehouse keys must be read
    source_keys: dict[int, set[int]] = field(default_factory=dict)  # of the unsolved buckets
    kept: dict[int, tuple[int, int]] = field(default_factory=dict)  # (count, key sum) of those
    source_rows: int = 0
    warehouse_rows: int = 0
    buckets: int = 0
    differing: int = 0


def compare(
    source: SourceKeys, kept_buckets: np.ndarray, kept_n: np.ndarray, kept_offsets: np.ndarray,
    width: int,
) -> KeyComparison | None:  # fmt: skip
    """None where the buckets of both sides span more than MAX_SPAN: the caller compares
    grouped counts instead."""
    keys = source.keys
    low = min(source.low, int(kept_buckets.min()) if len(kept_buckets) else source.low)
    high = source.low + len(source.n) - 1
    high = max(high, int(kept_buckets.max()) if len(kept_buckets) else high)
    size = high - low + 1
    if size > MAX_SPAN:
        return None
    shift = source.low - low
    n = np.zeros(size, dtype=np.int64)
    offsets = np.zeros(size, dtype=np.int64)
    n[shift : shift + len(source.n)] = source.n
    offsets[shift : shift + len(source.n)] = source.offsets
    ours_n = np.zeros(size, dtype=np.int64)
    ours_offsets = np.zeros(size, dtype=np.int64)
    ours_n[kept_buckets - low] = kept_n
    ours_offsets[kept_buckets - low] = kept_offsets
    missing = ours_n - n  # per bucket: keys the source lacks (negative: keys it has more)
    differing = np.flatnonzero((missing != 0) | (ours_offsets != offsets))
    one = differing[missing[differing] == 1]
    solved = (one + low) * width + (ours_offsets[one] - offsets[one])
    # A solved key must lie in its bucket and be absent from the source (else: read the bucket).
    looked_at = np.zeros(size, dtype=bool)
    looked_at[differing] = True
    near = keys[looked_at[source.index + shift]]  # the source's keys in differing buckets
    fits = (buckets_of(solved, width) == one + low) & ~np.isin(solved, near)
    unsolved = np.setdiff1d(differing, one[fits]) + low
    comparison = KeyComparison(
        solved=sorted(int(k) for k in solved[fits]),
        unsolved=[int(b) for b in unsolved],
        source_rows=len(keys),
        warehouse_rows=int(kept_n.sum()),
        buckets=int(np.count_nonzero((n != 0) | (ours_n != 0))),
        differing=len(differing),
    )
    near_buckets = buckets_of(near, width)
    pick = np.isin(near_buckets, unsolved)
    for k, b in zip(near[pick].tolist(), near_buckets[pick].tolist(), strict=True):
        comparison.source_keys.setdefault(b, set()).add(k)
    for b in comparison.unsolved:
        i = b - low
        comparison.kept[b] = (int(ours_n[i]), int(ours_offsets[i]) + int(ours_n[i]) * b * width)
    return comparison
