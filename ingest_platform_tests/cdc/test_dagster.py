"""CDC through Dagster: generated assets, metadata, checks, the sensor; the demo-app command;
config."""

from __future__ import annotations

import argparse

import dagster as dg
import psycopg
import pytest

from ingest_platform.cdc import pipeline
from ingest_platform.cdc.config import (
    DEMO_TABLES,
    cdc_config_from_env,
    cdc_tables_from_env,
    parse_cdc_config,
    source_dsn_from_env,
)
from ingest_platform.defs.cdc import (
    DELETED_CHECK,
    JOB_NAME,
    MATCHES_SOURCE_CHECK,
    RESYNC_JOB_NAME,
    STAGING_EMPTY_CHECK,
    CdcSourceResource,
    CdcTranslator,
    build_cdc_definitions,
    evaluate_cdc_sensor,
)
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.errors import ConfigError
from ingest_platform.local import cdc_command
from ingest_platform_tests.cdc.test_pipeline import workload

SCHEMA_CHANGE_CHECK = "column_schema_change"  # dg.build_column_schema_change_checks' name


def definitions(env) -> dg.Definitions:
    return dg.Definitions.merge(
        build_cdc_definitions(
            env.config, source=CdcSourceResource(dsn=env.source_dsn), wait_seconds=1.0
        ),
        dg.Definitions(resources={"postgres": PostgresResource(dsn=env.warehouse_dsn)}),
    )


def merged_rows(env, table: str) -> int:
    with psycopg.connect(env.warehouse_dsn) as conn:
        return conn.execute(
            f'SELECT count(*) FROM {env.config.warehouse_schema}."{table}"'
        ).fetchone()[0]


def test_assets_checks_and_metadata(cdc_env):
    defs = definitions(cdc_env)
    dg.Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    tables = cdc_env.config.tables
    assert {k for k in keys if k.path[0] == "cdc"} == {
        dg.AssetKey(["cdc", name]) for t in tables for name in (t.name, t.staging_table)
    }
    # The source tables and the change log are external assets, upstream of staging.
    assert {k for k in keys if k.path[0] == "cdc_source"} == {
        dg.AssetKey(["cdc_source", f"{t.source_schema}.{t.source_table}"]) for t in tables
    } | {dg.AssetKey(["cdc_source", "public.models_logging_change"])}
    job = defs.resolve_job_def(JOB_NAME)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        workload(cdc_env, 60)
        result = job.execute_in_process(instance=instance)
        assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.path[1], e.check_name) for e in evaluations} == {
        (t.name, c)
        for t in cdc_env.config.tables
        for c in (MATCHES_SOURCE_CHECK, DELETED_CHECK, STAGING_EMPTY_CHECK, SCHEMA_CHANGE_CHECK)
    }
    assert all(e.passed for e in evaluations), [
        (e.asset_key, e.check_name, e.description) for e in evaluations if not e.passed
    ]
    meta = {}
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        meta[m.asset_key.path[-1]] = {k: v.value for k, v in m.metadata.items()}
    merged = meta["pm_item"]
    assert (
        merged["watermark"] > 0
        and merged["rows_merged"] > 0
        and merged["lag_seconds"] >= 0
        and "seconds" in merged
    )
    assert merged["dagster/row_count"] == merged_rows(cdc_env, "pm_item")
    assert merged["dagster/table_name"] == "cdc.pm_item"
    assert [c.name for c in merged["dagster/column_schema"].columns][-3:] == [
        "is_deleted",
        "_last_change_id",
        "_applied_at",
    ]
    staged = meta["pm_item__staging"]
    assert staged["changes_changed"] + staged["changes_added"] + staged["changes_deleted"] > 0
    # Each run observes the external upstreams: the change log's head, the source's statistics.
    observed = {
        e.asset_observation_data.asset_observation.asset_key.path[-1]: e.asset_observation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    }
    log_seen = observed["public.models_logging_change"].asset_observation
    assert log_seen.tags["dagster/data_version"] == str(staged["max_change_id"])
    with psycopg.connect(cdc_env.source_dsn) as conn:
        head = conn.execute("SELECT max(id) FROM public.models_logging_change").fetchone()[0]
    assert log_seen.metadata["max_change_id"].value == head
    source = next(t for t in tables if t.name == "pm_item")
    item_seen = observed[f"{source.source_schema}.{source.source_table}"].asset_observation
    assert item_seen.metadata["writes_since_stats_reset"].value > 0


def test_sensor_requests_pending_tables_only_once_per_watermark(cdc_env):
    config = cdc_env.config
    pending = pipeline.pending_tables(cdc_env.source_dsn, cdc_env.warehouse_dsn, config)
    assert set(pending) == {t.name for t in config.tables}
    result = evaluate_cdc_sensor(None, pending, config, now=1000.0)
    assert len(result.run_requests) == 1 and len(result.run_requests[0].asset_selection) == 8
    assert not evaluate_cdc_sensor(
        result.cursor, pending, config, now=1010.0
    ).run_requests  # already requested
    assert evaluate_cdc_sensor(
        result.cursor, pending, config, now=1100.0
    ).run_requests  # retried later
    pipeline.run_all(cdc_env.source_dsn, cdc_env.warehouse_dsn, config)
    assert pipeline.pending_tables(cdc_env.source_dsn, cdc_env.warehouse_dsn, config) == {}
    assert evaluate_cdc_sensor(result.cursor, {}, config).skip_reason
    workload(cdc_env, 5)
    assert pipeline.pending_tables(cdc_env.source_dsn, cdc_env.warehouse_dsn, config)


def test_sensor_through_dagster(cdc_env):
    defs = definitions(cdc_env)
    sensor = defs.resolve_sensor_def("cdc_change_log_sensor")
    with dg.instance_for_test() as instance:
        # The resources set the ETL log's run id up and down: a context opened with `with`.
        with dg.build_sensor_context(
            instance=instance,
            resources={
                "postgres": PostgresResource(dsn=cdc_env.warehouse_dsn),
                "cdc_source": CdcSourceResource(dsn=cdc_env.source_dsn),
            },
        ) as context:
            result = sensor(context)
        assert len(result.run_requests) == 1
        with dg.build_sensor_context(
            instance=instance,
            resources={
                "postgres": PostgresResource(dsn=cdc_env.warehouse_dsn),
                "cdc_source": CdcSourceResource(dsn=cdc_env.warehouse_dsn),
            },
        ) as no_log:
            skipped = sensor(no_log)
        assert (
            not skipped.run_requests and "no change-log table" in skipped.skip_reason.skip_message
        )


def test_demo_app_command_creates_and_writes(pg_server_dsn, cdc_env):
    parser = argparse.ArgumentParser()
    said = []
    cdc_command.register(parser.add_subparsers(), said.append)
    options = parser.parse_args(
        [
            "demo-app",
            "--dsn",
            cdc_env.source_dsn,
            "--rate",
            "1000",
            "--duration",
            "0.5",
            "--random-seed",
            "5",
        ]
    )
    with psycopg.connect(cdc_env.source_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM models_logging_change").fetchone()[0]
    assert options.run(options) == 0
    with psycopg.connect(cdc_env.source_dsn) as conn:
        after = conn.execute("SELECT count(*) FROM models_logging_change").fetchone()[0]
        actions = {r[0] for r in conn.execute("SELECT DISTINCT action FROM models_logging_change")}
    assert after > before and actions <= {"added", "changed", "deleted"}
    assert any("Done" in line for line in said)
    pipeline.run_all(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config)


def test_config_from_toml_and_environment(tmp_path):
    assert [t.name for t in cdc_tables_from_env({})] == [
        "project",
        "inventory",
        "pm_plan",
        "pm_item",
    ]
    assert cdc_config_from_env({}).warehouse_schema == "cdc"
    path = tmp_path / "cdc.toml"
    path.write_text(
        'warehouse_schema = "mirror"\n[change_log]\nchange_table = "log"\nuntracked_content_types '
        '= "ignore"\n'
        '[[tables]]\napp_label = "shop"\nmodel = "order"\n[[tables]]\napp_label = "shop"\nmodel = '
        '"item"\n'
        'source_table = "items"\nname = "order_items"\n'
    )
    config = cdc_config_from_env({"INGEST_CDC_CONFIG": str(path)})
    assert config.warehouse_schema == "mirror" and config.change_log.change_table == "log"
    assert [(t.source_table, t.name, t.staging_table) for t in config.tables] == [
        ("shop_order", "shop_order", "shop_order__staging"),
        ("items", "order_items", "order_items__staging"),
    ]
    assert (
        cdc_config_from_env(
            {"INGEST_CDC_CONFIG": str(path), "INGEST_CDC_SCHEMA": "x"}
        ).warehouse_schema
        == "x"
    )
    with pytest.raises(ConfigError, match="entry 1 needs app_label and model"):
        parse_cdc_config('[[tables]]\nmodel = "x"\n')
    with pytest.raises(ConfigError, match="used twice"):
        parse_cdc_config(
            '[[tables]]\napp_label = "a"\nmodel = "x"\nname = "t"\n[[tables]]\napp_label = '
            '"b"\nmodel = "y"\nname = "t"\n'
        )
    assert "dbname=cdc_demo" in source_dsn_from_env({"INGEST_PG_DSN": "host=/tmp dbname=warehouse"})
    with pytest.raises(ConfigError, match="INGEST_CDC_SOURCE_DSN"):
        source_dsn_from_env({})
    assert CdcTranslator().asset_key(cdc_config_from_env({}), DEMO_TABLES[2], "merged") == (
        dg.AssetKey(["cdc", "pm_plan"])
    )


def test_freshness_on_merged_tables_and_mirrors_fails_without_materializations():
    from datetime import timedelta

    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
    from dagster._core.loader import LoadingContextForTest
    from dagster._core.test_utils import freeze_time
    from dagster._time import get_current_datetime

    from ingest_platform.defs.bigquery_mirror import build_cdc_mirror_definitions

    config = cdc_config_from_env({})
    policy = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5))

    class OwnedCdc(CdcTranslator):
        def get_asset_spec(self, record):
            return super().get_asset_spec(record).replace_attributes(owners=["team:cdc"])

    defs = dg.Definitions.merge(
        build_cdc_definitions(config, OwnedCdc(freshness_policy=policy)),
        build_cdc_mirror_definitions(config.tables, cdc_translator=OwnedCdc()),
        dg.Definitions(resources={"postgres": PostgresResource(dsn="host=unused")}),
        dg.Definitions(resources={"bigquery": dg.ResourceDefinition.none_resource()}),
    )
    graph = defs.resolve_asset_graph()
    merged = graph.get(dg.AssetKey(["cdc", "pm_plan"]))
    assert merged.freshness_policy == policy and merged.owners == ["team:cdc"]
    mirror = graph.get(dg.AssetKey(["bigquery", "cdc", "pm_plan"]))
    assert mirror.freshness_policy is not None and mirror.group_name == "cdc_bigquery"
    assert dg.AssetKey(["cdc", "pm_plan"]) in mirror.parent_keys  # the upstream from its record
    assert graph.get(dg.AssetKey(["cdc", "pm_plan__staging"])).owners == ["team:cdc"]

    # What Dagster's freshness daemon computes: a merge, then no merge within the window -> FAIL.
    import asyncio

    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(merged.key))
        context = LoadingContextForTest(instance)
        evaluate = TimeWindowFreshnessPolicyEvaluator().evaluate_freshness
        assert asyncio.run(evaluate(context, merged)) == FreshnessState.PASS
        with freeze_time(get_current_datetime() + timedelta(minutes=6)):
            context = LoadingContextForTest(instance)
            assert asyncio.run(evaluate(context, merged)) == FreshnessState.FAIL


def test_sensor_heartbeat_requests_quiet_tables():
    config = cdc_config_from_env({})
    first = evaluate_cdc_sensor(None, {}, config, now=1000.0, heartbeat_seconds=300)
    [request] = first.run_requests  # quiet tables are merged once: freshness sees a live sensor
    assert dg.AssetKey(["cdc", "pm_plan"]) in request.asset_selection
    assert evaluate_cdc_sensor(
        first.cursor, {}, config, now=1100.0, heartbeat_seconds=300
    ).skip_reason
    assert evaluate_cdc_sensor(
        first.cursor, {}, config, now=1301.0, heartbeat_seconds=300
    ).run_requests


def test_schema_change_check_reports_a_new_source_column(cdc_env):
    job = definitions(cdc_env).resolve_job_def(JOB_NAME)
    item = dg.AssetCheckKey(dg.AssetKey(["cdc", "pm_item"]), SCHEMA_CHANGE_CHECK)

    def schema_check(result) -> dg.AssetCheckEvaluation:
        [evaluation] = [
            e for e in result.get_asset_check_evaluations() if e.asset_check_key == item
        ]
        return evaluation

    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance).success
        workload(cdc_env, 5)
        unchanged = job.execute_in_process(instance=instance)
        assert schema_check(unchanged).passed, schema_check(unchanged).description
        with cdc_env.source() as conn:
            conn.execute("ALTER TABLE pm_item ADD COLUMN priority smallint")
        workload(cdc_env, 5, seed=4)
        changed = schema_check(job.execute_in_process(instance=instance))
        assert not changed.passed and changed.severity == dg.AssetCheckSeverity.WARN
        assert "Added columns: priority" in changed.description


def test_full_resync_repairs_rows_changed_behind_the_platforms_back(cdc_env):
    defs = definitions(cdc_env)
    item = dg.AssetKey(["cdc", "pm_item"])
    checks_only = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(),
        asset_check_selection={
            dg.AssetCheckKey(item, c)
            for c in (MATCHES_SOURCE_CHECK, DELETED_CHECK, STAGING_EMPTY_CHECK)
        },
    )
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance).success
        watermark = cdc_env.watermark("pm_item")
        with cdc_env.warehouse() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM cdc.pm_item ORDER BY id LIMIT 3")]
            conn.execute("UPDATE cdc.pm_item SET qty = qty + 1 WHERE id = %s", (ids[0],))
            conn.execute("DELETE FROM cdc.pm_item WHERE id = %s", (ids[1],))
        [failed] = [
            e
            for e in checks_only.execute_in_process(
                instance=instance, raise_on_error=False
            ).get_asset_check_evaluations()
            if e.check_name == MATCHES_SOURCE_CHECK
        ]
        assert not failed.passed
        differing = failed.metadata["differing_keys"].value
        assert str(ids[0]) in differing and str(ids[1]) in differing
        resync = defs.resolve_job_def(RESYNC_JOB_NAME).execute_in_process(
            instance=instance, run_config={"ops": {"full_resync": {"config": {"table": "pm_item"}}}}
        )
        assert resync.success
        materialization = instance.get_latest_materialization_event(item).asset_materialization
        assert materialization.metadata["rows_inserted"].value == 1
        again = checks_only.execute_in_process(instance=instance).get_asset_check_evaluations()
        assert all(e.passed for e in again), [e.description for e in again]
        assert cdc_env.watermark("pm_item") == watermark  # the watermark did not move


def test_full_resync_soft_deletes_keys_gone_from_the_source(cdc_env):
    config = cdc_env.config
    table = config.table("pm_plan")
    pipeline.run_all(cdc_env.source_dsn, cdc_env.warehouse_dsn, config)
    with cdc_env.warehouse() as conn:  # a row the source never had
        some = conn.execute("SELECT max(id) FROM cdc.pm_plan").fetchone()[0]
        conn.execute(
            "INSERT INTO cdc.pm_plan SELECT * FROM cdc.pm_plan WHERE id = %s "
            "ON CONFLICT DO NOTHING",
            (some,),
        )
        conn.execute("UPDATE cdc.pm_plan SET id = id + 1000000 WHERE id = %s", (some,))
    counts = pipeline.full_resync(cdc_env.source_dsn, cdc_env.warehouse_dsn, config, table)
    assert counts.soft_deleted == 1 and counts.inserted == 1
    assert cdc_env.merged("pm_plan", f"id = {some + 1000000}")[some + 1000000]["is_deleted"]
    assert not pipeline.pending_tables(cdc_env.source_dsn, cdc_env.warehouse_dsn, config)
