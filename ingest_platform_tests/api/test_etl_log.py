"""An API batch writes one ETL log row in its transaction (kind api_batch, the table, rows = the
accepted records); a batch that stores nothing writes none; and the row survives the server
closing the API's pooled connections (the log table is made at startup, not in a request)."""

from __future__ import annotations

from ingest_platform_tests.api.conftest import Api

HIRES = "/tables/hired_employees/records"
LOG = (
    'SELECT kind, table_name, rows FROM "_ingest_meta".etl_log'
    " WHERE kind = 'api_batch' AND version = %s"
)


def test_a_batch_writes_one_log_row_and_a_rejected_batch_none(api: Api):
    client = api.client()
    good = [{"name": f"etl-{i}", "department_id": 1, "job_id": 2} for i in range(3)]
    accepted = client.post(HIRES, json=good)
    assert accepted.status_code == 201, accepted.text
    assert api.query(LOG, (accepted.json()["request_id"],)) == [
        ("api_batch", "hr.hired_employees", 3)
    ]
    response = client.post(HIRES, json=[*good, {"name": "etl-bad", "department_id": 999999}])
    assert response.status_code == 207, response.text
    request_id = response.json()["request_id"]
    assert api.query(LOG, (request_id,)) == [("api_batch", "hr.hired_employees", 3)]
    atomic = client.post(HIRES, params={"atomic": "true"}, json=[*good, {"name": 1}])
    assert atomic.status_code == 422, atomic.text
    assert api.query(LOG, (atomic.json()["request_id"],)) == []
    rejected = client.post(HIRES, json=[{"name": "etl-none", "department_id": 999999}])
    assert rejected.status_code == 422, rejected.text
    assert api.query(LOG, (rejected.json()["request_id"],)) == []


def test_the_log_row_is_written_after_the_server_closed_the_pool(api: Api):
    client = api.client()
    api.query(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"  # waits for the exit
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    response = client.post(HIRES, json=[{"name": "etl-after-terminate"}])
    assert response.status_code == 201, response.text
    assert api.query(LOG, (response.json()["request_id"],)) == [
        ("api_batch", "hr.hired_employees", 1)
    ]
