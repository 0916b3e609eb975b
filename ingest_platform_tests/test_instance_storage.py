"""A Dagster run against the packaged dagster.yaml: the run record lands in PostgreSQL."""

import shutil

import dagster as dg
import psycopg

from ingest_platform.defs.resources import PostgresResource
from ingest_platform.local.services import INSTANCE_CONFIG
from ingest_platform.postgres.connection import to_url


@dg.asset
def warehouse_version(postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.get_connection() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return dg.MaterializeResult(metadata={"server_version": version})


def test_run_record_is_stored_in_postgres(pg_dsn, tmp_path, monkeypatch):
    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", to_url(pg_dsn))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize(
            [warehouse_version],
            instance=instance,
            resources={"postgres": PostgresResource(dsn=pg_dsn)},
        )
    assert result.success

    with psycopg.connect(pg_dsn) as conn:
        status = conn.execute(
            "SELECT status FROM runs WHERE run_id = %s", (result.run_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT count(*) FROM event_logs"
            " WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        ).fetchone()[0]
    assert status == ("SUCCESS",)
    assert events == 1
