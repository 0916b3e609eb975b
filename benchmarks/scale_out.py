"""A 16-table dump through Celery workers vs the local executors, in one run, one server.

    .venv/bin/python benchmarks/scale_out.py [--tables 16] [--rows 4000000] [--rounds 2]
        [--dsn DSN] [--broker URL] [--workdir DIR]

Four ways to run the same `ingest-platform ingest dump.zip`, interleaved in rounds (best of the
rounds reported): in one process (the default), a process per step (INGEST_EXECUTOR=multiprocess),
and Celery on RabbitMQ with one and with two `ingest-platform worker` processes (each one step at a
time). Every run loads into a schema of its own (INGEST_DUMP_SCHEMA_PREFIX) of one database; the
Dagster instance is the platform's (local/dagster.yaml: storage in PostgreSQL, pools of 2 writers).

Printed per way: the run's wall time and rows/s, the machine's busy cores during it (all CPU
time of every process, PostgreSQL's included, over wall time: what the 2 cores allow), and each
step's launch-to-start latency (Celery: "Submitting celery task" -> STEP_START; multiprocess:
STEP_WORKER_STARTING -> STEP_START), median and p95, from the run's events.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
from common import print_table, say_load
from dump_load import DEFAULT_DSN, bench_dump, busy_cpu_seconds

from ingest_platform.local.services import INSTANCE_CONFIG
from ingest_platform.postgres.connection import to_url, with_database

CLI = [sys.executable, "-m", "ingest_platform.local.cli"]
CELERY_SUBMIT = "Submitting celery task"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=16)
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows in all tables")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="a server where databases are made")
    parser.add_argument("--broker", default="pyamqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ingest_bench"
    )
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    dump = bench_dump(args.workdir, args.tables, args.rows // args.tables)
    say_load("before")

    database = f"bench_scale_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    home = Path(tempfile.mkdtemp(prefix="bench_dagster_home_"))
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text())
    dsn = with_database(args.dsn, database)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": to_url(dsn),
        "INGEST_PG_DSN": dsn,
        "INGEST_CELERY_BROKER": args.broker,
    }
    one, two = f"bench-one-{uuid.uuid4().hex[:6]}", f"bench-two-{uuid.uuid4().hex[:6]}"
    # Worker A serves both queues, worker B only the two-worker one.
    workers = [start_worker(env, "a", f"{one},{two}", home), start_worker(env, "b", two, home)]
    ways = {
        "in-process (default)": {},
        "multiprocess": {"INGEST_EXECUTOR": "multiprocess"},
        "celery, 1 worker": {"INGEST_EXECUTOR": "celery", "INGEST_CELERY_QUEUE": one},
        "celery, 2 workers": {"INGEST_EXECUTOR": "celery", "INGEST_CELERY_QUEUE": two},
    }
    results: dict[str, list[dict]] = {name: [] for name in ways}
    try:
        for number in range(args.rounds):
            names = list(ways)
            names = names[number % len(names) :] + names[: number % len(names)]
            for name in names:
                schema_prefix = f"r{number}_{len(results[name])}_{names.index(name)}_"
                run_env = {**env, **ways[name], "INGEST_DUMP_SCHEMA_PREFIX": schema_prefix}
                result = run_ingest(run_env, dump)
                results[name].append(result)
                print(f"  round {number + 1} {name}: {result['seconds']:.1f} s", flush=True)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')

    say_load("after")
    print(
        f"\n{args.tables} tables, {args.rows:,} rows ({dump.stat().st_size / 1e6:.0f} MB zip), "
        f"{os.cpu_count()} CPUs, best of {args.rounds}"
    )
    local = min(r["seconds"] for r in results["in-process (default)"])
    lines = []
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        latencies = [x for r in runs for x in r["latencies"]]
        lines.append(
            [
                name,
                f"{best['seconds']:.1f}",
                f"{args.rows / best['seconds']:,.0f}",
                f"{local / best['seconds']:.2f}x",
                f"{best['busy_cores']:.2f}",
                f"{statistics.median(latencies):.2f}" if latencies else "-",
                f"{percentile(latencies, 95):.2f}" if latencies else "-",
            ]
        )
    print_table(
        ["way", "seconds", "rows/s", "vs in-process", "busy cores", "launch->start p50 s", "p95 s"],
        lines,
        left={0},
    )
    return 0


def start_worker(env: dict, name: str, queues: str, home: Path) -> subprocess.Popen:
    log = home / f"worker_{name}.log"
    process = subprocess.Popen(
        [*CLI, "worker", "--name", f"bench-{name}@%h", "--queue", queues],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def run_ingest(env: dict, dump: Path) -> dict:
    busy, started = busy_cpu_seconds(), time.perf_counter()
    done = subprocess.run([*CLI, "ingest", str(dump)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    busy = busy_cpu_seconds() - busy
    if done.returncode != 0:
        raise SystemExit(f"ingest failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    run_id = done.stdout.rsplit("Run ", 1)[1].split(":")[0]
    return {
        "seconds": seconds,
        "busy_cores": busy / seconds,
        "latencies": launch_latencies(env, run_id),
    }


def launch_latencies(env: dict, run_id: str) -> list[float]:
    """Seconds from each step's launch (engine event) to its STEP_START."""
    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    launched: dict[str, float] = {}
    latencies = []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or not event.step_key:
                continue
            kind = event.event_type_value
            celery_submit = kind == "ENGINE_EVENT" and entry.message.startswith(CELERY_SUBMIT)
            if celery_submit or kind == "STEP_WORKER_STARTING":  # multiprocess: a new process
                launched[event.step_key] = entry.timestamp
            elif event.event_type_value == "STEP_START" and event.step_key in launched:
                latencies.append(entry.timestamp - launched[event.step_key])
    return latencies


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    sys.exit(main())
