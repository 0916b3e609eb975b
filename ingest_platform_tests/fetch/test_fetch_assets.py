"""The fetch component's assets: a source's tables under dumps/<app>/<table>, materialized by
plain Dagster (a snapshot, then an incremental run) against real PostgreSQL databases."""

from __future__ import annotations

import dagster as dg
import psycopg

from ingest_platform.defs.fetch import build_fetch_definitions
from ingest_platform.defs.postgres_resources import PostgresResource
from ingest_platform_tests.fetch.test_fetch import (
    PG_CONFIG,
    seed_pg,
    write_config,
)


def test_assets_snapshot_then_incremental(pg_dsn, source_dsn, tmp_path, monkeypatch):
    seed_pg(source_dsn, 100)
    monkeypatch.setenv("FETCH_TEST_EU", source_dsn)
    defs = dg.Definitions.merge(
        build_fetch_definitions(write_config(tmp_path, PG_CONFIG)),
        dg.Definitions(resources={"postgres": PostgresResource(dsn=pg_dsn)}),
    )
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert keys == {
        dg.AssetKey(["dumps", "shop", "orders"]),
        dg.AssetKey(["dumps", "shop", "customers"]),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("fetch_eu_job").execute_in_process(instance=instance)
        assert result.success
        meta = {
            e.asset_key.path[-1]: e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key
        }
        assert meta["orders"]["rows"].value == 100 and meta["orders"]["mode"].value == "snapshot"
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("UPDATE orders SET updated_at = '2030-01-01' WHERE id <= 3")
        result = defs.resolve_job_def("fetch_eu_incremental_job").execute_in_process(
            instance=instance
        )
        assert result.success
        meta = {
            e.asset_key.path[-1]: e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key
        }
        assert (meta["orders"]["mode"].value, meta["orders"]["rows"].value) == ("incremental", 3)
