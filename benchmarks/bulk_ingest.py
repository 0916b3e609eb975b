"""``ingest()`` against pg-bulk-ingest's ``ingest``: the same rows, the same server, one run.

    /work/venv/bin/python benchmarks/bulk_ingest.py --rows 1000000 [--dsn DSN] [--workdir DIR]

The table is dump_load.py's: 10 columns (bigint, int, smallint, numeric(12,2), numeric(19,4),
varchar(12), varchar(200) or NULL, timestamp, boolean, double), the rows of its cached bcp dump
(generated on first use) parsed into Python values. Both libraries get the same SQLAlchemy table
and the same generator of ``(table, row)`` pairs over rows held in memory (parsed once, before any
timing: the parse costs ~20 us a row, more than either library, and would hide the difference);
the bare iteration is timed on its own line. Each run loads a fresh table in a database created
for the run (dropped at the end), after a CHECKPOINT; row counts are checked. Both libraries are
imported before any timing (pg_bulk_ingest takes ~0.6 s to import, which used to land in its first
timed run).

Requirements checked (PASS/FAIL): without a primary key ``ingest()`` at least 4x faster than
pg-bulk-ingest (``Upsert.IF_PRIMARY_KEY``, which appends when there is no key); with a primary
key (upsert) at least 3x faster. Peak memory: each library loads N and 4N rows (``--memory-rows``
N, streamed from the dump, not held in memory) in a child process that reports its peak RSS
(``VmHWM``); "flat" = the 4N peak within 20% of the N peak.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dump_load import (
    DEFAULT_DSN,
    bench_dump,
    checkpoint,
    count,
    parsed_rows,
    sqlalchemy_engine,
    sqlalchemy_table,
)

from ingest_platform.postgres.connection import scalar, with_database

MEMBER = "item_1.dat"


def table_for(schema: str, name: str, primary_key: bool):
    import sqlalchemy as sa

    _, plain = sqlalchemy_table(schema, name)
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        *(
            sa.Column(
                c.name,
                c.type,
                nullable=c.nullable,
                primary_key=primary_key and c.name == "id",
                autoincrement=False,
            )
            for c in plain.columns
        ),
        schema=schema,
    )
    return metadata, table


def run(
    library: str, dsn: str, schema: str, name: str, primary_key: bool, rows, batch_rows: int
) -> None:
    """One ingest of `rows` (an iterable of tuples) in batches of `batch_rows`."""
    metadata, table = table_for(schema, name, primary_key)

    def chunks(watermark):
        number = 0
        iterator = iter(rows)
        while True:
            number += 1
            pairs = ((table, row) for _, row in zip(range(batch_rows), iterator, strict=False))
            first = next(pairs, None)
            if first is None:
                return
            yield (
                (number, None, _chain(first, pairs))
                if library == "pg-bulk-ingest"
                else (number, _chain(first, pairs))
            )

    engine = sqlalchemy_engine(dsn)
    with engine.connect() as conn:
        if library == "pg-bulk-ingest":
            from pg_bulk_ingest import Delete, Upsert
            from pg_bulk_ingest import ingest as peer_ingest

            peer_ingest(conn, metadata, chunks, upsert=Upsert.IF_PRIMARY_KEY, delete=Delete.OFF)
        else:
            from ingest_platform import ingest

            ingest(conn, metadata, chunks)
    engine.dispose()


def _chain(first, rest):
    yield first
    yield from rest


# ---------------------------------------------------------------------------------------- report


@dataclass
class Line:
    method: str
    rows: int = 0
    seconds: float | None = None
    reference: float | None = None  # seconds of ours for the same job, for "x ours"
    target: str = ""
    passed: bool | None = None
    note: str = ""


def print_table(lines: list[Line]) -> None:
    header = ["method", "rows", "seconds", "rows/s", "x ours", "target", "result"]
    table = [header]
    for line in lines:
        ratio = line.seconds / line.reference if line.seconds and line.reference else None
        table.append(
            [
                line.method,
                f"{line.rows:,}" if line.rows else "",
                f"{line.seconds:.2f}" if line.seconds is not None else "",
                f"{line.rows / line.seconds:,.0f}" if line.rows and line.seconds else "",
                f"{ratio:.2f}x" if ratio else "",
                line.target,
                ("info" if line.passed is None else "PASS" if line.passed else "FAIL")
                + (f" ({line.note})" if line.note else ""),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if i in (0, 5, 6) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=False))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def own_peak_rss() -> int:
    """Peak RSS of this process in bytes: VmHWM (reset by exec, unlike ru_maxrss, which a child
    started by a big parent inherits on Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss(
    library: str, dsn: str, dump: Path, primary_key: bool, batch_rows: int
) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one streamed ingest in a fresh child process."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        library,
        "--dsn",
        dsn,
        "--dump",
        str(dump),
        "--batch-rows",
        str(batch_rows),
    ] + (["--primary-key"] if primary_key else [])
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])[
        "peak_rss"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the table (default 1,000,000)"
    )
    parser.add_argument(
        "--batch-rows", type=int, default=1_000_000, help="rows per batch (default 1,000,000)"
    )
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=200_000,
        help="N of the peak-memory runs (N and 4N rows; default 200,000)",
    )
    parser.add_argument(
        "--dsn", default=DEFAULT_DSN, help="server; a database is created and dropped on it"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ingest_platform_bench",
        help="where dump_load.py's generated dumps are cached",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child of peak_rss
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--primary-key", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        run(
            args.measure,
            args.dsn,
            "memory",
            f"t_{os.getpid()}",
            args.primary_key,
            parsed_rows(args.dump, MEMBER),
            args.batch_rows,
        )
        print(json.dumps({"peak_rss": own_peak_rss()}))
        return 0

    # Both libraries are imported before any timing: pg_bulk_ingest alone takes ~0.6 s to import.
    importlib.import_module("pg_bulk_ingest")
    importlib.import_module("ingest_platform.bulk_ingest")

    args.workdir.mkdir(parents=True, exist_ok=True)
    dump = bench_dump(args.workdir, 1, args.rows)
    print(f"Parsing {args.rows:,} rows of {dump.name} into memory (untimed) ...", flush=True)
    rows = list(parsed_rows(dump, MEMBER))
    gc.freeze()  # the rows are permanent: no library pays for the collector walking them
    database = f"bulk_bench_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        server = scalar(conn, "SHOW server_version")
    dsn = with_database(args.dsn, database)
    print(
        f"{len(rows):,} rows; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; PostgreSQL {server}; "
        f"batches of {args.batch_rows:,} rows",
        flush=True,
    )
    lines: list[Line] = []
    try:
        started = time.perf_counter()
        for _ in rows:
            pass
        lines.append(
            Line("(iterating the in-memory rows alone)", len(rows), time.perf_counter() - started)
        )
        for primary_key, factor in ((False, 4), (True, 3)):
            kind = "primary key, upsert" if primary_key else "no primary key, append"
            seconds = {}
            for library in ("ours", "pg-bulk-ingest"):
                name = f"{library.replace('-', '_')}_{'pk' if primary_key else 'nopk'}"
                checkpoint(dsn)
                began = time.perf_counter()
                run(library, dsn, "bench", name, primary_key, rows, args.batch_rows)
                seconds[library] = time.perf_counter() - began
                found = count(dsn, "bench", name)
                note = (
                    "" if found == len(rows) else f"loaded {found:,} rows, expected {len(rows):,}!"
                )
                print(f"  {library}, {kind}: {seconds[library]:.2f} s {note}", flush=True)
                if library == "ours":
                    lines.append(
                        Line(
                            f"ingest_platform ingest(), {kind}",
                            len(rows),
                            seconds[library],
                            seconds[library],
                            passed=None if not note else False,
                            note=note,
                        )
                    )
                else:
                    ratio = seconds[library] / seconds["ours"]
                    lines.append(
                        Line(
                            f"pg-bulk-ingest ingest(), {kind}",
                            len(rows),
                            seconds[library],
                            seconds["ours"],
                            f">= {factor}x ours",
                            ratio >= factor and not note,
                            note or f"ours {ratio:.1f}x faster",
                        )
                    )
        if not args.skip_memory:
            small, large = (
                bench_dump(args.workdir, 1, args.memory_rows),
                bench_dump(args.workdir, 1, 4 * args.memory_rows),
            )
            for library in ("ours", "pg-bulk-ingest"):
                for primary_key in (False, True):
                    peaks = {}
                    for factor, path in ((1, small), (4, large)):
                        checkpoint(dsn)
                        _, peaks[factor] = peak_rss(
                            library, dsn, path, primary_key, args.batch_rows
                        )
                    flat = peaks[4] <= 1.2 * peaks[1]
                    lines.append(
                        Line(
                            f"{library}: peak RSS, {'pk' if primary_key else 'no pk'}, "
                            f"{args.memory_rows:,} vs {4 * args.memory_rows:,} rows streamed",
                            target="4N peak within 20% of N" if library == "ours" else "",
                            passed=flat if library == "ours" else None,
                            note=f"{peaks[1] / 2**20:.0f} MiB -> {peaks[4] / 2**20:.0f} MiB",
                        )
                    )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    print()
    print_table(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
