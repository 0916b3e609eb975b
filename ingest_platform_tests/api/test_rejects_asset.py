"""`api/rejects` in a real Dagster run against real PostgreSQL: its metadata shows the rejects
and its check fails when the last hour's reject share passes the limit."""

from __future__ import annotations

import uuid

import dagster as dg
import psycopg

from ingest_platform.api import store
from ingest_platform.api.config import HR_TABLES, ApiConfig
from ingest_platform.defs.api import CHECK, REJECTS_KEY, build_api_definitions
from ingest_platform.defs.resources import PostgresResource


def log_batch(dsn: str, received: int, rejected: int, old: bool = False) -> None:
    with psycopg.connect(dsn) as conn:
        store.ensure_tables(conn, "_ingest_api")
        request_id = str(uuid.uuid4())
        records = [{"name": f"r{i}", "job_id": "x | y"} for i in range(received)]
        rejects = [
            store.Reject(i, "job_id", None, f"record {i}, field job_id: not an integer | x")
            for i in range(rejected)
        ]
        store.log_request(
            conn, "_ingest_api", request_id, "alice", "hired_employees", received,
            received - rejected, rejects, records, False,
        )  # fmt: skip
        if old:  # an earlier hour: counts in the total, not in the share
            conn.execute("UPDATE _ingest_api.requests SET at = at - interval '2 hours'")


def run(dsn: str, limit: float) -> tuple[dg.AssetMaterialization, dg.AssetCheckEvaluation]:
    defs = build_api_definitions(ApiConfig(tables=HR_TABLES, reject_share_limit=limit))
    result = dg.materialize(
        defs.assets,  # type: ignore[arg-type]
        resources={"postgres": PostgresResource(dsn=dsn)},
        raise_on_error=False,
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("api__rejects")
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == CHECK and check.asset_key == REJECTS_KEY
    return materialization, check


def test_no_traffic_passes(pg_dsn):
    materialization, check = run(pg_dsn, 0.05)
    assert check.passed
    assert materialization.metadata["received_last_hour"].value == 0
    assert materialization.metadata["latest_rejects"].value == "none"


def test_reject_share_over_the_limit_fails_the_check(pg_dsn):
    log_batch(pg_dsn, received=100, rejected=90, old=True)  # two hours ago
    log_batch(pg_dsn, received=100, rejected=4)
    materialization, check = run(pg_dsn, 0.05)
    assert check.passed  # 4 % in the last hour
    assert materialization.metadata["dagster/row_count"].value == 94
    assert materialization.metadata["rejected_last_hour"].value == 4
    table = materialization.metadata["latest_rejects"].value
    assert (
        "| alice | hired_employees | 3 | job_id | record 3, field job_id: not an integer \\| x |"
        in (table)
    )
    log_batch(pg_dsn, received=100, rejected=20)
    _, check = run(pg_dsn, 0.05)
    assert not check.passed  # 24 of 200 = 12 %
    assert check.metadata["share"].value == 0.12
    assert check.description == "24 of 200 records rejected in the last hour (12.00%; limit 5.00%)"
