"""Watermark values survive the JSON column with their types."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from ingest_platform.bulk_ingest.watermarks import check_increases, decode, encode
from ingest_platform.errors import IngestError


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        7,
        2.5,
        "abc",
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        dt.date(2024, 1, 2),
        dt.time(1, 2, 3),
        Decimal("12.340"),
        ("a", 3, dt.date(2024, 1, 1)),
        [1, "x"],
        {"lsn": 5, "at": dt.date(2024, 1, 1)},
    ],
)
def test_roundtrip(value):
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value and type(back) is type(value)


def test_increase_rules():
    check_increases(None, 1, 1)
    check_increases(None, None, 1)
    check_increases(("a", 1), ("a", 2), 3)
    with pytest.raises(
        IngestError, match="Batch 3 has the high watermark 1, which does not increase"
    ):
        check_increases(1, 1, 3)
