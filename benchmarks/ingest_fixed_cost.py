"""`ingest-platform ingest` of a small dump, end to end: what the fixed cost is made of.

    .venv/bin/python benchmarks/ingest_fixed_cost.py [--rows 1000] [--repeat 3]
        [--tree DIR ...] [--server dsn|embedded ...] [--cases one,four] [--dsn DSN]

Each timing is a fresh process running the CLI's `main(["ingest", ...])` (what the console script
runs) on the demo dumps (`ingest-platform demo-dumps --rows N`): case `one` loads
`shop_2.0-eu.zip` (3 tables, SQL Server bcp), case `four` all four demo dumps (4 runs). Servers:
`dsn` = an already-running PostgreSQL given by INGEST_PG_DSN (--dsn; warehouse and Dagster
storage in two databases created for the benchmark and dropped at the end); `embedded` = no
INGEST_PG_DSN, so the CLI starts (and stops) the embedded server itself, in a state directory
made for the benchmark (its first, untimed run creates the cluster).

Trees: `--tree DIR` (repeatable; default: this checkout) puts DIR first on PYTHONPATH, so two
checkouts (e.g. main and a branch) are compared in one session. Every (tree, server) pair gets
one untimed warm-up run of all four dumps (tables, Dagster's schema); then the timed runs
interleave trees, servers and cases, `--repeat` rounds, and the best (lowest) total of each counts.
Timed runs load versions that are already loaded (the replace path), as a second `ingest` does.

Breakdown of a run, from timestamps taken in the child (around `start_services`,
`DagsterInstance.get`, `build_dump_definitions` and `execute_in_process`) and from the run's own
Dagster events (its steps' STEP_START -> STEP_SUCCESS):
  start+import  process start until `ingest_platform.local.cli` and `.ingest_command` are imported
  services      PostgreSQL found or started, DAGSTER_HOME prepared
  instance      the Dagster instance of DAGSTER_HOME (storage engines, table checks)
  defs          the dump definitions (assets, checks, job, sensor)
  runs          `execute_in_process` of each dump's run, of which:
  load step     mean STEP_START -> STEP_SUCCESS of a table's load step (load + its events)
  check step    mean of the other steps (the checks)
  rest          total minus the above (partitions, resources, summary, stopping, exit)
  cpu           user + system CPU seconds of the CLI process (not the server's)
  events        Dagster events written; `conn` new PostgreSQL sessions of the process (Dagster
                storage / warehouse), from pg_stat_database.sessions.
The machine's load average is printed with every timing: compare trees by the ratio of their
times in one session, not by absolute numbers across sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ONE_DUMP = "shop_2.0-eu.zip"

# Runs in the child: the CLI as the console script runs it, with timestamps around its phases.
CHILD = r"""
import json, sys, time
marks = {"started": time.time(), "spans": {}}
import ingest_platform.local.cli as cli
import ingest_platform.local.ingest_command as command
import dagster as dg
marks["imported"] = time.time()

def timed(name, function):
    def wrapper(*args, **kwargs):
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            marks["spans"].setdefault(name, []).append(time.time() - started)
    return wrapper

cli.start_services = timed("services", cli.start_services)
command.build_dump_definitions = timed("defs", command.build_dump_definitions)
dg.DagsterInstance.get = staticmethod(timed("instance", dg.DagsterInstance.get))
dg.JobDefinition.execute_in_process = timed("runs", dg.JobDefinition.execute_in_process)
try:
    code = cli.main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as out:
        json.dump(marks, out)
sys.exit(code)
"""


@dataclass
class Target:
    tree: Path
    server: str  # "dsn" or "embedded"
    state: Path
    env: dict[str, str]
    dagster_dsn: str | None = None  # libpq DSN of Dagster's storage database (dsn server)
    warehouse_db: str = "warehouse"
    dagster_db: str = "dagster"
    sessions: tuple[int, int] = (0, 0)  # (dagster, warehouse) at the last read

    @property
    def label(self) -> str:
        return f"{self.tree.name} / {self.server}"


@dataclass
class Timing:
    target: Target
    case: str
    total: float
    cpu: float
    load: float  # 1-minute load average when the run started
    phases: dict[str, float] = field(default_factory=dict)
    load_step: float | None = None
    check_step: float | None = None
    events: int = 0
    conn: tuple[int, int] = (0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1000, help="rows per main table (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (3); best counts")
    parser.add_argument(
        "--tree", type=Path, action="append", help="checkout to time (repeatable; default: this)"
    )
    parser.add_argument(
        "--server", action="append", choices=["dsn", "embedded"], help="default: both"
    )
    parser.add_argument("--cases", default="one,four", help="one, four or one,four (default)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="the running server (dsn mode)")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.tree or [PROJECT_DIR]]
    servers = args.server or ["dsn", "embedded"]
    cases = args.cases.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="ingest_fixed_cost_"))
    load_at_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the start: {load_at_start} ({os.cpu_count()} CPUs)", flush=True)
    sys.path.insert(0, str(PROJECT_DIR))
    from ingest_platform.demo.dumps import write_demo_dumps

    dumps = sorted(write_demo_dumps(workdir / "dumps", args.rows))
    case_paths = {"one": [workdir / "dumps" / ONE_DUMP], "four": dumps}
    targets = [
        make_target(args.dsn, workdir, n, tree, server)
        for n, tree in enumerate(trees)
        for server in servers
    ]
    timings: list[Timing] = []
    try:
        for target in targets:
            print(f"warm-up (untimed): {target.label}, four dumps ...", flush=True)
            run_cli(target, "four", dumps, workdir)
        for round_ in range(1, args.repeat + 1):
            for case in cases:
                for target in targets:
                    timing = run_cli(target, case, case_paths[case], workdir)
                    timings.append(timing)
                    print(
                        f"round {round_}: {target.label}, {case}: {timing.total:.2f} s "
                        f"(cpu {timing.cpu:.2f} s, load {timing.load:.1f})",
                        flush=True,
                    )
    finally:
        for target in targets:
            drop_target(args.dsn, target)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(timings, cases, targets)
    print()
    print_ratios(timings, cases, targets)
    print(
        f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"at the start: {load_at_start} ({os.cpu_count()} CPUs)"
    )
    return 0


def make_target(dsn: str, workdir: Path, n: int, tree: Path, server: str) -> Target:
    from ingest_platform.postgres.connection import to_url, with_database

    state = workdir / f"state_{n}_{server}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_", "PYTHON"))
    }
    env.update(
        PYTHONPATH=str(tree),
        INGEST_STATE_DIR=str(state),
        INGEST_DUMP_DIR=str(workdir / "watched"),
    )
    target = Target(tree, server, state, env)
    if server == "dsn":
        prefix = f"fixed_cost_{os.getpid()}_{n}"
        target.warehouse_db, target.dagster_db = f"{prefix}_wh", f"{prefix}_dagster"
        with psycopg.connect(dsn, autocommit=True) as conn:
            for database in (target.warehouse_db, target.dagster_db):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        target.dagster_dsn = with_database(dsn, target.dagster_db)
        env["INGEST_PG_DSN"] = with_database(dsn, target.warehouse_db)
        env["DAGSTER_PG_URL"] = to_url(target.dagster_dsn)
    return target


def drop_target(dsn: str, target: Target) -> None:
    if target.server != "dsn":
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        for database in (target.warehouse_db, target.dagster_db):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def run_cli(target: Target, case: str, paths: list[Path], workdir: Path) -> Timing:
    marks_file = workdir / "marks.json"
    marks_file.unlink(missing_ok=True)
    command = [sys.executable, "-c", CHILD, str(marks_file), "ingest", *map(str, paths)]
    load = os.getloadavg()[0]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=target.env, capture_output=True, text=True)
    total = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{target.label}: exit {done.returncode}\n" + "\n".join(tail))
    cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    marks = json.loads(marks_file.read_text())
    spans = {name: sum(values) for name, values in marks["spans"].items()}
    phases = {"start+import": marks["imported"] - launched, **spans}
    phases["rest"] = total - sum(phases.values())
    timing = Timing(target, case, total, cpu, load, phases)
    run_ids = re.findall(r"Run ([0-9a-f-]{36}):", done.stdout)
    read_run_records(target, run_ids, timing)
    return timing


def read_run_records(target: Target, run_ids: list[str], timing: Timing) -> None:
    """Step durations and event counts of the runs; sessions opened since the last read."""
    if target.server == "dsn":
        time.sleep(0.5)  # backends of the finished process report their sessions as they exit
        read_stats(target, target.dagster_dsn or "", run_ids, timing)
        return
    from ingest_platform.local.embedded_postgres import start_embedded_postgres
    from ingest_platform.postgres.connection import with_database

    server = start_embedded_postgres(target.state / "postgres")
    try:
        read_stats(target, with_database(server.dsn, target.dagster_db), run_ids, timing)
    finally:
        server.stop()


def read_stats(target: Target, dagster_dsn: str, run_ids: list[str], timing: Timing) -> None:
    with psycopg.connect(dagster_dsn) as conn:
        sessions = dict(
            conn.execute(
                "SELECT datname, sessions FROM pg_stat_database WHERE datname = ANY(%s)",
                ([target.dagster_db, target.warehouse_db],),
            ).fetchall()
        )
        events = conn.execute(
            "SELECT dagster_event_type, step_key, timestamp FROM event_logs "
            "WHERE run_id = ANY(%s) ORDER BY id",
            (run_ids,),
        ).fetchall()
    now = (sessions.get(target.dagster_db, 0), sessions.get(target.warehouse_db, 0))
    # Minus this reader's own session of the previous read.
    timing.conn = (now[0] - target.sessions[0] - 1, now[1] - target.sessions[1])
    target.sessions = now
    timing.events = len(events)
    started: dict[str, object] = {}
    loads, checks = [], []
    for kind, step, stamp in events:
        if kind == "STEP_START":
            started[step] = stamp
        elif kind == "STEP_SUCCESS" and step in started:
            seconds = (stamp - started[step]).total_seconds()
            (loads if step.startswith("load_") else checks).append(seconds)
    timing.load_step = statistics.mean(loads) if loads else None
    timing.check_step = statistics.mean(checks) if checks else None


PHASES = ["start+import", "services", "instance", "defs", "runs", "rest"]


def print_table(timings: list[Timing], cases: list[str], targets: list[Target]) -> None:
    header = ["tree / server", "case", "best s", "all runs (load)", "cpu s", *PHASES]
    header += ["load step", "check step", "events", "conn"]
    lines = [header]
    for case in cases:
        for target in targets:
            mine = [t for t in timings if t.target is target and t.case == case]
            if not mine:
                continue
            best = min(mine, key=lambda t: t.total)
            lines.append(
                [
                    target.label,
                    case,
                    f"{best.total:.2f}",
                    " ".join(f"{t.total:.1f}({t.load:.0f})" for t in mine),
                    f"{best.cpu:.2f}",
                    *(f"{best.phases[p]:.2f}" if p in best.phases else "" for p in PHASES),
                    f"{best.load_step:.3f}" if best.load_step is not None else "",
                    f"{best.check_step:.3f}" if best.check_step is not None else "",
                    str(best.events),
                    f"{best.conn[0]}/{best.conn[1]}",
                ]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_ratios(timings: list[Timing], cases: list[str], targets: list[Target]) -> None:
    """Each tree's best total relative to the first tree's, per server and case."""
    first = targets[0].tree
    for case in cases:
        for target in targets:
            if target.tree == first:
                continue
            base = [
                t.total
                for t in timings
                if t.case == case and t.target.tree == first and t.target.server == target.server
            ]
            mine = [t.total for t in timings if t.case == case and t.target is target]
            if base and mine:
                print(
                    f"{case}, {target.server}: {target.tree.name} best {min(mine):.2f} s = "
                    f"{min(mine) / min(base):.2f}x of {first.name} best {min(base):.2f} s"
                )


if __name__ == "__main__":
    sys.exit(main())
