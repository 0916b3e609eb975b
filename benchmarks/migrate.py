"""Migration benchmark: `migrate data` against `pg_dump -Fc | pg_restore` (1 and 2 jobs), and the
CSV import with foreign-key checks against `psql \\copy` (foreign keys in place) and pandas.

    python benchmarks/migrate.py [--rows 2000000] [--csv-rows N] [--pandas-rows 50000]
        [--source DSN] [--target DSN] [--repeat 2]

Setup (not timed): the demo-hr source (`ingest-platform demo-hr`) with --rows hires in a fresh
database on --source, and its CSV files (--csv-rows hires, default --rows; ~1 % rows with a
missing parent). Each timed run gets a fresh target database on --target. Runs are interleaved
(ours, peer, ours, peer ...) and the best of --repeat is printed; pandas (slow) runs once on
--pandas-rows rows and is scaled linearly. Peak memory is the process's (ru_maxrss growth) for
ours, measured on half the CSV rows and on all of them. The load average is printed before and
after: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from ingest_platform.migration import csv_import, data, demo_hr, pg_tools, plan
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


def ours_import(target: str, files: list[Path]) -> tuple[float, int, int]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = csv_import.import_csv(
        target, "hr", "hired_employees", files, csv_import.CsvOptions(on_reject="quarantine")
    )
    seconds = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return seconds, len(result.rejects), grown


def psql_copy(target: str, files: list[Path]) -> float:
    """\\copy of each file into the table with its foreign keys (rows with a missing parent make
    the file fail; these are the clean files written with bad_parents off)."""
    conninfo, env = pg_tools.command_environment(target)
    started = time.perf_counter()
    for path in files:
        subprocess.run(
            [client("psql", target), "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}", "-c",
             f"\\copy hr.hired_employees FROM '{path}' WITH (FORMAT csv)"],
            check=True, env=env,
        )  # fmt: skip
    return time.perf_counter() - started


def pandas_import(target: str, files: list[Path], rows: int) -> float:
    import pandas as pd
    from sqlalchemy import create_engine

    from ingest_platform.postgres.connection import to_url

    engine = create_engine(to_url(target).replace("+psycopg2", "+psycopg"))
    started = time.perf_counter()
    names = ["id", "name", "datetime", "department_id", "job_id"]
    frame = pd.read_csv(
        files[0], header=None, names=names, nrows=rows,
        dtype={"department_id": "Int64", "job_id": "Int64"},
    )  # fmt: skip
    frame["datetime"] = pd.to_datetime(frame["datetime"]).dt.tz_localize(None)
    frame.to_sql("hired_employees", engine, schema="hr", if_exists="append", index=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--csv-rows", type=int, default=None)
    parser.add_argument("--pandas-rows", type=int, default=50_000)
    parser.add_argument("--source", default=SYSTEM)
    parser.add_argument("--target", default=SYSTEM)
    parser.add_argument("--repeat", type=int, default=2)
    options = parser.parse_args()
    csv_rows = options.csv_rows or options.rows
    print(f"load average at start: {load()}")
    source = fresh_database(options.source)
    ensure_role(options.target)
    workdir = Path(tempfile.mkdtemp(prefix="bench_migrate_"))
    results: dict[str, list[float]] = {}
    try:
        demo_hr.create_hr_source(source, options.rows)
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
        files = demo_hr.write_hr_csvs(workdir / "csv", csv_rows, options.rows + 1)
        clean = workdir / "clean"
        clean.mkdir()
        clean_files = []
        for path in files:  # the same rows without the ones \copy would refuse
            kept = clean / path.name
            with path.open("rb") as f, kept.open("wb") as out:
                for line in f:
                    fields = line.split(b",")
                    if not (fields[3].startswith(b"9") and len(fields[3]) == 3) and not (
                        fields[4].strip().startswith(b"9") and len(fields[4].strip()) == 3
                    ):
                        out.write(line)
            clean_files.append(kept)
        utf8 = [f for f in files if "latin1" not in f.name]
        rejects, memory = 0, {}
        for _ in range(options.repeat):
            for label in ("ours: import-csv (checks, quarantine)", "psql \\copy, FKs in place"):
                target = fresh_database(options.source)
                try:
                    demo_hr.create_hr_source(target, 0)
                    if label.startswith("ours"):
                        seconds, rejects, grown = ours_import(target, utf8)
                        memory["all"] = grown
                    else:
                        seconds = psql_copy(
                            target, [c for c in clean_files if "latin1" not in c.name]
                        )
                    results.setdefault(label, []).append(seconds)
                finally:
                    drop_database(target, options.source)
        target = fresh_database(options.source)
        try:
            demo_hr.create_hr_source(target, 0)
            seconds = pandas_import(target, clean_files, options.pandas_rows)
            scale = (csv_rows * 2 / 3) / options.pandas_rows
            results[f"pandas read_csv + to_sql (x{scale:.0f} from {options.pandas_rows:,})"] = [
                seconds * scale
            ]
        finally:
            drop_database(target, options.source)
    finally:
        drop_database(source, options.source)
    imported = csv_rows * 2 // 3
    print(f"\n{options.rows:,} hires migrated; CSV import of {imported:,} rows (2 UTF-8 files)")
    print(f"| what | best of {options.repeat} (s) | all runs (s) |\n|---|---|---|")
    for label, times in results.items():
        print(f"| {label} | {min(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
    print(f"\nrejects found by ours: {rejects:,}; peak memory growth of ours: "
          f"{memory.get('all', 0) / 1024:.0f} MB")  # fmt: skip
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
