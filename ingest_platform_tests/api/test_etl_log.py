"""An API batch writes one ETL log row in its transaction; a batch that stores nothing, none."""

from __future__ import annotations

from ingest_platform_tests.api.conftest import Api

HIRES = "/tables/hired_employees/records"
LOG = (
    'SELECT kind, table_name, rows FROM "_ingest_meta".etl_log'
    " WHERE kind = 'api_batch' AND version = %s"
)


def test_a_batch_writes_one_log_row_and_a_rejected_atomic_batch_none(api: Api):
    client = api.client()
    good = [{"name": f"etl-{i}", "department_id": 1, "job_id": 2} for i in range(3)]
    response = client.post(HIRES, json=[*good, {"name": "etl-bad", "department_id": 999999}])
    assert response.status_code == 207, response.text
    request_id = response.json()["request_id"]
    assert api.query(LOG, (request_id,)) == [("api_batch", "hr.hired_employees", 3)]
    atomic = client.post(HIRES, params={"atomic": "true"}, json=[*good, {"name": 1}])
    assert atomic.status_code == 422, atomic.text
    assert api.query(LOG, (atomic.json()["request_id"],)) == []
