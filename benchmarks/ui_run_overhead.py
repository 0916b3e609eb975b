"""The UI path: what a dump's run costs when the sensor launches it under `ingest-platform dev`.

    .venv/bin/python benchmarks/ui_run_overhead.py [--tree DIR ...] [--rows 1000] [--dsn DSN]

One `ingest-platform dev` per tree (`--tree`, repeatable, default this checkout; each a checkout
with workspace.yaml, first on PYTHONPATH), all at the same time, on the server of --dsn (two
databases per tree, made for the benchmark and dropped at the end) with their own emulator and UI
ports. The demo dumps (`--rows` per main table) are copied into every tree's watched directory
together, one dump at a time, waiting until each tree's run of it has finished: first
`shop_2.0-eu.zip` (its new tables make the sensor reload the code location: a warm-up, not
counted), then the other three. Per run, from its Dagster events: queued (RUN_ENQUEUED ->
RUN_STARTING: the daemon), worker start (RUN_STARTING -> RUN_START: a spawned process imports the
code location and opens the instance), run (RUN_START -> RUN_SUCCESS: steps and event writes).
The BigQuery mirror's runs that follow each load run too, as in real use. Compare trees by the sums
of one session: the machine's load moves a lot during a session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
WARM_UP = "shop_2.0-eu.zip"
JOB = "ingest_shop_dump"
STARTUP_SECONDS = 600


@dataclass
class Session:
    tree: Path
    dumps: Path  # the watched directory
    dagster_dsn: str
    databases: tuple[str, str]
    process: subprocess.Popen
    up: threading.Event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, action="append", help="checkout (repeatable)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per main table (1000)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="the server to use")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT_DIR))
    from ingest_platform.demo.dumps import write_demo_dumps

    trees = [tree.resolve() for tree in args.tree or [PROJECT_DIR]]
    workdir = Path(tempfile.mkdtemp(prefix="ui_run_overhead_"))
    load_at_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the start: {load_at_start} ({os.cpu_count()} CPUs)", flush=True)
    dumps = sorted(write_demo_dumps(workdir / "source", args.rows), key=lambda p: p.name != WARM_UP)
    sessions: list[Session] = []
    try:
        for n, tree in enumerate(trees):
            sessions.append(start_dev(args.dsn, workdir / f"tree_{n}", n, tree))
        for session in sessions:
            if not session.up.wait(STARTUP_SECONDS):
                raise SystemExit(f"{session.tree}: the UI did not come up; see {workdir}")
        for done, dump in enumerate(dumps, 1):
            for session in sessions:  # whole files only: the sensor must not see a partial copy
                shutil.copyfile(dump, session.dumps / f".{dump.name}")
                os.replace(session.dumps / f".{dump.name}", session.dumps / dump.name)
            deadline = time.monotonic() + STARTUP_SECONDS
            while any(finished_runs(s) < done for s in sessions):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{dump.name}: no finished run within {STARTUP_SECONDS} s")
                time.sleep(1)
            print(f"{dump.name} loaded (load average {os.getloadavg()[0]:.1f})", flush=True)
        print()
        sums = {session.tree: report(session) for session in sessions}
    finally:
        for session in sessions:
            stop_dev(args.dsn, session)
        shutil.rmtree(workdir, ignore_errors=True)
    first = trees[0]
    for tree in trees[1:]:
        print(
            f"{tree.name} vs {first.name}, sums of the measured runs: worker start "
            f"{sums[tree][0] / sums[first][0]:.2f}x, run {sums[tree][1] / sums[first][1]:.2f}x"
        )
    print(
        f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"at the start: {load_at_start}"
    )
    return 0


def start_dev(dsn: str, state: Path, n: int, tree: Path) -> Session:
    from ingest_platform.local.ports import free_port
    from ingest_platform.postgres.connection import to_url, with_database

    databases = (f"ui_overhead_{os.getpid()}_{n}_wh", f"ui_overhead_{os.getpid()}_{n}_dagster")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for database in databases:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    (state / "dumps").mkdir(parents=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_", "PYTHON"))
    }
    env.update(
        PYTHONPATH=str(tree),
        INGEST_STATE_DIR=str(state / "state"),
        INGEST_DUMP_DIR=str(state / "dumps"),
        INGEST_PG_DSN=with_database(dsn, databases[0]),
        DAGSTER_PG_URL=to_url(with_database(dsn, databases[1])),
        INGEST_BQ_EMULATOR_REST_PORT=str(free_port()),
        INGEST_BQ_EMULATOR_GRPC_PORT=str(free_port()),
    )
    log = (state / "dev.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest_platform.local.cli", "dev", "--port", str(free_port())],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    up = threading.Event()

    def read() -> None:
        for line in process.stdout or ():
            log.write(line)
            log.flush()
            if "Dagster UI:" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    return Session(tree, state / "dumps", with_database(dsn, databases[1]), databases, process, up)


def stop_dev(dsn: str, session: Session) -> None:
    """Ctrl-C, as in a terminal (the launcher's ordered stop), then drop the databases."""
    if session.process.poll() is None:
        os.killpg(session.process.pid, signal.SIGINT)
        try:
            session.process.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(session.process.pid, signal.SIGKILL)
            session.process.wait()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for database in session.databases:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def finished_runs(session: Session) -> int:
    try:
        with psycopg.connect(session.dagster_dsn) as conn:
            return conn.execute(
                "SELECT count(*) FROM runs WHERE pipeline_name = %s "
                "AND status IN ('SUCCESS', 'FAILURE', 'CANCELED')",
                (JOB,),
            ).fetchone()[0]
    except psycopg.Error:  # Dagster has not created its tables yet
        return 0


def report(session: Session) -> tuple[float, float]:
    """Print the tree's runs; (worker start, run) seconds summed over the measured runs."""
    with psycopg.connect(session.dagster_dsn) as conn:
        runs = conn.execute(
            "SELECT runs.run_id, status, value FROM runs LEFT JOIN run_tags "
            "ON run_tags.run_id = runs.run_id AND key = %s "
            "WHERE pipeline_name = %s ORDER BY create_timestamp",
            ("ingest/dump_path", JOB),
        ).fetchall()
        print(f"{session.tree}")
        print(f"  {'dump':16}  {'status':7}  queued s  worker start s  run s  events")
        sums = [0.0, 0.0]
        for run_id, status, path in runs:
            events = conn.execute(
                "SELECT dagster_event_type, timestamp FROM event_logs WHERE run_id = %s "
                "ORDER BY id",
                (run_id,),
            ).fetchall()
            first: dict = {}
            for kind, stamp in events:
                first.setdefault(kind, stamp)
            end = "PIPELINE_SUCCESS" if "PIPELINE_SUCCESS" in first else "PIPELINE_FAILURE"
            queued = span(first, "PIPELINE_ENQUEUED", "PIPELINE_STARTING")
            worker = span(first, "PIPELINE_STARTING", "PIPELINE_START")
            run = span(first, "PIPELINE_START", end)
            name = Path(path or "?").name
            if name != WARM_UP:
                sums[0] += worker
                sums[1] += run
            print(
                f"  {name:16}  {status:7}  {queued:8.2f}  {worker:14.2f}  {run:5.2f}  {len(events)}"
                + ("  (warm-up)" if name == WARM_UP else "")
            )
        print(f"  sum of the measured runs: worker start {sums[0]:.2f} s, run {sums[1]:.2f} s")
    return sums[0], sums[1]


def span(first: dict, start: str, stop: str) -> float:
    """Seconds between the first events of two types (NaN when one is missing)."""
    if start not in first or stop not in first:
        return float("nan")
    return (first[stop] - first[start]).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
