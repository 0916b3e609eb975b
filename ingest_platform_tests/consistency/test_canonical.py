"""Canonical row text: a text that may hold the separator carries its length, the others go as they
are, and the form reads back into the same fields."""

from __future__ import annotations

import pytest

from ingest_platform.bigquery.types import MirrorColumn
from ingest_platform.consistency.canonical import NULL_MARK, parse_canonical, readable


def canonical(fields: list[str | None], lengths: list[bool]) -> str:
    """What pg_canonical_of / bq_canonical_of compute, in Python."""
    return "|".join(
        NULL_MARK if f is None else f"{len(f)}:{f}" if n else f
        for f, n in zip(fields, lengths, strict=True)
    )


@pytest.mark.parametrize(
    ("fields", "lengths"),
    [
        (["12", "a|b", None, "NaN", ""], [False, True, True, False, False]),
        ([None, "N", "N|N", "-1.5"], [False, True, True, False]),
        (["", "", None], [True, False, False]),
        (["0"], [False]),
        ([None], [True]),
    ],
)
def test_canonical_forms_read_back(fields, lengths):
    assert parse_canonical(canonical(fields, lengths), lengths) == fields


def test_forms_of_different_rows_differ():
    """A string holding separators or the NULL mark cannot pass for other fields."""
    lengths = [True, False]
    rows = (["a|1", "2"], ["a", "1"], [None, "2"], ["N", "2"], ["", "2"])
    forms = {canonical(row, lengths) for row in rows}
    assert len(forms) == 5
    with pytest.raises(ValueError, match="not a canonical form"):
        parse_canonical("1:a|2|3", lengths)


@pytest.mark.parametrize(
    ("kind", "text", "shown"),
    [
        ("date", "20785", "2026-11-28"),
        ("date", "-1", "1969-12-31"),
        ("timestamp", "1796080200000000", "2026-11-30T23:10:00+00:00"),
        ("datetime", "0", "1970-01-01T00:00:00"),
        ("int64", "20785", "20785"),
        ("date", None, None),
        ("date", "99999999999", "99999999999"),  # beyond dates: left as it is
    ],
)
def test_key_fields_in_reports_read_as_people_write_them(kind, text, shown):
    column = MirrorColumn("k", "date", "k", "DATE", kind)
    assert readable(column, text) == shown
