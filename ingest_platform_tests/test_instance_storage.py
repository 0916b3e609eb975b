"""A Dagster run against the packaged dagster.yaml: the run record lands in PostgreSQL, its events
share a few connections."""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import dagster as dg
import psycopg
from sqlalchemy import event
from sqlalchemy.pool import Pool

from ingest_platform.defs.resources import PostgresResource
from ingest_platform.local.run_launcher import HOST_TAG
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


@dg.asset
def chatty(context: dg.AssetExecutionContext) -> None:
    for n in range(20):
        context.log.info(f"step {n}")


def test_run_events_share_connections(pg_dsn, tmp_path, monkeypatch):
    """dagster-postgres alone opens a connection per statement (nearly two per event); the
    packaged storage keeps them open (local/instance_storage.py)."""
    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", to_url(pg_dsn))
    opened: list[object] = []

    def count(dbapi_connection, connection_record) -> None:
        opened.append(dbapi_connection)

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        event.listen(Pool, "connect", count)  # every pool, also those of the instance's storage
        try:
            result = dg.materialize([chatty], instance=instance)
        finally:
            event.remove(Pool, "connect", count)
        events = instance.all_logs(result.run_id)
    assert result.success
    assert len(events) > 20
    assert len(opened) < len(events) / 4, f"{len(opened)} connections for {len(events)} events"


DYING_RUN = """
import sys, time

import dagster as dg

@dg.op
def work():
    time.sleep(600)

@dg.job
def long_job():
    work()

with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    long_job.execute_in_process(instance=instance)
"""


def test_run_monitoring_fails_a_run_whose_worker_died(pg_dsn, tmp_path, monkeypatch):
    """kill -9 of a run's worker: the daemon's run-monitoring iteration (Dagster's own code, called
    here instead of waiting poll_interval_seconds for the daemon) marks the run failed."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", to_url(pg_dsn))
    (tmp_path / "dying_run.py").write_text(DYING_RUN)
    worker = subprocess.Popen([sys.executable, str(tmp_path / "dying_run.py"), str(tmp_path)])
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert instance.run_monitoring_enabled
            assert instance.run_launcher.supports_check_run_worker_health
            deadline = time.monotonic() + 120
            runs: list = []
            while time.monotonic() < deadline and not runs:
                runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                time.sleep(0.5)
            assert runs, "the run did not start"
            (run,) = runs
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status.value == "RUNNING", health

            worker.send_signal(signal.SIGKILL)
            worker.wait()
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

            # A run of another machine sharing the storage is that machine's to monitor.
            instance.add_run_tags(run.run_id, {HOST_TAG: "another-host"})
            with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
                list(execute_run_monitoring_iteration(context, logging.getLogger("monitor")))
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            instance.add_run_tags(run.run_id, {HOST_TAG: socket.gethostname()})

            with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
                list(execute_run_monitoring_iteration(context, logging.getLogger("monitor")))
            failed = instance.get_run_by_id(run.run_id)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            messages = [e.message for e in instance.all_logs(run.run_id)]
            assert any(f"Run worker process {worker.pid} is gone" in m for m in messages)
    finally:
        if worker.poll() is None:
            worker.kill()


OPEN_INSTANCE = """
import os, sys, time
from pathlib import Path

import dagster as dg

home = Path(sys.argv[1])
(home / f"ready.{os.getpid()}").touch()
while not (home / "go").exists():  # all open the storage at the same moment
    time.sleep(0.005)
with dg.DagsterInstance.from_config(str(home)) as instance:
    instance.get_runs()
"""


def test_processes_opening_a_new_storage_at_once_all_start(pg_dsn, tmp_path):
    """Two `ingest` commands and Celery workers started together on an empty storage: each
    would create Dagster's tables at the same time (`type "snapshots" already exists`); the
    storage's setup lock lets one create them and the others find them."""
    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    (tmp_path / "open_instance.py").write_text(OPEN_INSTANCE)
    env = {**os.environ, "DAGSTER_PG_URL": to_url(pg_dsn), "DAGSTER_HOME": str(tmp_path)}
    command = [sys.executable, str(tmp_path / "open_instance.py"), str(tmp_path)]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(6)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready.*"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [process.communicate(timeout=180)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, "\n".join(outputs)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('runs')").fetchone() == ("runs",)
