"""Bad input: a clear error, the batch rolled back, the stored watermark unchanged, the table as
before."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
import sqlalchemy as sa

from ingest_platform import ingest
from ingest_platform.errors import IngestError, SchemaError
from ingest_platform_tests.bulk_ingest.conftest import rows_of, stored_watermark

AMOUNT = sa.Numeric(10, 2)


def make_metadata(amount_type=AMOUNT) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    item = sa.Table(
        "item",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("qty", sa.SmallInteger),
        sa.Column("amount", amount_type),
        schema="app",
    )
    log = sa.Table("log", metadata, sa.Column("line", sa.Text), schema="app")
    return metadata, item, log


BEFORE_ITEMS = [(1, 1, Decimal("1.50")), (2, 2, Decimal("2.50"))]


@pytest.fixture
def loaded(engine):
    """Tables with two items and one log line, watermark 1 stored; a first good batch of a second
    run (watermark 2) precedes each bad batch, so the test also shows where the rollback stops."""
    metadata, item, log = make_metadata()
    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            lambda w: [(1, [(item, row) for row in BEFORE_ITEMS] + [(log, ("one",))])],
        )
    return metadata, item, log


def run_bad_batch(engine, metadata, bad_rows, bad_watermark=3):
    item = metadata.tables["app.item"]

    def batches(watermark):
        yield 2, [(item, (3, 3, Decimal("3.00")))]
        yield bad_watermark, [(item, (1, 9, Decimal("9.99"))), *bad_rows]

    with engine.connect() as conn:
        ingest(conn, metadata, batches)


def assert_unchanged_since_good_batch(pg):
    assert rows_of(pg, "app.item") == BEFORE_ITEMS + [(3, 3, Decimal("3.00"))]
    assert rows_of(pg, "app.log") == [("one",)]
    assert stored_watermark(pg, "app") == {"app.item,app.log": 2}


def test_row_with_too_many_values(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(
        IngestError,
        match=r"Row 2 of app.item in this batch has 4 values, the table has 3 columns "
        r"\(id, qty, amount\)",
    ):
        run_bad_batch(engine, metadata, [(item, (4, 4, Decimal(4), "extra"))])
    assert_unchanged_since_good_batch(pg)


def test_row_with_too_few_values_in_a_second_table(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(IngestError, match=r"Row 1 of app.log in this batch has 0 values"):
        run_bad_batch(engine, metadata, [(log, ())])
    assert_unchanged_since_good_batch(pg)


def test_value_of_the_wrong_type(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(
        IngestError,
        match=r'Row 3 of app.item in this batch: column "amount" \(numeric\) cannot '
        r"take the str 'lots'",
    ):
        run_bad_batch(engine, metadata, [(item, (4, 4, Decimal(4))), (item, (5, 5, "lots"))])
    assert_unchanged_since_good_batch(pg)


def test_integer_out_of_range_for_its_column(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(
        IngestError,
        match=r'Row 2 of app.item in this batch: column "qty" \(int2\) cannot hold '
        r"40000: out of range",
    ):
        run_bad_batch(engine, metadata, [(item, (4, 40000, None))])
    assert_unchanged_since_good_batch(pg)


def test_value_the_server_rejects_names_row_and_column(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(
        IngestError,
        match=r'row 3 of app.item in this batch, column "amount": .*numeric field '
        r"overflow",
    ):
        run_bad_batch(
            engine, metadata, [(item, (4, 4, Decimal(4))), (item, (5, 5, Decimal("1e12")))]
        )
    assert_unchanged_since_good_batch(pg)


def test_null_primary_key(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(IngestError, match=r'row 2 of app.item in this batch.*"id"'):
        run_bad_batch(engine, metadata, [(item, (None, 4, None))])
    assert_unchanged_since_good_batch(pg)


def test_table_not_in_the_metadata(engine, pg, loaded):
    metadata, item, log = loaded
    stranger = sa.Table("stranger", sa.MetaData(), sa.Column("x", sa.Integer), schema="app")
    with pytest.raises(
        IngestError,
        match=r"names the table 'app.stranger', which is not in the metadata .*"
        r"\(its tables: app.item, app.log\)",
    ):
        run_bad_batch(engine, metadata, [(stranger, (1,))])
    assert_unchanged_since_good_batch(pg)


def test_batch_item_that_is_not_a_pair(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(IngestError, match=r"not a \(table, row_tuple\) pair"):
        run_bad_batch(engine, metadata, [(item, (4, 4, None), "third")])
    assert_unchanged_since_good_batch(pg)


@pytest.mark.parametrize(
    "watermark, message",
    [
        (2, r"Batch 2 has the high watermark 2, which does not increase on the previous one, 2"),
        (1, r"Batch 2 has the high watermark 1, which does not increase"),
        (None, r"Batch 2 has the high watermark None after 2"),
        ("3", r"Batch 2 has the high watermark '3' \(str\), which cannot be compared"),
    ],
)
def test_watermark_that_does_not_increase(engine, pg, loaded, watermark, message):
    metadata, item, log = loaded
    with pytest.raises(IngestError, match=message):
        run_bad_batch(engine, metadata, [], bad_watermark=watermark)
    assert_unchanged_since_good_batch(pg)


def test_first_batch_watermark_not_after_the_stored_one(engine, pg, loaded):
    metadata, item, log = loaded
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError,
            match="Batch 1 has the high watermark 1, which does "
            "not increase on the previous one, 1",
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, [(item, (9, 9, None))])])
    assert rows_of(pg, "app.item") == BEFORE_ITEMS
    assert stored_watermark(pg, "app") == {"app.item,app.log": 1}


def test_watermark_that_cannot_be_stored(engine, pg, loaded):
    metadata, item, log = loaded
    with pytest.raises(IngestError, match="A high watermark of type Fraction cannot be stored"):
        run_bad_batch(engine, metadata, [], bad_watermark=Fraction(5, 2))
    assert_unchanged_since_good_batch(pg)


def test_migration_that_would_lose_data(engine, pg, loaded):
    # amount numeric(10,2) -> integer would round 1.50 and 2.50.
    metadata, item, log = make_metadata(amount_type=sa.Integer)
    with (
        engine.connect() as conn,
        pytest.raises(
            SchemaError,
            match=r'app.item: column "amount" cannot change from '
            r"numeric\(10,2\) to INTEGER without losing data: "
            r"the value '1.50' would change",
        ),
    ):
        ingest(conn, metadata, lambda w: [(2, [(item, (3, 3, 3))])])
    assert rows_of(pg, "app.item") == BEFORE_ITEMS
    assert pg.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
        "'app.item'::regclass "
        "AND attname = 'amount'"
    ).fetchone() == ("numeric(10,2)",)
    assert stored_watermark(pg, "app") == {"app.item,app.log": 1}


def test_migration_with_a_type_that_does_not_cast(engine, pg, loaded):
    metadata, item, log = make_metadata(amount_type=sa.Date)
    with (
        engine.connect() as conn,
        pytest.raises(
            SchemaError,
            match=r'column "amount" cannot change from '
            r"numeric\(10,2\) to DATE: cannot cast",
        ),
    ):
        ingest(conn, metadata, lambda w: [(2, [])])
    assert rows_of(pg, "app.item") == BEFORE_ITEMS
    assert stored_watermark(pg, "app") == {"app.item,app.log": 1}
