"""A CDC merge writes one ETL log row per merged table, in the merge's transaction."""

from __future__ import annotations

from ingest_platform.cdc import pipeline
from ingest_platform_tests.cdc.test_pipeline import run, workload


def test_each_merge_writes_one_row_in_its_transaction(cdc_env):
    run(cdc_env, "pm_item")
    workload(cdc_env, 30)
    item = cdc_env.table("pm_item")
    pipeline.stage_changes(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, item)
    merged = pipeline.merge_staged(cdc_env.warehouse_dsn, cdc_env.config, item)
    assert not pipeline.merge_staged(cdc_env.warehouse_dsn, cdc_env.config, item).merged
    with cdc_env.warehouse() as conn:
        rows = conn.execute(
            "SELECT kind, table_name, rows, version, (xid::text::bigint % 4294967296)::text"
            ' FROM "_ingest_meta".etl_log ORDER BY id'
        ).fetchall()
        watermark_xmin = conn.execute(
            "SELECT xmin::text FROM cdc._cdc_watermark WHERE table_name = 'pm_item'"
        ).fetchone()[0]
    table = f"cdc.{item.merged_table}"
    assert [r[:2] for r in rows] == [("cdc_merge", table)] * 2  # the merge that did nothing: none
    assert rows[1][2] == merged.counts.rows_merged and rows[1][3] == str(merged.watermark)
    assert rows[1][4] == watermark_xmin  # the watermark moved in the log row's transaction
