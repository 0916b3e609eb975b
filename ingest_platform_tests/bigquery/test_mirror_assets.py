"""The mirror assets in Dagster: a dump partition and a CDC merged table, with their checks."""

from __future__ import annotations

import datetime
from pathlib import Path

import dagster as dg
import psycopg

import ingest_platform.demo
from ingest_platform.cdc.config import DEMO_TABLES, CdcConfig
from ingest_platform.defs.analytics import build_analytics_definitions
from ingest_platform.defs.bigquery_mirror import (
    COUNTS_CHECK,
    HASHES_CHECK,
    REVERIFY_SCHEDULE,
    MirrorTranslator,
    build_cdc_mirror_definitions,
    build_mirror_definitions,
    reverify_schedule_name,
)
from ingest_platform.defs.cdc import MATCHES_SOURCE_CHECK, CdcSourceResource, build_cdc_definitions
from ingest_platform.defs.resources import BigQueryResource, PostgresResource
from ingest_platform.dumps.directory import DumpCatalog, DumpFile
from ingest_platform.migration.csv_directory import ImportTable
from ingest_platform_tests.bigquery.helpers import make_dump_table

SHIPPED_MODELS = Path(ingest_platform.demo.__file__).parent / "analytics"
SCHEMA_CHANGE_CHECK = "column_schema_change"  # dg.build_column_schema_change_checks' name


def _run(defs, key, resources, partition=None, instance=None):
    """Materialize the mirror `key` with its checks (the checks are definitions of their own)."""
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(dg.AssetKey(key)).without_checks()
        | dg.AssetSelection.checks_for_assets(dg.AssetKey(key)),
        partition_key=partition,
        resources=resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=True,
    )


def _asset(defs, key):
    return next(a for a in defs.assets if dg.AssetKey(key) in a.keys)


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_dump_mirror_asset_partition_and_checks(pg_dsn, bigquery_resource, bq_dataset):
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(
            conn,
            "shop",
            "orders",
            [("id", "integer"), ("note", "text")],
            {"1.0": [(1, "a"), (2, "b")], "2.0": [(1, "c")]},
            ["id"],
        )
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("shop_1.0.zip"), app="shop", version="1.0", tables=["orders"])]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix=bq_dataset + "_"))
    asset = _asset(defs, ["bigquery", "shop", "orders"])
    assert asset.partitions_def.name == "shop_versions"
    assert dg.AssetKey(["dumps", "shop", "orders"]) in asset.dependency_keys
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shop_versions", ["1.0", "2.0"])
    result = _run(defs, ["bigquery", "shop", "orders"], resources, "2.0", instance)
    (materialization,) = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(["bigquery", "shop", "orders"])
    ]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["rows"] == 1 and metadata["requests"] == 1 and "rows_per_second" in metadata
    assert metadata["row_format"] == "arrow"
    checks = _checks(result)
    assert checks[HASHES_CHECK].passed
    # Partition 2.0 is judged on version 2.0 alone: version 1.0, not mirrored yet, does not fail it.
    assert checks[COUNTS_CHECK].passed
    assert "| 2.0 | 1 | 1 |" in checks[COUNTS_CHECK].metadata["counts"].value
    assert "1.0" not in checks[COUNTS_CHECK].metadata["counts"].value
    result = _run(defs, ["bigquery", "shop", "orders"], resources, "1.0", instance)
    assert all(c.passed for c in _checks(result).values())
    with bigquery_resource.get_client() as client:
        client.delete_dataset(f"{bq_dataset}_shop", delete_contents=True)


def test_cdc_mirror_asset(pg_dsn, bigquery_resource, bq_dataset):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cdc")
        conn.execute(
            "CREATE TABLE cdc.pm_plan (id bigint PRIMARY KEY, title text, is_deleted boolean NOT "
            "NULL DEFAULT false,"
            " _last_change_id bigint NOT NULL, _applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO cdc.pm_plan (id, title, is_deleted, _last_change_id) VALUES (1, 'a', "
            "false, 1), (2, 'b', true, 2)"
        )
    defs = build_cdc_mirror_definitions(
        ["pm_plan"], translator=MirrorTranslator(prefix=bq_dataset + "_")
    )
    asset = _asset(defs, ["bigquery", "cdc", "pm_plan"])
    assert dg.AssetKey(["cdc", "pm_plan"]) in asset.dependency_keys
    # The resource's row_format reaches the mirror (protobuf rows here).
    proto = BigQueryResource(
        project=bigquery_resource.project,
        emulator_rest_endpoint=bigquery_resource.emulator_rest_endpoint,
        emulator_grpc_endpoint=bigquery_resource.emulator_grpc_endpoint,
        row_format="proto",
    )
    result = _run(
        defs,
        ["bigquery", "cdc", "pm_plan"],
        {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": proto},
    )
    (materialization,) = [e.materialization for e in result.get_asset_materialization_events()]
    assert materialization.metadata["row_format"].value == "proto"
    checks = _checks(result)
    assert (
        checks[COUNTS_CHECK].passed
        and checks[COUNTS_CHECK].metadata["bq_rows_not_deleted"].value == 1
    )
    assert checks[HASHES_CHECK].passed
    with bigquery_resource.get_client() as client:
        client.delete_dataset(f"{bq_dataset}_cdc", delete_contents=True)


def test_cdc_mirror_schema_change_check(pg_dsn, bigquery_resource, bq_dataset):
    _make_cdc_table(pg_dsn)
    defs = build_cdc_mirror_definitions(
        ["pm_plan"], translator=MirrorTranslator(prefix=bq_dataset + "_")
    )
    key = ["bigquery", "cdc", "pm_plan"]
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    instance = dg.DagsterInstance.ephemeral()
    _run(defs, key, resources, instance=instance)
    assert _checks(_run(defs, key, resources, instance=instance))[SCHEMA_CHANGE_CHECK].passed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE cdc.pm_plan ADD COLUMN note text")
    with bigquery_resource.get_client() as client:  # the emulator cannot add columns: rebuild
        client.delete_table(f"{client.project}.{bq_dataset}_cdc.pm_plan")
    changed = _checks(_run(defs, key, resources, instance=instance))[SCHEMA_CHANGE_CHECK]
    assert not changed.passed and changed.severity == dg.AssetCheckSeverity.WARN
    assert "Added columns: note" in changed.description
    with bigquery_resource.get_client() as client:
        client.delete_dataset(f"{bq_dataset}_cdc", delete_contents=True)


def _make_cdc_table(pg_dsn) -> None:
    """A merged table as CDC makes it: live row 1, soft-deleted row 2."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cdc")
        conn.execute(
            "CREATE TABLE cdc.pm_plan (id bigint PRIMARY KEY, title text, is_deleted boolean NOT "
            "NULL DEFAULT false,"
            " _last_change_id bigint NOT NULL, _applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO cdc.pm_plan (id, title, is_deleted, _last_change_id) VALUES (1, 'a', "
            "false, 1), (2, 'b', true, 2)"
        )


def test_nightly_reverify_covers_merged_tables_and_mirrors():
    config = CdcConfig(tables=DEMO_TABLES)
    defs = dg.Definitions.merge(
        build_cdc_definitions(config, source=CdcSourceResource(dsn="host=unused")),
        build_cdc_mirror_definitions(config.tables),
        dg.Definitions(
            resources={
                "postgres": PostgresResource(dsn="host=unused"),
                "bigquery": BigQueryResource(project="unused"),
            }
        ),
    )
    schedule = defs.resolve_schedule_def(REVERIFY_SCHEDULE)
    defs.resolve_job_def(schedule.job_name)  # the target resolves to a job
    selected = schedule.target.job_def.selection.resolve_checks(defs.resolve_asset_graph())
    for table in config.tables:
        merged, mirror = (
            dg.AssetKey(["cdc", table.name]),
            dg.AssetKey(["bigquery", "cdc", table.name]),
        )
        assert dg.AssetCheckKey(merged, MATCHES_SOURCE_CHECK) in selected
        assert dg.AssetCheckKey(mirror, HASHES_CHECK) in selected
        assert dg.AssetCheckKey(mirror, COUNTS_CHECK) in selected


def test_nightly_reverify_runs_every_dump_version(pg_dsn, bigquery_resource, bq_dataset):
    """The per-application schedule asks for one check-only run per version; each run passes."""
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(
            conn,
            "shop",
            "orders",
            [("id", "integer"), ("note", "text")],
            {"1.0": [(1, "a"), (2, "b")], "2.0": [(1, "c")]},
            ["id"],
        )
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("shop_1.0.zip"), app="shop", version="1.0", tables=["orders"])]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix=bq_dataset + "_"))
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    with dg.instance_for_test() as instance:  # a schedule's context needs an instance with a ref
        _reverify_each_version(defs, resources, instance, bigquery_resource, bq_dataset)
    with bigquery_resource.get_client() as client:
        client.delete_dataset(f"{bq_dataset}_shop", delete_contents=True)


def _reverify_each_version(defs, resources, instance, bigquery_resource, bq_dataset):
    instance.add_dynamic_partitions("shop_versions", ["1.0", "2.0"])
    key = ["bigquery", "shop", "orders"]
    for version in ("1.0", "2.0"):
        _run(defs, key, resources, version, instance)
    with_resources = dg.Definitions.merge(defs, dg.Definitions(resources=resources))
    schedule = with_resources.resolve_schedule_def(reverify_schedule_name("shop_versions"))
    night = datetime.datetime(2026, 11, 28, 3, 30, tzinfo=datetime.UTC)
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=night,
        repository_def=with_resources.get_repository_def(),
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.tags["dagster/partition"] for r in requests) == ["1.0", "2.0"]
    # Drift in version 1.0 only: its run fails its check, version 2.0's passes.
    with bigquery_resource.get_client() as client:
        client.query(
            f"DELETE FROM `{bq_dataset}_shop.orders` WHERE _version = '1.0' AND id = 2"
        ).result()
    outcomes = {}
    for request in requests:
        assert request.asset_selection == []  # check-only runs: nothing is mirrored again
        # As the daemon launches it: the schedule's job, the request's tags.
        result = with_resources.resolve_job_def(schedule.job_name).execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False
        )
        outcomes[request.tags["dagster/partition"]] = {
            e.check_name: e.passed for e in result.get_asset_check_evaluations()
        }
    assert outcomes["2.0"] == {COUNTS_CHECK: True, HASHES_CHECK: True}
    assert outcomes["1.0"] == {COUNTS_CHECK: False, HASHES_CHECK: False}


def test_cdc_mirror_full_refresh_repairs_drift(pg_dsn, bigquery_resource, bq_dataset):
    """A row deleted, one added and one changed in BigQuery by hand: an incremental run leaves
    the drift (nothing changed in PostgreSQL), `full_refresh` repairs it."""
    _make_cdc_table(pg_dsn)
    defs = build_cdc_mirror_definitions(
        ["pm_plan"], translator=MirrorTranslator(prefix=bq_dataset + "_")
    )
    key = ["bigquery", "cdc", "pm_plan"]
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    _run(defs, key, resources)
    table = f"`{bq_dataset}_cdc.pm_plan`"
    with bigquery_resource.get_client() as client:
        for statement in (
            f"DELETE FROM {table} WHERE id = 1",
            f"UPDATE {table} SET title = 'edited' WHERE id = 2",
            f"INSERT INTO {table} (id, title, is_deleted, _last_change_id) VALUES (9, 'x', "
            "false, 1)",
        ):
            client.query(statement).result()
    assert not _checks(_run(defs, key, resources))[HASHES_CHECK].passed
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(dg.AssetKey(key)).without_checks()
        | dg.AssetSelection.checks_for_assets(dg.AssetKey(key)),
        resources=resources,
        run_config={"ops": {"mirror_bigquery__cdc__pm_plan": {"config": {"full_refresh": True}}}},
    )
    assert all(check.passed for check in _checks(result).values())
    with bigquery_resource.get_client() as client:
        rows = sorted(tuple(r) for r in client.query(f"SELECT id, title FROM {table}").result())
        assert rows == [(1, "a"), (2, "b")]
        client.delete_dataset(f"{bq_dataset}_cdc", delete_contents=True)


def test_mirror_of_a_version_without_the_table(pg_dsn, bigquery_resource, bq_dataset):
    """Version 2.0 brought no `orders` (its dump lacks the table: a 0-row partition): mirroring
    that partition writes nothing, keeps version 1.0's rows, and its checks pass."""
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(conn, "shop", "orders", [("id", "integer")], {"1.0": [(1,), (2,)]}, ["id"])
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("shop_1.0.zip"), app="shop", version="1.0", tables=["orders"])]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix=bq_dataset + "_"))
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shop_versions", ["1.0", "2.0"])
    key = ["bigquery", "shop", "orders"]
    _run(defs, key, resources, "1.0", instance)
    result = _run(defs, key, resources, "2.0", instance)
    (materialization,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(key)
    ]
    assert materialization.metadata["rows"].value == 0
    assert all(c.passed for c in _checks(result).values())
    with bigquery_resource.get_client() as client:
        rows = client.query(f"SELECT _version, count(*) FROM `{bq_dataset}_shop.orders` GROUP BY 1")
        assert [tuple(r) for r in rows.result()] == [("1.0", 2)]
        client.delete_dataset(f"{bq_dataset}_shop", delete_contents=True)


def test_a_csv_imported_table_is_mirrored_whole_and_an_analytics_model_finds_it(
    pg_dsn, bigquery_resource, bq_dataset, tmp_path
):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA hr")
        conn.execute("CREATE TABLE hr.departments (id integer PRIMARY KEY, department text)")
        conn.execute("INSERT INTO hr.departments VALUES (1, 'Sales'), (2, 'Staff'), (3, 'Legal')")
    prefix = bq_dataset + "_"
    departments = ImportTable("hr", "departments", tmp_path / "hr.departments")
    defs = build_mirror_definitions(
        DumpCatalog(), MirrorTranslator(prefix=prefix), csv_tables=[departments]
    )
    key = ["bigquery", "hr", "departments"]
    asset = _asset(defs, key)
    assert asset.partitions_def is None  # the table whole, whatever files made it
    assert dg.AssetKey(["csv_import", "hr", "departments"]) in asset.dependency_keys
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    first = _run(defs, key, resources)
    assert all(c.passed for c in _checks(first).values())

    # The next import changed and removed rows: the next run replaces the mirror's rows.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM hr.departments WHERE id = 3")
        conn.execute("UPDATE hr.departments SET department = 'Sales EU' WHERE id = 1")
        conn.execute("INSERT INTO hr.departments VALUES (4, 'Research')")
    second = _run(defs, key, resources)
    assert all(c.passed for c in _checks(second).values())
    with bigquery_resource.get_client() as client:
        rows = client.query(
            f"SELECT id, department FROM `{prefix}hr.departments` ORDER BY id"
        ).result()
        assert [tuple(r.values()) for r in rows] == [(1, "Sales EU"), (2, "Staff"), (4, "Research")]
        client.delete_dataset(f"{prefix}hr", delete_contents=True)

    # The shipped HR models read the mirrors by these keys (deps parsed from their SQL).
    models = build_analytics_definitions(SHIPPED_MODELS, prefix)
    hr_deps = {dep for model in models.assets for dep in model.dependency_keys if "hr" in dep.path}
    assert dg.AssetKey(key) in hr_deps
