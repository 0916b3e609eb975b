"""ingest(): modes, watermarks, upsert and append, several tables in a batch, what readers see."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from ingest_platform import HighWatermark, Mode, ingest
from ingest_platform_tests.bulk_ingest.conftest import rows_of, stored_watermark


def item_table(metadata: sa.MetaData, schema: str | None = "app") -> sa.Table:
    return sa.Table(
        "item",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(20)),
        sa.Column("price", sa.Numeric(10, 2)),
        schema=schema,
    )


def event_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "event", metadata, sa.Column("at", sa.DateTime), sa.Column("what", sa.Text), schema="app"
    )


def test_import_does_not_load_dagster():
    code = (
        "import sys, ingest_platform; assert 'sqlalchemy' not in sys.modules\n"
        "from ingest_platform import ingest, HighWatermark, Mode\n"
        "assert callable(ingest) and 'dagster' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_upsert_each_batch_with_stored_watermark_and_resume(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    seen = []

    def batches(watermark):
        seen.append(watermark)
        start = watermark or 0
        for n in range(start + 1, start + 3):
            yield n, [(item, (n, f"v{n}", Decimal(n))), (item, (1, f"latest {n}", None))]

    with engine.connect() as conn:
        result = ingest(conn, metadata, batches)
        assert result.high_watermark == 2 and result.batches == 2
        assert result.rows == {"app.item": 4} and result.mode is Mode.UPSERT_COMMITTING_EACH_BATCH
        assert result.migrations == {"app.item": ["create table app.item"]}
        again = ingest(conn, metadata, batches)  # resumes from the stored watermark
    assert seen == [None, 2]
    assert again.high_watermark == 4 and again.migrations == {}
    assert rows_of(pg, "app.item") == [
        (1, "latest 4", None),
        (2, "v2", Decimal("2.00")),
        (3, "v3", Decimal("3.00")),
        (4, "v4", Decimal("4.00")),
    ]
    assert stored_watermark(pg, "app") == {"app.item": 4}


def test_last_row_of_a_key_wins_within_a_batch(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    rows = [(item, (k, f"first {k}", None)) for k in range(1, 4)] + [
        (item, (2, "second", None)),
        (item, (2, "third", Decimal(3))),
    ]
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, rows)])
    assert rows_of(pg, "app.item") == [
        (1, "first 1", None),
        (2, "third", Decimal("3.00")),
        (3, "first 3", None),
    ]


@pytest.mark.parametrize("analyzed", [False, True], ids=["planner-joins", "index-lookups"])
def test_last_row_of_a_key_wins_in_a_table_that_has_rows(engine, pg, analyzed):
    """The merge into a table with rows (MERGE on PostgreSQL 15+) meets a key that is there twice
    and a new key twice: it runs again on the de-duplicated batch. Analyzed, the table is large
    against the batch, which is then joined by index lookups."""
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(item, (k, "old", None)) for k in range(1, 201)])])
        if analyzed:
            pg.execute("ANALYZE app.item")
        for rows in (
            [(item, (5, "new", None)), (item, (7, "x", None)), (item, (5, "newer", Decimal(5)))],
            [(item, (300, "a", None)), (item, (301, "b", None)), (item, (300, "c", Decimal(1)))],
        ):
            ingest(conn, metadata, lambda w, rows=rows: [((w or 0) + 1, rows)])
    assert rows_of(pg, "app.item WHERE name <> 'old'") == [
        (5, "newer", Decimal("5.00")),
        (7, "x", None),
        (300, "c", Decimal("1.00")),
        (301, "b", None),
    ]
    assert pg.execute("SELECT count(*) FROM app.item").fetchone() == (202,)


def test_table_without_primary_key_appends_and_batches_hold_several_tables(engine, pg):
    metadata = sa.MetaData()
    item, event = item_table(metadata), event_table(metadata)
    at = dt.datetime(2024, 5, 1, 12, 0)

    def batches(watermark):
        rows = []
        for n in range(25):  # interleaved, more than buffer_rows of each: several COPYs per table
            rows += [(event, (at, f"e{n}")), (item, (n, None, None)), (event, (at, f"again {n}"))]
        yield at, rows

    with engine.connect() as conn:
        result = ingest(conn, metadata, batches, buffer_rows=4)
        ingest(conn, metadata, lambda w: [(w + dt.timedelta(days=1), [(event, (at, "next day"))])])
    assert result.rows == {"app.event": 50, "app.item": 25}
    assert pg.execute("SELECT count(*), count(DISTINCT what) FROM app.event").fetchone() == (51, 51)
    assert pg.execute("SELECT count(*) FROM app.item").fetchone() == (25,)
    assert stored_watermark(pg, "app") == {"app.event,app.item": at + dt.timedelta(days=1)}


def test_explicit_watermark_and_earliest_and_key(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata, schema=None)
    seen = []

    def batches(watermark):
        seen.append(watermark)
        return [((watermark or ("a", 0))[:1] + (7,), [(item.key, (7, "by key", None))])]

    with engine.connect() as conn:
        ingest(conn, metadata, batches, high_watermark=("a", 1), watermark_key="items")
        ingest(
            conn, metadata, batches, high_watermark=HighWatermark.EARLIEST, watermark_key="items"
        )
    assert seen == [("a", 1), None]
    assert stored_watermark(pg, "public") == {"items": ("a", 7)}
    assert rows_of(pg, "public.item") == [(7, "by key", None)]


@pytest.mark.parametrize(
    "mode",
    [
        Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH,
        Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
    ],
)
def test_delete_all_rows_modes_replace_the_rows(engine, pg, mode):
    metadata = sa.MetaData()
    item, event = item_table(metadata), event_table(metadata)
    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            lambda w: [
                (1, [(item, (k, "old", None)) for k in range(5)] + [(event, (None, "old"))])
            ],
        )
        result = ingest(
            conn,
            metadata,
            lambda w: [(2, [(item, (9, "new", None))]), (3, [(item, (10, "new", None))])],
            ingest_mode=mode,
        )
    assert result.batches == 2 and result.high_watermark == 3
    assert rows_of(pg, "app.item") == [(9, "new", None), (10, "new", None)]
    assert rows_of(pg, "app.event") == []


def names_a_reader_sees(pg_dsn) -> list:
    """app.item's names, read on a connection of its own while an ingest runs: ACCESS SHARE NOWAIT
    fails at once if the ingest held or waited for a stronger lock."""
    with psycopg.connect(pg_dsn) as reader:
        reader.execute("LOCK TABLE app.item IN ACCESS SHARE MODE NOWAIT")
        return sorted(reader.execute("SELECT name FROM app.item").fetchall())


def test_each_batch_is_visible_when_it_commits_and_readers_are_not_blocked(engine, pg, pg_dsn):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(0, [(item, (k, "old", None)) for k in range(3)])])
    seen = []

    def look():
        seen.append(names_a_reader_sees(pg_dsn))

    def rows(batch):
        yield item, (100 + batch, "new", None)
        look()
        yield item, (200 + batch, "new", None)

    def batches(watermark):
        for batch in (1, 2):
            yield batch, rows(batch)

    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            batches,
            ingest_mode=Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH,
        )
    assert seen[0] == [("old",)] * 3  # batch 1 (which deletes) not committed yet
    assert seen[1] == [("new",)] * 2  # batch 1 committed: the new rows only


def test_after_final_batch_readers_see_old_rows_until_the_end(engine, pg, pg_dsn):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(0, [(item, (k, "old", None)) for k in range(3)])])
    seen = []

    def look():
        seen.append(names_a_reader_sees(pg_dsn))

    def batches(watermark):
        for batch in (1, 2, 3):
            look()
            yield batch, [(item, (10 * batch + k, "new", None)) for k in range(2)]
        look()

    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            batches,
            ingest_mode=Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
        )
    assert seen == [[("old",)] * 3] * 4
    assert rows_of(pg, "app.item") == [(k, "new", None) for k in (10, 11, 20, 21, 30, 31)]
    assert stored_watermark(pg, "app") == {"app.item": 3}


def test_after_final_batch_failure_keeps_everything(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(0, [(item, (1, "old", None))])])

    def batches(watermark):
        yield 1, [(item, (2, "new", None))]
        yield 2, [(item, (3, "x" * 50, None))]  # too long for varchar(20)

    with engine.connect() as conn, pytest.raises(Exception, match="too long"):
        ingest(
            conn,
            metadata,
            batches,
            ingest_mode=Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
        )
    assert rows_of(pg, "app.item") == [(1, "old", None)]
    assert stored_watermark(pg, "app") == {"app.item": 0}


def test_no_batches_changes_nothing(engine, pg):
    metadata = sa.MetaData()
    item = item_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(0, [(item, (1, "old", None))])])
        result = ingest(
            conn,
            metadata,
            lambda w: [],
            ingest_mode=Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
        )
    assert result.batches == 0 and result.high_watermark == 0
    assert rows_of(pg, "app.item") == [(1, "old", None)]


def test_value_types_roundtrip_and_quoted_names(engine, pg):
    metadata = sa.MetaData()
    odd = sa.Table(
        'we"ird table',
        metadata,
        sa.Column("Key Col", sa.BigInteger, primary_key=True),
        sa.Column("js", sa.dialects.postgresql.JSONB),
        sa.Column("tags", sa.ARRAY(sa.Text)),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("flag", sa.Boolean),
        sa.Column("raw", sa.LargeBinary),
        sa.Column("d", sa.Date),
        schema="Sch ema",
    )
    at = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    row = (1, {"a": [1, "x"]}, ["a", "b\tc"], at, True, b"\x00\x01", dt.date(2024, 1, 2))
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(dt.date(2024, 1, 2), [(odd, row)])])
    assert pg.execute('SELECT * FROM "Sch ema"."we""ird table"').fetchone() == row
    assert stored_watermark(pg, "Sch ema") == {'Sch ema.we"ird table': dt.date(2024, 1, 2)}


def test_connection_in_a_transaction_is_refused(engine):
    metadata = sa.MetaData()
    item_table(metadata)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        with pytest.raises(Exception, match="not in a transaction"):
            ingest(conn, metadata, lambda w: [])
