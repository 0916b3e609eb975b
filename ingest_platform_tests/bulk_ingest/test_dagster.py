"""The Dagster factory: an asset that ingests, its materialization metadata, a schedule and a
sensor."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from ingest_platform import Mode
from ingest_platform.defs.bulk_ingest import (
    BulkIngestResource,
    bulk_ingest_asset,
    bulk_ingest_schedule,
    bulk_ingest_sensor,
)
from ingest_platform.postgres import etl_log
from ingest_platform_tests.bulk_ingest.conftest import rows_of

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("note", sa.Text),
    schema="shop",
)
lines = sa.Table(
    "order_line",
    metadata,
    sa.Column("order_id", sa.Integer),
    sa.Column("sku", sa.Text),
    schema="shop",
)


def order_batches(watermark):
    start = watermark or 0
    for n in range(start + 1, start + 3):
        yield n, [(orders, (n, f"order {n}")), (lines, (n, "a")), (lines, (n, "b"))]


orders_asset = bulk_ingest_asset(
    "shop/orders",
    metadata,
    order_batches,
    group_name="shop",
    ingest_mode=Mode.UPSERT_COMMITTING_EACH_BATCH,
)


def test_asset_materializes_with_watermark_rows_and_mode_in_metadata(pg_dsn, pg):
    resources = {"bulk_ingest": BulkIngestResource(dsn=pg_dsn)}
    for expected_watermark in ("2", "4"):
        result = dg.materialize([orders_asset], resources=resources)
        assert result.success
        materialization = result.asset_materializations_for_node(orders_asset.op.name)[0]
        meta = {k: v.value for k, v in materialization.metadata.items()}
        assert meta["high_watermark"] == expected_watermark
        assert meta["batches"] == 2 and meta["mode"] == "UPSERT_COMMITTING_EACH_BATCH"
        assert (
            meta["rows"] == 6
            and meta["rows/shop.orders"] == 2
            and meta["rows/shop.order_line"] == 4
        )
    assert "migrations" not in meta  # the second run created nothing
    assert rows_of(pg, "shop.orders") == [(n, f"order {n}") for n in range(1, 5)]


def test_schedule_and_sensor_load_and_the_sensor_requests_runs_on_new_data():
    schedule = bulk_ingest_schedule(orders_asset, "*/15 * * * *")
    markers = iter(["2024-01-01", "2024-01-01", None, "2024-01-02"])
    sensor = bulk_ingest_sensor(orders_asset, probe=lambda: next(markers))
    defs = dg.Definitions(
        assets=[orders_asset],
        schedules=[schedule],
        sensors=[sensor],
        resources={"bulk_ingest": BulkIngestResource(dsn="host=unused")},
    )
    dg.Definitions.validate_loadable(defs)
    assert schedule.name == "shop__orders_schedule" and sensor.name == "shop__orders_sensor"

    cursor, outcomes = None, []
    for _ in range(4):
        context = dg.build_sensor_context(cursor=cursor)
        outcome = sensor(context)
        cursor = context.cursor
        outcomes.append(type(outcome).__name__)
    assert outcomes == ["RunRequest", "SkipReason", "SkipReason", "RunRequest"]
    assert cursor == "2024-01-02"


def test_the_etl_log_rows_of_a_run_carry_its_run_id(pg_dsn, pg):
    resources = {"bulk_ingest": BulkIngestResource(dsn=pg_dsn)}
    result = dg.materialize([orders_asset], resources=resources)
    assert result.success
    logged = pg.execute(
        'SELECT table_name, rows, run_id FROM "_ingest_meta".etl_log ORDER BY id'
    ).fetchall()
    assert logged == [
        ("shop.order_line", 2, result.run_id), ("shop.orders", 1, result.run_id),
    ] * 2  # fmt: skip
    assert etl_log.current_run_id() is None  # the run is over: later records carry no id
