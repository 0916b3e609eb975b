"""The CSV import directory in Dagster: the sensor (build_sensor_context), the table's job
(execute_in_process) against real PostgreSQL, the rejects asset and the no_rejects check."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from ingest_platform.defs.csv_import import (
    REJECTS_CHECK,
    build_csv_import_definitions,
    evaluate_csv_directory,
)
from ingest_platform.defs.dumps import failure_message
from ingest_platform.defs.postgres_resources import PostgresResource
from ingest_platform.migration import demo_hr
from ingest_platform.migration.csv_directory import import_tables
from ingest_platform.postgres.connection import connect, scalar

GOOD = "1001,Ann,2021-11-07T02:48:42Z,1,1\n1002,Bob,,2,3\n"
BAD = (
    "2001,Cy,2021-11-07T02:48:42Z,1,1\n"
    "2002,Dan,2021-11-07T02:48:42Z,1\n"  # line 2: wrong column count
    "2003,Eve,,99,1\n"  # line 3: no department 99
    "2004,Fay,,1,2\n"
)


class Log:
    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def settled(path: Path, text: str) -> Path:
    """A file written a minute ago (the sensor imports files that have stopped changing)."""
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


@pytest.fixture
def setup(pg_dsn, tmp_path):
    demo_hr.create_hr_source(pg_dsn, 100)
    directory = tmp_path / "imports"
    (directory / "hr.hired_employees").mkdir(parents=True)
    defs = dg.Definitions.merge(
        build_csv_import_definitions(directory),
        dg.Definitions(resources={"postgres": PostgresResource(dsn=pg_dsn)}),
    )
    return defs, directory / "hr.hired_employees", pg_dsn


def tick(defs: dg.Definitions, instance, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("csv_import_directory_sensor")
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def run(defs: dg.Definitions, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )


def materialized(result: dg.ExecuteInProcessResult) -> dict:
    return {
        e.asset_key.to_user_string(): {
            k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def employee_ids(dsn: str) -> set[int]:
    with connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM hr.hired_employees").fetchall()}


def test_sensor_imports_each_file_checks_rejects_and_skips_a_repeat(setup):
    defs, table_dir, dsn = setup
    dg.Definitions.validate_loadable(defs)
    settled(table_dir / "good.csv", GOOD)
    settled(table_dir / "bad.csv", BAD)
    instance = dg.DagsterInstance.ephemeral()

    first = tick(defs, instance, None)  # sizes seen once: not yet known to be complete
    assert not first.run_requests
    second = tick(defs, instance, first.cursor)
    requests = {r.partition_key: r for r in second.run_requests}
    assert set(requests) == {"good.csv", "bad.csv"}
    assert second.dynamic_partitions_requests[0].partition_keys == ["bad.csv", "good.csv"]
    assert not tick(defs, instance, second.cursor).run_requests  # nothing new
    instance.add_dynamic_partitions("csv_hr__hired_employees_files", ["bad.csv", "good.csv"])

    good = run(defs, instance, requests["good.csv"])
    assert good.success
    meta = materialized(good)["csv_import/hr/hired_employees"]
    assert meta["rows_imported"] == 2 and meta["rejects"] == 0 and len(meta["sha256"]) == 64
    assert [e.passed for e in good.get_asset_check_evaluations()] == [True]
    assert {1001, 1002} <= employee_ids(dsn)

    bad = run(defs, instance, requests["bad.csv"])
    assert bad.success  # quarantine: the good rows are in, the bad ones named
    meta = materialized(bad)
    assert meta["csv_import/hr/hired_employees"]["rows_imported"] == 2
    assert meta["csv_import/hr/hired_employees"]["rejects"] == 2
    assert meta["csv_import/hr/hired_employees_rejects"]["rejects"] == 2
    shown = meta["csv_import/hr/hired_employees_rejects"]["first_rejects"]
    assert "| bad.csv | 2 | 4 fields, the table has 5 columns |" in shown
    (check,) = bad.get_asset_check_evaluations()
    assert check.check_name == REJECTS_CHECK and not check.passed
    assert "2 rows of" in check.description and "bad.csv, line 2: 4 fields" in check.description
    assert "bad.csv, line 3: foreign key hired_employees_department_id_fkey" in check.description
    ids = employee_ids(dsn)
    assert {2001, 2004} <= ids and not {2002, 2003} & ids  # nothing of a rejected row

    # The same bytes again (a run relaunched from the UI): nothing loaded twice.
    before = len(ids)
    again = run(defs, instance, requests["good.csv"])
    assert again.success
    meta = materialized(again)["csv_import/hr/hired_employees"]
    assert meta["imported_before"] is True and meta["rows_imported"] == 2
    assert len(employee_ids(dsn)) == before
    with connect(dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM ingest_import.rejects") == 2


def test_fail_mode_fails_the_run_naming_the_lines_and_loads_nothing(setup):
    defs, table_dir, dsn = setup
    (table_dir / "import.toml").write_text('on_reject = "fail"\n')
    settled(table_dir / "bad.csv", BAD)
    instance = dg.DagsterInstance.ephemeral()
    cursor = tick(defs, instance, None).cursor
    (request,) = tick(defs, instance, cursor).run_requests
    instance.add_dynamic_partitions("csv_hr__hired_employees_files", ["bad.csv"])
    result = run(defs, instance, request)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure_message(failure)
    assert "2 rows rejected; nothing was loaded" in message
    assert "bad.csv, line 2: 4 fields" in message and "bad.csv, line 3: foreign key" in message
    assert not {2001, 2002, 2003, 2004} & employee_ids(dsn)


def test_sensor_waits_for_a_growing_file_and_names_unusable_ones(tmp_path):
    directory = tmp_path / "imports"
    (directory / "hr.jobs").mkdir(parents=True)
    (directory / "not_a_table").mkdir()  # no dot: not a table directory
    known = {t.label: t for t in import_tables(directory)}
    assert set(known) == {"hr.jobs"}
    fresh = directory / "hr.jobs" / "jobs.csv"
    fresh.write_text("1,a\n")  # just written: not settled
    log = Log()
    result = evaluate_csv_directory(None, directory, known, log)
    result = evaluate_csv_directory(result.cursor, directory, known, log)
    assert not result.run_requests  # younger than settle_seconds
    with fresh.open("a") as f:
        f.write("2,b\n")  # still growing
    result = evaluate_csv_directory(result.cursor, directory, known, log, settle_seconds=0)
    assert not result.run_requests
    result = evaluate_csv_directory(result.cursor, directory, known, log, settle_seconds=0)
    assert [r.partition_key for r in result.run_requests] == ["jobs.csv"]
    settled(directory / "hr.jobs" / "a,b.csv", "1,a\n")
    (directory / "hr.new_table").mkdir()
    settled(directory / "hr.new_table" / "x.csv", "1\n")
    for _ in range(2):
        result = evaluate_csv_directory(result.cursor, directory, known, log)
    assert not result.run_requests
    assert any("a,b.csv: its name holds ','; rename it" in w for w in log.warnings)
    assert any("hr.new_table/x.csv" in w and "Reload" in w for w in log.warnings)


def test_bad_import_toml_fails_the_run_naming_the_key(setup):
    defs, table_dir, _ = setup
    (table_dir / "import.toml").write_text("delimiter = 1\n")
    settled(table_dir / "good.csv", GOOD)
    instance = dg.DagsterInstance.ephemeral()
    (request,) = tick(defs, instance, tick(defs, instance, None).cursor).run_requests
    instance.add_dynamic_partitions("csv_hr__hired_employees_files", ["good.csv"])
    result = run(defs, instance, request)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "import.toml: delimiter must be a str, not 1" in failure_message(failure)


def test_component_builds_an_asset_pair_per_table_directory(tmp_path):
    from ingest_platform.defs.components.csv_import import CsvImportDirectoryComponent

    assert not CsvImportDirectoryComponent().build_defs(None).sensors  # type: ignore[arg-type]
    (tmp_path / "hr.jobs").mkdir()
    (tmp_path / "hr.departments").mkdir()
    defs = CsvImportDirectoryComponent(directory=str(tmp_path)).build_defs(None)  # type: ignore[arg-type]
    unused = dg.Definitions(resources={"postgres": PostgresResource(dsn="host=unused")})
    graph = dg.Definitions.merge(defs, unused).get_repository_def().asset_graph
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == [
        "csv_import/hr/departments", "csv_import/hr/departments_rejects",
        "csv_import/hr/jobs", "csv_import/hr/jobs_rejects",
    ]  # fmt: skip
    assert {k.name for k in graph.asset_check_keys} == {REJECTS_CHECK}
    assert [s.name for s in defs.sensors or []] == ["csv_import_directory_sensor"]


def test_an_empty_file_fails_its_run_by_name_and_its_check(setup):
    defs, table_dir, dsn = setup
    settled(table_dir / "empty.csv", "")
    instance = dg.DagsterInstance.ephemeral()
    (request,) = tick(defs, instance, tick(defs, instance, None).cursor).run_requests
    instance.add_dynamic_partitions("csv_hr__hired_employees_files", ["empty.csv"])
    result = run(defs, instance, request)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "empty.csv: the file is empty: nothing to import" in failure_message(failure)
    key = dg.AssetCheckKey(dg.AssetKey(["csv_import", "hr", "hired_employees"]), REJECTS_CHECK)
    job = defs.resolve_job_def(request.job_name).get_subset(
        asset_selection=set(), asset_check_selection={key}
    )
    checked = job.execute_in_process(
        instance=instance, partition_key="empty.csv", tags=request.tags
    )
    (check,) = checked.get_asset_check_evaluations()
    assert not check.passed and "the file is empty" in check.description
