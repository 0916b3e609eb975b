"""The ETL transaction log: each pipeline writes exactly one row per table it changes, in the
transaction that changes it; a failed load writes none."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from ingest_platform import ingest
from ingest_platform.errors import IngestError
from ingest_platform.migration import demo_hr
from ingest_platform.migration.csv_import import CsvOptions, RejectedRows, import_csv
from ingest_platform.postgres import etl_log
from ingest_platform.postgres.connection import connect
from ingest_platform_tests.bulk_ingest.conftest import engine_for
from ingest_platform_tests.postgres.test_versioned_tables import load, table_schema

# The xid a log row's transaction had, as the 32-bit xmin of the rows it wrote.
LOG = (
    "SELECT kind, table_name, version, rows, run_id, (xid::text::bigint % 4294967296)::text"
    ' FROM "_ingest_meta".etl_log ORDER BY id'
)


def log_rows(dsn: str) -> list[tuple]:
    with connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('\"_ingest_meta\".etl_log')").fetchone() == (None,):
            return []
        return conn.execute(LOG).fetchall()


def test_a_version_attach_writes_one_row_per_table_in_its_transaction(pg_dsn):
    with connect(pg_dsn) as conn:
        load(conn, table_schema("t", ("id", "int")), "v1", [(1,), (2,)])
        load(conn, table_schema("t", ("id", "int")), "v2", [(3,)])
        registered = dict(
            conn.execute('SELECT version, xmin::text FROM crm."_ingest_versions"').fetchall()
        )
    rows = log_rows(pg_dsn)
    assert [r[:5] for r in rows] == [
        ("dump_version", "crm.t", "v1", 2, None),
        ("dump_version", "crm.t", "v2", 1, None),
    ]
    # the registry row of each version was written by the transaction that wrote its log row
    assert [r[5] for r in rows] == [registered["v1"], registered["v2"]]
    with connect(pg_dsn) as conn:
        (newest,) = etl_log.changes(conn, "crm.t", limit=1)
    assert newest["version"] == "v2" and newest["finished"] >= newest["started"]


def test_ingest_writes_one_row_per_committed_transaction_and_none_for_a_failed_one(pg_dsn):
    metadata = sa.MetaData()
    item = sa.Table(
        "item", metadata, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(5)), schema="app",
    )  # fmt: skip

    def batches(watermark):
        yield 1, [(item, (1, "a")), (item, (2, "b"))]
        yield 2, [(item, (3, "c"))]
        yield 3, [(item, (4, "much too long"))]  # fails: varchar(5)

    engine = engine_for(pg_dsn)
    try:
        with engine.connect() as conn, pytest.raises(IngestError):
            ingest(conn, metadata, batches)
    finally:
        engine.dispose()
    rows = log_rows(pg_dsn)
    assert [r[:4] for r in rows] == [("ingest", "app.item", "1", 2), ("ingest", "app.item", "2", 1)]
    with connect(pg_dsn) as conn:  # the failed batch's row is not there, nor its log row
        assert conn.execute("SELECT max(id) FROM app.item").fetchone() == (3,)


def test_a_csv_import_writes_one_row_and_a_refused_one_none(pg_dsn, tmp_path: Path):
    demo_hr.create_hr_source(pg_dsn, 10)
    bad = tmp_path / "bad.csv"
    bad.write_text("1001,Ann,2021-11-07T02:48:42Z,1,1\r\n1002,Bob,2021-11-07T02:48:42Z,99,1\r\n")
    with pytest.raises(RejectedRows):
        import_csv(pg_dsn, "hr", "hired_employees", [bad])
    assert [r for r in log_rows(pg_dsn) if r[0] == "csv_import"] == []
    import_csv(pg_dsn, "hr", "hired_employees", [bad], CsvOptions(on_reject="quarantine"))
    rows = [r for r in log_rows(pg_dsn) if r[0] == "csv_import"]
    assert [r[:4] for r in rows] == [("csv_import", "hr.hired_employees", None, 1)]


def test_run_scope_and_environment_give_the_run_id(pg_dsn, monkeypatch):
    with connect(pg_dsn) as conn:
        with etl_log.run_scope("run-a"):
            etl_log.record(conn, kind="ingest", table="s.t", rows=1)
        monkeypatch.setenv(etl_log.RUN_ID_ENV, "run-b")
        etl_log.record(conn, kind="ingest", table="s.t", rows=2)
        etl_log.record(conn, kind="ingest", table="s.t", rows=3, run_id="run-c")
        conn.rollback()  # the log row goes with its transaction
        etl_log.record(conn, kind="ingest", table="s.t", rows=4)
    assert [(r[3], r[4]) for r in log_rows(pg_dsn)] == [(4, "run-b")]
    with connect(pg_dsn) as conn:
        with etl_log.run_scope("run-a"):
            etl_log.record(conn, kind="ingest", table="s.t", rows=1)
    assert log_rows(pg_dsn)[-1][4] == "run-a"


def test_changes_filters_by_table_kind_and_time(pg_dsn):
    with connect(pg_dsn) as conn:
        assert etl_log.changes(conn, "s.t") == []  # no log yet
        etl_log.record(conn, kind="ingest", table="s.t", rows=1)
        etl_log.record(conn, kind="api_batch", table="s.t", rows=2)
        etl_log.record(conn, kind="ingest", table="s.u", rows=3)
    with connect(pg_dsn) as conn:
        assert [c["rows"] for c in etl_log.changes(conn, "s.t")] == [2, 1]
        assert [c["rows"] for c in etl_log.changes(conn, kind="ingest")] == [3, 1]
        now = conn.execute("SELECT now()").fetchone()[0]
        assert etl_log.changes(conn, since=now) == []


def test_two_first_records_at_once_both_create_and_write(pg_dsn):
    first, second = psycopg.connect(pg_dsn), psycopg.connect(pg_dsn)
    try:
        etl_log.record(first, kind="ingest", table="s.t", rows=1)

        def record_second():  # waits for the first's lock, then finds the table
            etl_log.record(second, kind="ingest", table="s.t", rows=2)
            second.commit()

        done = threading.Thread(target=record_second)
        done.start()
        first.commit()
        done.join(10)
    finally:
        first.close()
        second.close()
    assert sorted(r[3] for r in log_rows(pg_dsn)) == [1, 2]
