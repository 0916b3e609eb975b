"""The comparison of a PostgreSQL source's keys with the kept key-bucket counts in numpy
(``fetch.key_arrays``): a bucket with one delete names its key, every other differing bucket is
left to be read, whatever the sign and size of the keys."""

from __future__ import annotations

import numpy as np
import pytest

from ingest_platform.fetch import key_arrays
from ingest_platform.fetch.key_buckets import Bucketing

WIDTH = 16


def kept_of(keys: set[int], width: int = WIDTH) -> tuple[np.ndarray, ...]:
    """The kept counts of a warehouse holding `keys` (non-empty buckets only, as stored)."""
    counted = key_arrays.count_keys(np.array(sorted(keys), dtype=np.int64), width)
    assert counted is not None
    used = np.flatnonzero(counted.n)
    return used + counted.low, counted.n[used], counted.offsets[used]


def compared(source: set[int], warehouse: set[int], width: int = WIDTH):
    keys = np.array(list(source), dtype=np.int64)  # in no order, as a scan returns them
    counted = key_arrays.count_keys(keys, width)
    assert counted is not None
    return key_arrays.compare(counted, *kept_of(warehouse, width), width)


def test_buckets_truncate_toward_zero_as_the_databases_divide():
    keys = np.array([-33, -32, -17, -16, -15, -1, 0, 1, 15, 16, 17, 31, 32], dtype=np.int64)
    expected = [Bucketing(True, WIDTH).bucket_of(int(k))[0] for k in keys]
    assert key_arrays.buckets_of(keys, WIDTH).tolist() == expected
    assert key_arrays.buckets_of(keys[6:], WIDTH).tolist() == expected[6:]  # all >= 0


@pytest.mark.parametrize("low", [-300, 0, 10**15])
def test_one_delete_in_a_bucket_is_named_without_reading_it(low):
    warehouse = set(range(low, low + 600))
    gone = {low + 3, low + 40, low + 299, low + 320, low + 599}  # other buckets each
    result = compared(warehouse - gone, warehouse)
    assert result is not None
    assert result.solved == sorted(gone) and result.unsolved == []
    assert (result.source_rows, result.warehouse_rows) == (595, 600)


def test_other_differences_leave_their_bucket_to_be_read():
    warehouse = set(range(0, 320))
    source = warehouse - {33, 34}  # two deletes in bucket 2
    source -= {100}  # one in bucket 6 ...
    source |= {101 + 1000}  # ... and a key beyond the warehouse's buckets (missed)
    source -= {200}  # a delete beside a missed key in bucket 12: equal counts, other sums
    warehouse -= {201}
    result = compared(source, warehouse)
    assert result is not None
    assert result.solved == [100]
    assert result.unsolved == [2, 12, 68]
    assert result.source_keys[2] == set(range(32, 48)) - {33, 34}
    assert result.source_keys[12] == (set(range(192, 208)) - {200}) | {201}
    assert result.source_keys[68] == {1101}
    # The kept (count, key sum) of the unsolved buckets, as the keys read there are checked.
    assert result.kept[2] == (16, sum(range(32, 48)))
    assert result.kept[68] == (0, 0)


def test_a_solved_key_the_source_holds_or_outside_its_bucket_is_not_trusted():
    warehouse = set(range(0, 64))
    # Drifted kept numbers: bucket 1 claims one key more, with a sum naming key 20 (which the
    # source holds), bucket 2 one more naming key 5 (another bucket's).
    b, n, offsets = kept_of(warehouse)
    n[1] += 1
    offsets[1] += 4
    n[2] += 1
    offsets[2] += 5 - 32
    counted = key_arrays.count_keys(np.array(sorted(warehouse), dtype=np.int64), WIDTH)
    assert counted is not None
    result = key_arrays.compare(counted, b, n, offsets, WIDTH)
    assert result is not None
    assert result.solved == [] and result.unsolved == [1, 2]


def test_every_key_of_the_last_bucket_deleted_and_an_empty_source():
    warehouse = set(range(0, 65))  # bucket 4 holds key 64 only
    result = compared(warehouse - {64}, warehouse)
    assert result is not None and result.solved == [64]
    result = compared(set(), {7})
    assert result is not None and result.solved == [7] and result.source_rows == 0


def test_keys_too_far_apart_are_left_to_the_grouped_comparison():
    keys = np.array([0, key_arrays.MAX_SPAN * WIDTH], dtype=np.int64)
    assert key_arrays.count_keys(keys, WIDTH) is None
    counted = key_arrays.count_keys(keys[:1], WIDTH)
    assert counted is not None
    far = np.array([key_arrays.MAX_SPAN], dtype=np.int64)
    assert key_arrays.compare(counted, far, far * 0 + 1, far * 0, WIDTH) is None
    assert key_arrays.count_keys(keys[:1], key_arrays.MAX_WIDTH * 2) is None
