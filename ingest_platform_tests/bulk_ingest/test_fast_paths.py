"""The fast paths of ingest(): the compiled row loop, the direct COPY of an upsert into an empty
table (and its replay through staging when the COPY fails), the plain INSERT into an empty table."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from ingest_platform import Mode, ingest
from ingest_platform.bulk_ingest import upsert
from ingest_platform.errors import IngestError
from ingest_platform_tests.bulk_ingest.conftest import rows_of, stored_watermark


def item_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "item",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("qty", sa.SmallInteger),
        sa.Column("note", sa.Text),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        schema="app",
    )


@pytest.fixture
def staging_tables(monkeypatch):
    """Counts the staging tables made (a direct COPY makes none)."""
    made = []
    original = upsert.create_staging

    def counting(conn, target):
        made.append(target.display)
        return original(conn, target)

    monkeypatch.setattr(upsert, "create_staging", counting)
    return made


def test_upsert_into_an_empty_table_copies_straight_into_it(engine, pg, staging_tables):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            lambda w: [(1, [(item, (k, k, f"n{k}", Decimal(k))) for k in range(1, 4)])],
        )
        assert staging_tables == []
        ingest(
            conn,
            metadata,
            lambda w: [
                (2, [(item, (2, 20, "new", Decimal(20))), (item, (9, 9, None, Decimal(9)))])
            ],
        )
    assert staging_tables == ["app.item"]  # not empty any more: staging and ON CONFLICT
    assert rows_of(pg, "app.item") == [
        (1, 1, "n1", Decimal("1.00")),
        (2, 20, "new", Decimal("20.00")),
        (3, 3, "n3", Decimal("3.00")),
        (9, 9, None, Decimal("9.00")),
    ]


def test_direct_copy_that_meets_a_repeated_key_mid_stream_is_replayed_through_staging(
    engine, pg, staging_tables
):
    # Enough rows that the server rejects the COPY while the client is still sending.
    metadata = sa.MetaData()
    item = item_table(metadata)
    count = 60_000
    note = "x" * 100

    def rows():
        yield item, (1, 1, "first", Decimal(1))
        yield item, (1, 2, "second", Decimal(2))  # repeats key 1: the last row wins
        for k in range(2, count + 1):
            yield item, (k, k % 30000, note, Decimal(k))
        yield item, (5, 5, "again", Decimal(5))

    def batches(watermark):
        yield 1, rows()
        yield 2, [(item, (count + 1, 1, "next", Decimal(1)))]

    with engine.connect() as conn:
        result = ingest(conn, metadata, batches)
    assert result.rows == {"app.item": count + 3}
    assert staging_tables == [
        "app.item",
        "app.item",
    ]  # replayed; the next batch goes through staging
    assert pg.execute("SELECT count(*), sum(id) FROM app.item").fetchone() == (
        count + 1,
        (count + 1) * (count + 2) // 2,
    )
    assert pg.execute(
        "SELECT id, qty, note FROM app.item WHERE id IN (1, 5) ORDER BY id"
    ).fetchall() == [(1, 2, "second"), (5, 5, "again")]
    assert stored_watermark(pg, "app") == {"app.item": 2}


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (
            (3, 3, None, None),
            r'row 3 of app.item in this batch: null value in column "price" .*not-null',
        ),
        (
            (3, 3, None, Decimal("1e9")),
            r'row 3 of app.item in this batch, column "price": .*numeric field overflow',
        ),
    ],
)
def test_direct_copy_rejected_by_the_server_names_row_and_column(engine, pg, bad_row, message):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn, pytest.raises(IngestError, match=message):
        ingest(
            conn,
            metadata,
            lambda w: [
                (
                    1,
                    [
                        (item, (1, 1, None, Decimal(1))),
                        (item, (2, 2, None, Decimal(2))),
                        (item, bad_row),
                    ],
                )
            ],
        )
    assert rows_of(pg, "app.item") == []
    assert stored_watermark(pg, "app") is None or stored_watermark(pg, "app") == {}


def test_direct_copy_client_errors_name_row_and_column(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    rows = [(item, (1, 1, None, Decimal(1))), (item, (2, 70000, None, Decimal(2)))]
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError,
            match=r'Row 2 of app.item in this batch: column "qty" '
            r"\(int2\) cannot hold 70000: out of range",
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, rows)])
    rows = [(item, (1, 1, None, Decimal(1))), (item, (2, 2, 5, Decimal(2)))]
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError,
            match=r'Row 2 of app.item in this batch: column "note" '
            r"\(text\) cannot take the int 5",
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, rows)])
    rows = [(item, (1, 1, None, Decimal(1))), (item, (2, "2", None, Decimal(2)))]
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError,
            match=r'Row 2 of app.item in this batch: column "qty" '
            r"\(int2\) takes int, not str",
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, rows)])
    assert rows_of(pg, "app.item") == []


@pytest.mark.parametrize(
    "mode",
    [
        Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH,
        Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
    ],
)
def test_delete_all_rows_then_direct_copy_of_the_same_keys(engine, pg, staging_tables, mode):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            lambda w: [(1, [(item, (k, k, "old", Decimal(k))) for k in range(1, 4)])],
        )
        ingest(
            conn,
            metadata,
            lambda w: [
                (2, [(item, (k, k, "new", Decimal(k))) for k in range(2, 5)]),
                (3, [(item, (4, 40, "newer", Decimal(4)))]),
            ],
            ingest_mode=mode,
        )
    assert staging_tables == ["app.item"]  # batch 1 after the DELETE went straight in; batch 2 not
    assert rows_of(pg, "app.item") == [
        (2, 2, "new", Decimal("2.00")),
        (3, 3, "new", Decimal("3.00")),
        (4, 40, "newer", Decimal("4.00")),
    ]


def test_several_tables_into_empty_tables_use_a_plain_insert_then_on_conflict(
    engine, pg, staging_tables
):
    metadata = sa.MetaData()
    item = item_table(metadata)
    log = sa.Table("log", metadata, sa.Column("line", sa.Text), schema="app")
    rows = [
        (item, (1, 1, "a", Decimal(1))),
        (log, ("x",)),
        (item, (2, 2, "b", Decimal(2))),
        (item, (1, 3, "c", Decimal(3))),
    ]  # key 1 twice: the plain INSERT fails, DISTINCT ON wins
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, rows), (2, [(item, (3, 3, "d", Decimal(3)))])])
        ingest(conn, metadata, lambda w: [(3, [(item, (4, 4, "e", Decimal(4)))])])
    assert staging_tables == ["app.item"] * 3
    assert rows_of(pg, "app.item") == [
        (1, 3, "c", Decimal("3.00")),
        (2, 2, "b", Decimal("2.00")),
        (3, 3, "d", Decimal("3.00")),
        (4, 4, "e", Decimal("4.00")),
    ]
    assert rows_of(pg, "app.log") == [("x",)]


def test_rows_given_by_table_key_and_interleaved_use_the_compiled_loop(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    sa.Table("log", metadata, sa.Column("line", sa.Text), schema="app")
    rows = []
    for k in range(30):
        rows += [
            (item.key if k % 2 else item, (k, None, None, Decimal(k))),
            ("app.log", (f"line {k}",)),
        ]
    with engine.connect() as conn:
        result = ingest(conn, metadata, lambda w: [(1, rows)], buffer_rows=7)
    assert result.rows == {"app.item": 30, "app.log": 30}
    assert [r[0] for r in rows_of(pg, "app.item")] == list(range(30))
    assert len(rows_of(pg, "app.log")) == 30


def test_table_keys_built_per_row_route_each_row_to_its_own_table(engine, pg):
    # Fresh key strings are freed after their row: their id() may come back as another table's key.
    metadata = sa.MetaData()
    item = item_table(metadata)
    sa.Table("log", metadata, sa.Column("line", sa.Text), schema="app")

    def rows():
        for k in range(300):
            yield "".join(("app.", "item")), (k, None, None, Decimal(k))
            yield "".join(("app.", "log")), (f"line {k}",)

    with engine.connect() as conn:
        result = ingest(conn, metadata, lambda w: [(1, rows())], buffer_rows=50)
    assert result.rows == {"app.item": 300, "app.log": 300}
    assert len(rows_of(pg, "app.log")) == 300 and item is not None
