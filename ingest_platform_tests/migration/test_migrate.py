"""Migrations between two real servers (15 and 18 here), both ways, and their faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest_platform.errors import SchemaError, ServiceUnavailableError
from ingest_platform.local.cli import main
from ingest_platform.migration import data, demo_hr, plan, schema, verify
from ingest_platform.postgres.connection import connect, scalar

PROJECT_DIR = Path(__file__).resolve().parents[2]


def count(dsn: str, query: str):
    with connect(dsn) as conn:
        return scalar(conn, query)


@pytest.fixture(params=["pg_to_other", "other_to_pg"])
def servers(request, pg_dsn, other_dsn) -> tuple[str, str]:
    """(source, target) on the two servers, in both directions."""
    return (pg_dsn, other_dsn) if request.param == "pg_to_other" else (other_dsn, pg_dsn)


def test_demo_hr_migrates_and_verifies_both_ways(servers, tmp_path):
    source, target = servers
    demo_hr.create_hr_source(source, 500)
    demo_hr.ensure_reader_role(target)
    made = plan.make_plan(source, target, ["hr"], tmp_path)
    assert made.state == plan.EMPTY
    shown = made.text()
    assert shown.index("TABLE hr.departments") < shown.index("FK CONSTRAINT hr.hired_employees")
    copies = data.migrate_data(made)
    assert {c.table: c.rows for c in copies} == {
        "hr.departments": 12, "hr.jobs": 35, "hr.hired_employees": 500,
    }  # fmt: skip
    result = verify.verify(source, target, ["hr"])
    assert result.passed, result.text()
    assert count(target, "SELECT hr.hires_in(2018)") == count(source, "SELECT hr.hires_in(2018)")
    assert count(target, "SELECT last_value FROM hr.hire_id_seq") == 500
    assert count(target, "SELECT obj_description('hr.hired_employees'::regclass)") == (
        "One row per hire"
    )
    assert count(target, "SELECT has_table_privilege('hr_reader', 'hr.hires_per_month', 'SELECT')")
    again = plan.make_plan(source, target, ["hr"], tmp_path)
    assert again.state == plan.EQUAL
    assert schema.migrate_schema(again) == "Nothing to do: the target already has this schema."
    # A second data run converges: same rows, nothing duplicated.
    data.migrate_data(again)
    assert verify.verify(source, target, ["hr"]).passed


def test_missing_role_is_named_and_skip_grants_goes_on(pg_dsn, other_dsn, tmp_path):
    with connect(pg_dsn) as conn:
        conn.execute("DROP ROLE IF EXISTS ingest_test_only_here")
        conn.execute("CREATE ROLE ingest_test_only_here NOLOGIN")
        conn.execute("CREATE SCHEMA s; CREATE TABLE s.t (id int PRIMARY KEY)")
        conn.execute("GRANT SELECT ON s.t TO ingest_test_only_here")
    try:
        made = plan.make_plan(pg_dsn, other_dsn, ["s"], tmp_path)
        with pytest.raises(SchemaError, match="role.s. ingest_test_only_here .*--skip-grants"):
            schema.migrate_schema(made)
        assert count(other_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 's'") == 0
        skipped = plan.make_plan(pg_dsn, other_dsn, ["s"], tmp_path, grants=False)
        schema.migrate_schema(skipped)
        assert verify.verify(pg_dsn, other_dsn, ["s"], grants=False).passed
    finally:
        with connect(pg_dsn) as conn:
            conn.execute("DROP SCHEMA s CASCADE; DROP ROLE ingest_test_only_here")


def test_different_target_is_refused_unless_replace(pg_dsn, other_dsn, tmp_path):
    demo_hr.create_hr_source(pg_dsn, 50)
    demo_hr.ensure_reader_role(other_dsn)
    with connect(other_dsn) as conn:
        conn.execute("CREATE SCHEMA hr; CREATE TABLE hr.jobs (id bigint, title text)")
        conn.execute("INSERT INTO hr.jobs VALUES (1, 'kept')")
    made = plan.make_plan(pg_dsn, other_dsn, ["hr"], tmp_path)
    assert made.state == plan.DIFFERS
    assert "table hr.jobs: differs" in made.text()
    with pytest.raises(SchemaError, match="table hr.jobs: differs.*--replace"):
        schema.migrate_schema(made)
    assert count(other_dsn, "SELECT title FROM hr.jobs") == "kept"  # nothing changed
    schema.migrate_schema(made, replace=True)
    assert plan.make_plan(pg_dsn, other_dsn, ["hr"], tmp_path).state == plan.EQUAL


def test_language_the_target_lacks_is_named(pg_dsn, other_dsn, tmp_path):
    with connect(pg_dsn) as conn:  # a language only the source has (plpgsql's handler, renamed)
        conn.execute(
            "CREATE LANGUAGE hrlang HANDLER plpgsql_call_handler;"
            "CREATE SCHEMA s; CREATE FUNCTION s.f() RETURNS int LANGUAGE hrlang"
            " AS 'BEGIN RETURN 1; END'"
        )
    made = plan.make_plan(pg_dsn, other_dsn, ["s"], tmp_path)
    with pytest.raises(SchemaError, match=r"function s\.f\(\) is written in language hrlang"):
        schema.migrate_schema(made)
    assert count(other_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 's'") == 0


def test_view_on_a_table_outside_the_selection_is_named(pg_dsn, other_dsn, tmp_path):
    with connect(pg_dsn) as conn:
        conn.execute(
            "CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE b.t (id int);"
            "CREATE VIEW a.v AS SELECT id FROM b.t"
        )
    made = plan.make_plan(pg_dsn, other_dsn, ["a"], tmp_path)
    with pytest.raises(SchemaError, match=r"view a\.v depends on b\.t.*add --schema b"):
        schema.migrate_schema(made)
    assert count(other_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'a'") == 0
    both = plan.make_plan(pg_dsn, other_dsn, ["a", "b"], tmp_path)
    schema.migrate_schema(both)
    assert verify.verify(pg_dsn, other_dsn, ["a", "b"]).passed


def test_unreachable_servers_are_named_within_seconds(pg_dsn, tmp_path):
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="127.0.0.1:1 does not answer"):
        plan.make_plan("host=127.0.0.1 port=1 user=x password=secret", pg_dsn, [], tmp_path)
    with pytest.raises(ServiceUnavailableError, match="127.0.0.1:1 does not answer") as error:
        plan.make_plan(pg_dsn, "host=127.0.0.1 port=1 user=x password=secret", [], tmp_path)
    assert "secret" not in str(error.value)
    assert time.monotonic() - started < 20


def test_cli_plan_schema_verify(pg_dsn, other_dsn, capsys):
    demo_hr.create_hr_source(pg_dsn, 20)
    args = ["--source", pg_dsn, "--target", other_dsn, "--schema", "hr", "--skip-grants"]
    assert main(["migrate", "plan", *args]) == 0
    assert "Target state: empty." in capsys.readouterr().out
    assert main(["migrate", "schema", *args]) == 0
    assert main(["migrate", "schema", *args]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert main(["migrate", "data", *args]) == 0
    out = capsys.readouterr().out
    assert "hr.hired_employees: 20 rows" in out and "Schema: no differences." in out
    assert main(["migrate", "verify", *args]) == 0


@pytest.mark.slow
def test_kill_9_during_data_then_rerun_converges(pg_dsn, other_dsn, tmp_path):
    demo_hr.create_hr_source(pg_dsn, 300_000)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    args = [sys.executable, "-m", "ingest_platform.local.cli", "migrate", "data",
            "--source", pg_dsn, "--target", other_dsn, "--schema", "hr", "--skip-grants",
            "--no-verify"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill while a COPY into the target runs
        copying = count(
            other_dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%FROM STDIN%%'"
            " AND datname = current_database()",
        )
        if copying or process.poll() is not None:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the copy ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert count(other_dsn, "SELECT count(*) FROM hr.hired_employees") in (0, 300_000)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = verify.verify(pg_dsn, other_dsn, ["hr"], grants=False)
    assert result.passed, result.text()
