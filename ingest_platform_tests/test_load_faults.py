"""Faults during a dump load, with real processes: kill -9 mid-COPY and mid-attach, PostgreSQL
restarted mid-load. After each the loader's processes are gone (workers die with their parent; a
loader whose server went away exits) and a re-run converges: exact rows, no load table left.

Issue 12 ("Faults", "Orphan workers") and issue 20 ("PostgreSQL restarted during a load: the
ingest process never exits").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from ingest_platform.loading.dump_versions import load_dump_version
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.postgres.connection import ensure_database, to_url, with_database
from ingest_platform_tests.test_cli import run_cli
from ingest_platform_tests.test_dump_loading import leftover_load_tables, versions_of
from ingest_platform_tests.test_version_loads import rows, shop_dump, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BIG = 400_000  # rows: ~10 MB, cut into blocks for two COPY workers; long enough to hit mid-COPY


def start_loader(dsn: str, path: Path) -> subprocess.Popen:
    """`load_dump_version` in a process of its own, with two COPY workers."""
    code = (
        "import sys\n"
        "from ingest_platform.loading.dump_versions import load_dump_version\n"
        "load_dump_version(sys.argv[1], sys.argv[2], processes=2)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, dsn, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def backends(dsn: str, where: str) -> int:
    """Backends of this database (other than ours) matching `where` on pg_stat_activity."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            f" AND pid <> pg_backend_pid() AND {where}"
        ).fetchone()[0]


def copying(dsn: str) -> int:
    return backends(dsn, "state = 'active' AND query LIKE 'COPY %'")


def test_kill_9_mid_copy_leaves_no_worker_and_a_rerun_converges(pg_dsn, tmp_path):
    path = shop_dump(tmp_path, "1.0", {"orders": rows(BIG)})
    loader = start_loader(pg_dsn, path)
    try:
        wait_until(lambda: copying(pg_dsn) >= 1, what="a COPY worker to stream")
        os.kill(loader.pid, signal.SIGKILL)
        loader.wait(timeout=10)
        # The workers notice their parent is gone and exit; their COPYs roll back.
        wait_until(lambda: backends(pg_dsn, "TRUE") == 0, timeout=30, what="workers to exit")
    finally:
        loader.kill()
    assert versions_of(pg_dsn, "shop", "orders") == {}
    [report] = load_dump_version(pg_dsn, path, processes=2)  # never waits on the dead run
    assert report.rows == BIG
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": BIG}
    assert leftover_load_tables(pg_dsn) == []


def test_kill_9_of_ingest_platform_ingest_mid_copy_and_a_rerun_converges(
    pg_dsn, tmp_path, project, clean_env
):
    """The same through Dagster: the command's run, its COPY workers and its version lock."""
    clean_env.update(INGEST_PG_DSN=pg_dsn, DAGSTER_PG_URL=to_url(pg_dsn))
    path = shop_dump(tmp_path / "dumps", "1.0", {"orders": rows(BIG), "customer": rows(10)})
    command = [sys.executable, "-m", "ingest_platform.local.cli", "ingest", str(path)]
    ingest = subprocess.Popen(command, cwd=project, env=clean_env, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: copying(pg_dsn) >= 1, timeout=120, what="the run's COPY")
        os.kill(ingest.pid, signal.SIGKILL)
        ingest.wait(timeout=10)
        wait_until(lambda: backends(pg_dsn, "TRUE") == 0, timeout=30, what="workers to exit")
    finally:
        ingest.kill()
    assert versions_of(pg_dsn, "shop", "orders") == {}
    result = run_cli(["ingest", str(path)], project, clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": BIG}
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 10}
    assert leftover_load_tables(pg_dsn) == []


def test_kill_9_mid_attach_keeps_the_previous_version_and_a_rerun_converges(pg_dsn, tmp_path):
    load_dump_version(
        pg_dsn, shop_dump(tmp_path / "a", "1.0", {"customer": rows(10), "orders": rows(100)})
    )
    new = shop_dump(tmp_path / "b", "1.0", {"customer": rows(12), "orders": rows(120)})
    with psycopg.connect(pg_dsn) as reader:
        # A reader's open transaction keeps the attach waiting for its lock: kill it there.
        reader.execute("SELECT count(*) FROM shop.orders")
        loader = start_loader(pg_dsn, new)
        try:
            wait_until(
                lambda: (
                    backends(pg_dsn, "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'") == 1
                ),
                what="the attach to wait for the reader",
            )
            os.kill(loader.pid, signal.SIGKILL)
            loader.wait(timeout=10)
        finally:
            loader.kill()
        reader.rollback()
    # The attach's backend rolls back once it gets the lock and finds its client gone.
    wait_until(lambda: backends(pg_dsn, "TRUE") == 0, timeout=30, what="the dead attach to end")
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 100}
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 10}
    load_dump_version(pg_dsn, new)
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 120}
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 12}
    assert leftover_load_tables(pg_dsn) == []


@pytest.fixture
def own_server():
    """An embedded PostgreSQL of this test's own, to restart."""
    data_dir = Path(tempfile.mkdtemp(prefix="ingest_restart_pg_")) / "data"
    server = start_embedded_postgres(data_dir, delete_on_stop=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_postgres_restarted_mid_load_the_loader_exits_and_a_rerun_converges(own_server, tmp_path):
    from embedded_postgres._commands import pg_ctl

    ensure_database(own_server.dsn, "restart")
    dsn = with_database(own_server.dsn, "restart")
    path = shop_dump(tmp_path, "1.0", {"orders": rows(BIG)})
    loader = start_loader(dsn, path)
    try:
        wait_until(lambda: copying(dsn) >= 1, what="a COPY worker to stream")
        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=own_server.server.pgdata,
            user=own_server.server.system_user,
        )
        started = time.monotonic()
        _, stderr = loader.communicate(timeout=60)  # it exits: nothing waits forever
    finally:
        loader.kill()
    assert loader.returncode != 0 and time.monotonic() - started < 60
    last = stderr.strip().splitlines()[-1]
    assert "PostgreSQL" in last or "connection" in last, last
    [report] = load_dump_version(dsn, path, processes=2)
    assert report.rows == BIG
    assert versions_of(dsn, "shop", "orders") == {"1.0": BIG}
    assert leftover_load_tables(dsn) == []
