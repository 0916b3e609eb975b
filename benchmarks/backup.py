"""Backup benchmark: `backup()` (Parquet) against `pg_dump -Fc` and `pg_dump -Fd -j 2`, and
`restore()` against `pg_restore -j 2`, on the 10-column benchmark table and the HR example.

    python benchmarks/backup.py [--rows 1000000] [--hr-rows 2000000] [--rounds 2]
        [--server DSN] [--memory]

Setup (not timed): a fresh database on --server with `bench.items` (--rows rows of the benchmark
table's 10 columns: bigint key, int, smallint, numeric(12,2), money, varchar(12), nullable text,
timestamp, bool, float8; generated in SQL with a fixed seed) and, when --hr-rows > 0, the HR
demo source (`ingest-platform demo-hr`, schema hr). Timed, interleaved, best of --rounds:
ours (backup with the fingerprints a restore proves against, 2 jobs), ours without fingerprints,
`pg_dump -Fc`, `pg_dump -Fd -j 2`; then restores into fresh databases: ours (COPY, keys after
data, then the proof) and `pg_restore -j 2` of the -Fd dump. Sizes are the directory's bytes.
`--memory`: peak RSS of a backup process at --rows and 4x --rows (a second table), to show it
flat. The load average is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Method, interleave, print_table, say_load
from migrate import client, drop_database, fresh_database

from ingest_platform.backup import backup, restore
from ingest_platform.migration import demo_hr, pg_tools
from ingest_platform.postgres.connection import connect

SYSTEM = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

ITEMS = """
CREATE SCHEMA IF NOT EXISTS bench;
SELECT setseed(0.16);
CREATE TABLE bench.{name} (
    id bigint PRIMARY KEY, customer_id int NOT NULL, quantity smallint NOT NULL,
    amount numeric(12,2) NOT NULL, price money NOT NULL, sku varchar(12) NOT NULL,
    description text, created_at timestamp NOT NULL, is_active bool NOT NULL,
    score float8 NOT NULL);
INSERT INTO bench.{name}
SELECT g, (random() * 2000000)::int, (random() * 99 + 1)::int, round((random() * 1e7)::numeric, 2),
       (random() * 1e6)::numeric::money, 'SKU-' || lpad((random() * 1e7)::int::text, 7, '0'),
       CASE WHEN random() < 0.1 THEN NULL
            ELSE substr('lorem ipsum dolor sit amet consectetur adipiscing elit sed do', 1,
                        (random() * 60)::int) END,
       timestamp '2015-01-01' + random() * interval '3650 days', random() < 0.7,
       random() * 1000
FROM generate_series(1, {rows}) g;
ANALYZE bench.{name};
"""


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hr-rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server", default=SYSTEM)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    say_load("before")
    source = fresh_database(args.server)
    work = Path(tempfile.mkdtemp(prefix="bench_backup_"))
    try:
        with connect(source, autocommit=True) as conn:
            conn.execute(ITEMS.format(name="items", rows=args.rows))
        schemas = ["bench"]
        if args.hr_rows:
            demo_hr.create_hr_source(source, args.hr_rows, 14, False)
            schemas.append("hr")
        with connect(source) as conn:
            rows = conn.execute(
                "SELECT sum(n_live_tup) FROM pg_stat_user_tables WHERE schemaname = ANY(%s)",
                (schemas,),
            ).fetchone()
        print(f"source: schemas {', '.join(schemas)}, about {int(rows[0] or 0):,} rows")
        run(source, schemas, work, args)
        if args.memory:
            memory(source, work, args)
    finally:
        drop_database(source, args.server)
        shutil.rmtree(work, ignore_errors=True)
    say_load("after")


def run(source: str, schemas: list[str], work: Path, args) -> None:
    sizes: dict[str, int] = {}
    conninfo, env = pg_tools.command_environment(source)
    dump = client("pg_dump", source)
    selection = [f"--schema={s}" for s in schemas]

    def ours(fingerprints: bool, name: str):
        def go() -> float:
            target = work / name
            shutil.rmtree(target, ignore_errors=True)
            started = time.perf_counter()
            backup(source, target, schemas=schemas, jobs=2, fingerprints=fingerprints)
            seconds = time.perf_counter() - started
            sizes[name] = directory_bytes(target)
            return seconds

        return go

    def pg_dump(options: list[str], name: str):
        def go() -> float:
            target = work / name
            shutil.rmtree(target, ignore_errors=True)
            started = time.perf_counter()
            subprocess.run([dump, *options, *selection, f"--file={target}",
                            f"--dbname={conninfo}"], check=True, env=env)  # fmt: skip
            seconds = time.perf_counter() - started
            sizes[name] = directory_bytes(target) if target.is_dir() else target.stat().st_size
            return seconds

        return go

    backups = [
        Method("ours: backup, Parquet, 2 jobs", ours(True, "ours")),
        Method("ours: backup without fingerprints", ours(False, "ours_nofp")),
        Method("pg_dump -Fc", pg_dump(["-Fc"], "fc")),
        Method("pg_dump -Fd -j 2", pg_dump(["-Fd", "-j", "2"], "fd")),
    ]
    interleave(backups, args.rounds)
    restore_program = client("pg_restore", source)

    def ours_restore() -> float:
        target = fresh_database(args.server)
        try:
            started = time.perf_counter()
            result = restore(work / "ours", target, jobs=2)
            seconds = time.perf_counter() - started
            assert result.passed, result.text()
            return seconds
        finally:
            drop_database(target, args.server)

    def pg_restore() -> float:
        target = fresh_database(args.server)
        try:
            tgt, _ = pg_tools.command_environment(target)
            started = time.perf_counter()
            subprocess.run([restore_program, "--no-owner", "-j", "2", f"--dbname={tgt}",
                            str(work / "fd")], check=True, env=env)  # fmt: skip
            return time.perf_counter() - started
        finally:
            drop_database(target, args.server)

    restores = [
        Method("ours: restore (COPY, keys, sequences, proof)", ours_restore),
        Method("pg_restore -j 2 (of -Fd)", pg_restore),
    ]
    interleave(restores, args.rounds)
    files = {backups[0].name: "ours", backups[1].name: "ours_nofp", backups[2].name: "fc",
             backups[3].name: "fd"}  # fmt: skip
    fc = backups[2].best or 1
    fc_size = sizes.get("fc", 1)
    lines = []
    for m in backups:
        size = sizes.get(files[m.name], 0)
        lines.append([m.name, f"{m.best:.2f}", f"{fc / (m.best or 1):.2f}x",
                      f"{size / 1e6:,.1f}", f"{size / fc_size:.2f}"])  # fmt: skip
    reference = restores[1].best or 1
    for m in restores:
        lines.append([m.name, f"{m.best:.2f}", f"{reference / (m.best or 1):.2f}x", "", ""])
    print()
    print_table(
        ["method", "best s", "speed vs pg_dump -Fc / pg_restore", "MB", "size vs -Fc"],
        lines,
        {0},
    )


_MEASURE = """
import resource, sys
from ingest_platform.backup import backup
backup(sys.argv[1], sys.argv[2], tables=[sys.argv[3]], jobs=1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(source: str, work: Path, args) -> None:
    with connect(source, autocommit=True) as conn:
        conn.execute(ITEMS.format(name="items4", rows=4 * args.rows))
    for table, rows in (("bench.items", args.rows), ("bench.items4", 4 * args.rows)):
        target = work / f"mem_{table}"
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, source, str(target), table],
            check=True,
            capture_output=True,
            text=True,
        )
        peak = int(done.stdout.strip().splitlines()[-1]) / 1024
        print(f"peak RSS of a backup of {table} ({rows:,} rows): {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
