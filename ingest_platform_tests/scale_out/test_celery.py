"""Steps on Celery workers: real RabbitMQ / Redis, two `ingest-platform worker` processes, the real
`ingest-platform ingest` with INGEST_EXECUTOR=celery, and a worker killed with SIGKILL mid-step."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import dagster as dg
import psycopg
import pytest

from ingest_platform.local.services import INSTANCE_CONFIG
from ingest_platform.postgres.connection import to_url
from ingest_platform_tests.test_dump_loading import leftover_load_tables, table_digest
from ingest_platform_tests.test_version_loads import rows, shop_dump

pytestmark = [pytest.mark.postgres, pytest.mark.celery]

RABBITMQ = "pyamqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"
TABLES = {"customer": 500, "orders": 3000, "items": 2000, "notes": 800}
CLI = [sys.executable, "-m", "ingest_platform.local.cli"]


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def broker_or_skip(url: str) -> str:
    port = 5672 if url.startswith("pyamqp") else 6379
    if not reachable(port):
        pytest.skip(f"no broker at 127.0.0.1:{port} ({url.split(':')[0]}): Celery tests need one")
    return url


def plain_url(dsn: str) -> str:
    """A postgresql:// URL as a user would write it (the storage adds the driver it needs)."""
    return to_url(dsn).replace("postgresql+psycopg2://", "postgresql://")


def instance_home(path: Path, pg_dsn: str, pool_limit: int = 2) -> dict[str, str]:
    """A Dagster instance as `ingest-platform dev` makes it (local/dagster.yaml: storage in
    PostgreSQL, pools), in a database of the warehouse's server."""
    path.mkdir()
    config = INSTANCE_CONFIG.read_text().replace("default_limit: 2", f"default_limit: {pool_limit}")
    (path / "dagster.yaml").write_text(config)
    return {"DAGSTER_HOME": str(path), "DAGSTER_PG_URL": plain_url(pg_dsn)}


@pytest.fixture
def celery_env(pg_dsn, tmp_path) -> dict[str, str]:
    """The project's environment for the launching side and the workers: one instance
    (DAGSTER_HOME), one warehouse, one broker; a queue of this test's own, so that nothing left
    on the broker by another run reaches these workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    return {
        **env,
        **instance_home(tmp_path / "dagster_home", pg_dsn),
        "INGEST_PG_DSN": pg_dsn,
        "INGEST_EXECUTOR": "celery",
        "INGEST_CELERY_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
    }


class Workers:
    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.processes = env, logs, {}

    def start(self, name: str, hiding: Path | None = None) -> None:
        """A worker; `hiding`: a directory it sees empty (a private mount namespace with a tmpfs
        there), as a machine without that shared directory would."""
        command = [*CLI, "worker", "--name", f"{name}@test"]
        if hiding is not None:
            script = f'mount -t tmpfs none "{hiding}" && exec "$@"'
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "-"]
            command += [*CLI, "worker", "--name", f"{name}@test"]
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its pool and COPY processes die with it (killpg)
        )
        deadline = time.monotonic() + 60
        while " ready." not in (self.logs / f"{name}.log").read_text():
            assert self.processes[name].poll() is None, self.log(name)
            assert time.monotonic() < deadline, f"worker {name} did not start: {self.log(name)}"
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def workers(celery_env, tmp_path) -> Iterator[Workers]:
    logs = tmp_path / "workers"
    logs.mkdir()
    pool = Workers(celery_env, logs)
    yield pool
    pool.stop()


def ingest(env: dict[str, str], path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "ingest", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # not left running after the test
        raise
    assert process.returncode == 0, output
    return output


@contextmanager
def open_instance(env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    with patch.dict(os.environ, {"DAGSTER_PG_URL": env["DAGSTER_PG_URL"]}):
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            yield instance


def step_workers(env: dict[str, str]) -> dict[str, set[str]]:
    """Celery worker of each step of the instance's runs, from the run's step events."""
    by_step: dict[str, set[str]] = {}
    with open_instance(env) as instance:
        for record in instance.get_run_records():
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event is None or event.event_type_value != "ENGINE_EVENT":
                    continue
                worker = event.engine_event_data.metadata.get("Celery worker")
                if worker is not None and event.step_key:
                    by_step.setdefault(event.step_key, set()).add(str(worker.value))
    return by_step


def four_table_dump(directory: Path, scale: int = 1) -> Path:
    return shop_dump(directory, "1.0", {t: rows(n * scale) for t, n in TABLES.items()})


@pytest.mark.parametrize("broker", [RABBITMQ, REDIS], ids=["rabbitmq", "redis"])
def test_a_dump_loads_on_two_workers_and_equals_a_local_run(
    broker, celery_env, workers, tmp_path, pg_server_dsn
):
    celery_env["INGEST_CELERY_BROKER"] = broker_or_skip(broker)
    dump = four_table_dump(tmp_path / "dumps")
    workers.start("alpha")
    workers.start("beta")
    output = finished(ingest(celery_env, dump))
    assert "succeeded" in output

    ran_on = step_workers(celery_env)
    loads = {step: names for step, names in ran_on.items() if step.startswith("load_")}
    assert len(loads) == len(TABLES), ran_on
    assert set().union(*loads.values()) == {"alpha@test", "beta@test"}, ran_on

    # The same dump loaded in-process into another database gives the same tables.
    local_db = f"local_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{local_db}"')
    try:
        local_dsn = psycopg.conninfo.make_conninfo(pg_server_dsn, dbname=local_db)
        local = {
            **celery_env,
            **instance_home(tmp_path / "local_home", local_dsn),
            "INGEST_EXECUTOR": "",
            "INGEST_PG_DSN": local_dsn,
        }
        finished(ingest(local, dump))
        for table, count in TABLES.items():
            celery_side = table_digest(celery_env["INGEST_PG_DSN"], "shop", f"{table}__v1.0")
            assert celery_side == table_digest(local_dsn, "shop", f"{table}__v1.0")
            assert celery_side[0] == count
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{local_db}" WITH (FORCE)')


def step_intervals(env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """(start, end) of each load step of the instance's runs, from STEP_START/STEP_SUCCESS."""
    times: dict[str, list[float]] = {}
    with open_instance(env) as instance:
        for record in instance.get_run_records():
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event and event.step_key and event.step_key.startswith("load_"):
                    if event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
                        times.setdefault(event.step_key, []).append(entry.timestamp)
    return {step: (min(t), max(t)) for step, t in times.items()}


def test_a_pool_limit_of_one_keeps_two_workers_from_writing_at_once(celery_env, workers):
    celery_env["INGEST_CELERY_BROKER"] = broker_or_skip(RABBITMQ)
    home = Path(celery_env["DAGSTER_HOME"])
    shutil.rmtree(home)
    celery_env.update(instance_home(home, celery_env["INGEST_PG_DSN"], pool_limit=1))
    dump = four_table_dump(home.parent / "dumps")
    workers.start("alpha")
    workers.start("beta")
    finished(ingest(celery_env, dump))
    intervals = sorted(step_intervals(celery_env).values())
    assert len(intervals) == len(TABLES)
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= start, intervals  # one table step at a time: pool ingest_postgres_writers


@pytest.mark.slow
def test_two_runs_of_one_version_at_once_on_celery_land_its_rows_once(celery_env, workers):
    celery_env["INGEST_CELERY_BROKER"] = broker_or_skip(RABBITMQ)
    dump = four_table_dump(Path(celery_env["DAGSTER_HOME"]).parent / "dumps", scale=20)
    workers.start("alpha")
    workers.start("beta")
    first, second = ingest(celery_env, dump), ingest(celery_env, dump)
    finished(first), finished(second)
    dsn = celery_env["INGEST_PG_DSN"]
    for table, count in TABLES.items():
        assert table_digest(dsn, "shop", f"{table}__v1.0")[0] == count * 20
    assert leftover_load_tables(dsn) == []


def test_a_worker_without_the_dump_directory_fails_the_step_naming_path_and_host(
    celery_env, workers, tmp_path
):
    celery_env["INGEST_CELERY_BROKER"] = broker_or_skip(RABBITMQ)
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip(
            "a worker without the dump directory needs `unshare` as root (a mount namespace)"
        )
    dump = four_table_dump(tmp_path / "dumps")
    workers.start("alpha", hiding=tmp_path / "dumps")
    run = ingest(celery_env, dump)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1
    assert (
        f"Dump {dump} is not on host {socket.gethostname()}: every machine that runs steps"
        in output
    )
    with psycopg.connect(celery_env["INGEST_PG_DSN"]) as conn:
        assert conn.execute("SELECT to_regclass('shop.orders')").fetchone() == (None,)
    assert leftover_load_tables(celery_env["INGEST_PG_DSN"]) == []


def copying_backend(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s",
                (f"COPY %{table}%",),
            ).fetchone()[0]  # type: ignore[index]
        )


def worker_of_step(env: dict[str, str], table: str) -> str | None:
    for step, names in step_workers(env).items():
        if step.startswith("load_") and table in step:
            return next(iter(names)).split("@")[0]
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_step_hands_the_step_to_the_other_and_rows_land_once(
    celery_env, workers, tmp_path
):
    celery_env["INGEST_CELERY_BROKER"] = broker_or_skip(RABBITMQ)
    dump = shop_dump(tmp_path / "dumps", "1.0", {"orders": rows(600_000), "notes": rows(50)})
    workers.start("alpha")
    workers.start("beta")
    run = ingest(celery_env, dump)
    dsn = celery_env["INGEST_PG_DSN"]
    deadline = time.monotonic() + 120
    while not (copying_backend(dsn, "orders") and worker_of_step(celery_env, "orders")):
        assert run.poll() is None, run.communicate()[0]
        assert time.monotonic() < deadline, "the orders step never started copying"
        time.sleep(0.05)
    victim = worker_of_step(celery_env, "orders")
    assert victim is not None
    workers.kill(victim)

    output = finished(run)
    assert "succeeded" in output
    survivor = ({"alpha", "beta"} - {victim}).pop()
    orders_step = next(
        s for s in step_workers(celery_env) if "orders" in s and s.startswith("load_")
    )
    assert step_workers(celery_env)[orders_step] == {f"{victim}@test", f"{survivor}@test"}
    assert table_digest(dsn, "shop", "orders__v1.0")[0] == 600_000
    assert table_digest(dsn, "shop", "notes__v1.0")[0] == 50
    assert leftover_load_tables(dsn) == []
