"""Migration benchmark: `migrate data` against `pg_dump -Fc | pg_restore` (1 and 2 jobs), and the
CSV import with foreign-key checks against `psql \\copy` (foreign keys in place) and pandas.

    python benchmarks/migrate.py [--rows 2000000] [--csv-rows N] [--pandas-rows 50000]
        [--source DSN] [--target DSN] [--repeat 2] [--parts migrate,csv]

Setup (not timed): the demo-hr source (`ingest-platform demo-hr`) with --rows hires in a fresh
database on --source, and its CSV files (--csv-rows hires, default --rows; ~1 % rows with a
missing parent). Each timed run gets a fresh target database on --target. Runs are interleaved
(ours, peer, ours, peer ...) and the best of --repeat is printed; pandas (slow) runs once on
--pandas-rows rows and is scaled linearly. Every CSV row is imported: the two UTF-8 files in one
`import_csv` call, the Latin-1 one in a second (`\\copy ... ENCODING 'LATIN1'`; pandas reads a
sample of the first file). Ours runs in a child process, which reports its own time and peak memory
(ru_maxrss); the peak is also measured on a quarter of the rows (--csv-rows / 4), to show it does
not grow with the file. The load average is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from ingest_platform.migration import data, demo_hr, pg_tools, plan
from ingest_platform.postgres.connection import connect, with_database

SYSTEM = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def fresh_database(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server, name)


def drop_database(dsn: str, server: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def ensure_role(dsn: str) -> None:
    with connect(dsn) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'hr_reader'").fetchone():
            conn.execute("CREATE ROLE hr_reader NOLOGIN")


def ours_migrate(source: str, target: str, jobs: int) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        made = plan.make_plan(source, target, ["hr"], Path(workdir))
        data.migrate_data(made, jobs=jobs)
    return time.perf_counter() - started


def dump_restore(source: str, target: str, jobs: int) -> float:
    """pg_dump -Fc | pg_restore (a pipe allows one restore job; -j 2 needs a file)."""
    src, env = pg_tools.command_environment(source)
    tgt, _ = pg_tools.command_environment(target)
    dump, restore = client("pg_dump", target), client("pg_restore", target)
    started = time.perf_counter()
    if jobs == 1:
        pipeline = f"{dump} -Fc -n hr --dbname='{src}' | {restore} --no-owner --dbname='{tgt}'"
        subprocess.run(pipeline, shell=True, check=True, env=env)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            subprocess.run([dump, "-Fd", "-j", str(jobs), "-n", "hr", "-f", f"{workdir}/d",
                            f"--dbname={src}"], check=True, env=env)  # fmt: skip
            subprocess.run([restore, "--no-owner", "-j", str(jobs), f"--dbname={tgt}",
                            f"{workdir}/d"], check=True, env=env)  # fmt: skip
    return time.perf_counter() - started


def client(name: str, target: str) -> str:
    """The server's own client tools when the system has them for its major version (the
    wheel's 18 emit settings a 15 server refuses), else the wheel's."""
    with connect(target) as conn:
        major = conn.info.server_version // 10000
    system = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    return str(system) if system.exists() else pg_tools.pg_bin(name)


# The child: both imports timed together; prints [seconds, rejects, rows loaded, peak RSS KiB].
CHILD = """
import json, os, resource, sys, time
from pathlib import Path
from ingest_platform.migration import csv_import
files = [Path(p) for p in sys.argv[1:]]
quarantine = csv_import.CsvOptions(on_reject="quarantine")
latin1 = csv_import.CsvOptions(encoding="latin-1", on_reject="quarantine")
started = time.perf_counter()
results = [
    csv_import.import_csv(os.environ["BENCH_DSN"], "hr", "hired_employees", chosen, options)
    for chosen, options in (
        ([f for f in files if "latin1" not in f.name], quarantine),
        ([f for f in files if "latin1" in f.name], latin1),
    )
    if chosen
]
seconds = time.perf_counter() - started
print(json.dumps([seconds, sum(len(r.rejects) for r in results), sum(r.loaded for r in results),
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
"""


def ours_import(target: str, files: list[Path]) -> tuple[float, int, int, int]:
    """(seconds, rejects, rows loaded, peak RSS in KiB) of `import_csv` in a child process (the DSN
    in its environment, not on its command line)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, files)],
        env={**os.environ, "BENCH_DSN": target},
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, rejects, loaded, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, rejects, loaded, peak


def psql_copy(target: str, files: list[Path]) -> float:
    """\\copy of each file into the table with its foreign keys (rows with a missing parent make
    the file fail; these are the clean files written with bad_parents off)."""
    conninfo, env = pg_tools.command_environment(target)
    started = time.perf_counter()
    for path in files:
        encoding = ", ENCODING 'LATIN1'" if "latin1" in path.name else ""
        subprocess.run(
            [client("psql", target), "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}", "-c",
             f"\\copy hr.hired_employees FROM '{path}' WITH (FORMAT csv{encoding})"],
            check=True, env=env,
        )  # fmt: skip
    return time.perf_counter() - started


def pandas_import(target: str, files: list[Path], rows: int, row_by_row: bool = False) -> float:
    """The notebook way: read_csv, then to_sql with its defaults (SQLAlchemy's default driver for
    postgresql://, psycopg2, which SQLAlchemy 2 makes send 1,000-row INSERTs), in chunks of
    10,000 as commonly written; the foreign keys checked by the server, row by row.
    `row_by_row`: one INSERT per row, as SQLAlchemy 1.x's psycopg2 executemany did."""
    import pandas as pd
    from sqlalchemy import create_engine

    from ingest_platform.postgres.connection import to_url

    engine = create_engine(to_url(target), use_insertmanyvalues=not row_by_row)
    started = time.perf_counter()
    names = ["id", "name", "datetime", "department_id", "job_id"]
    frame = pd.read_csv(
        files[0], header=None, names=names, nrows=rows,
        dtype={"department_id": "Int64", "job_id": "Int64"},
    )  # fmt: skip
    frame["datetime"] = pd.to_datetime(frame["datetime"]).dt.tz_localize(None)
    frame.to_sql(
        "hired_employees", engine, schema="hr", if_exists="append", index=False, chunksize=10_000
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def clean_copy(files: list[Path], directory: Path) -> list[Path]:
    """The same files without the rows \\copy would refuse (a department or job id 900+)."""
    directory.mkdir()
    kept_files = []
    for path in files:
        kept = directory / path.name
        with path.open("rb") as f, kept.open("wb") as out:
            for line in f:
                fields = line.split(b",")
                if not (fields[3].startswith(b"9") and len(fields[3]) == 3) and not (
                    fields[4].strip().startswith(b"9") and len(fields[4].strip()) == 3
                ):
                    out.write(line)
        kept_files.append(kept)
    return kept_files


def bench_migrate(options, source: str, results: dict[str, list[float]]) -> None:
    for _ in range(options.repeat):
        for label, run in (
            ("ours: migrate data, 1 job", lambda s, t: ours_migrate(s, t, 1)),
            ("pg_dump -Fc | pg_restore", lambda s, t: dump_restore(s, t, 1)),
            ("ours: migrate data, 2 jobs", lambda s, t: ours_migrate(s, t, 2)),
            ("pg_dump -j 2 / pg_restore -j 2", lambda s, t: dump_restore(s, t, 2)),
        ):
            target = fresh_database(options.target)
            try:
                results.setdefault(label, []).append(run(source, target))
            finally:
                drop_database(target, options.target)


def with_hr_target(server: str, run):
    """`run(dsn)` on a fresh database holding the empty hr schema (keys in place)."""
    target = fresh_database(server)
    try:
        demo_hr.create_hr_source(target, 0)
        return run(target)
    finally:
        drop_database(target, server)


def bench_csv(options, csv_rows: int, workdir: Path, results: dict[str, list[float]]) -> dict:
    files = demo_hr.write_hr_csvs(workdir / "csv", csv_rows, options.rows + 1)
    clean_files = clean_copy(files, workdir / "clean")
    found: dict = {}
    server = options.target
    for _ in range(options.repeat):
        for label in ("ours: import-csv (all checks, quarantine)", "psql \\copy, FKs in place"):
            if label.startswith("ours"):
                seconds, found["rejects"], found["loaded"], found["peak_all"] = with_hr_target(
                    server, lambda t: ours_import(t, files)
                )
            else:
                seconds = with_hr_target(server, lambda t: psql_copy(t, clean_files))
            results.setdefault(label, []).append(seconds)
    quarter = demo_hr.write_hr_csvs(workdir / "quarter", csv_rows // 4, options.rows + 1)
    *_, found["peak_quarter"] = with_hr_target(server, lambda t: ours_import(t, quarter))
    for row_by_row, how in ((False, "1,000-row INSERTs"), (True, "one INSERT per row")):
        seconds = with_hr_target(
            server, lambda t, r=row_by_row: pandas_import(t, clean_files, options.pandas_rows, r)
        )
        scale = csv_rows / options.pandas_rows
        label = f"pandas read_csv + to_sql, {how} (x{scale:.0f} from {options.pandas_rows:,})"
        results[label] = [seconds * scale]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--csv-rows", type=int, default=None)
    parser.add_argument("--pandas-rows", type=int, default=50_000)
    parser.add_argument("--source", default=SYSTEM)
    parser.add_argument("--target", default=SYSTEM)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--parts", default="migrate,csv", help="migrate, csv or both")
    options = parser.parse_args()
    parts = set(options.parts.split(","))
    csv_rows = options.csv_rows or options.rows
    print(f"load average at start: {load()}")
    ensure_role(options.target)
    workdir = Path(tempfile.mkdtemp(prefix="bench_migrate_"))
    results: dict[str, list[float]] = {}
    found: dict = {}
    if "migrate" in parts:
        source = fresh_database(options.source)
        try:
            demo_hr.create_hr_source(source, options.rows)
            bench_migrate(options, source, results)
        finally:
            drop_database(source, options.source)
    if "csv" in parts:
        found = bench_csv(options, csv_rows, workdir, results)
    if "migrate" in parts:
        print(f"\n{options.rows:,} hires migrated")
    if "csv" in parts:
        print(f"CSV import of {csv_rows:,} rows (3 files: UTF-8 LF, Latin-1, UTF-8 CRLF)")
    print(f"| what | best of {options.repeat} (s) | all runs (s) |\n|---|---|---|")
    for label, times in results.items():
        print(f"| {label} | {min(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
    if found:
        print(
            f"\nours: {found['loaded']:,} rows loaded, {found['rejects']:,} rejects found; peak "
            f"memory (ru_maxrss of the child) {found['peak_quarter'] / 1024:.0f} MB at "
            f"{csv_rows // 4:,} rows, {found['peak_all'] / 1024:.0f} MB at {csv_rows:,} rows"
        )
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
