"""A migration writes one ETL log row per table copied, in the table's copy transaction."""

from __future__ import annotations

from ingest_platform.migration import data, demo_hr, plan
from ingest_platform.postgres.connection import connect


def test_each_copied_table_has_one_row(pg_dsn, other_dsn, tmp_path):
    demo_hr.create_hr_source(pg_dsn, 50)
    demo_hr.ensure_reader_role(other_dsn)
    data.migrate_data(plan.make_plan(pg_dsn, other_dsn, ["hr"], tmp_path))
    with connect(other_dsn) as conn:
        rows = conn.execute(
            'SELECT table_name, rows FROM "_ingest_meta".etl_log'
            " WHERE kind = 'migration' ORDER BY table_name"
        ).fetchall()
    assert rows == [("hr.departments", 12), ("hr.hired_employees", 50), ("hr.jobs", 35)]
