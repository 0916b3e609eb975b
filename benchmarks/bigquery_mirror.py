"""Mirror the 10-column benchmark table to the BigQuery emulator, and check it.

    /work/venv/bin/python benchmarks/bigquery_mirror.py --rows 1000000 \
        [--sample-rows 50000] [--dsn DSN]

Rows: the same generated table as benchmarks/dump_load.py (cached dump in --workdir), loaded into
a database created for the run with our loader, as dump version `<rows>` of `bench.item_1`.
A private emulator (in memory, spatial off) is started for the run and stopped at the end.

Printed table:
  - Storage Write (ours): `mirror_dump_version` (server-side cursor, protobuf rows, pending
    streams, batch commit) on all rows, in a child process whose peak RSS is sampled every 20 ms;
  - `insert_rows_json` (batches of 10,000) and `load_table_from_json` (one job) on the same
    converted rows, on a --sample-rows sample, extrapolated (marked "extrapolated");
  - consistency: `compare_hashes` on the unchanged table next to `count(*)` on each side and
    to the naive way (fetch every row from both sides, compare in Python; on the sample if
    --naive-rows is smaller than --rows, extrapolated).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dump_load import DEFAULT_DSN, bench_dump

from ingest_platform.bigquery.clients import (
    EMULATOR_PROJECT,
    EmulatorEndpoints,
    emulator_bigquery_client,
    emulator_write_client,
)
from ingest_platform.bigquery.mirror import MirrorTarget, dump_source, mirror_dump_version
from ingest_platform.consistency.compare import BigQuerySide, PostgresSide, compare_hashes
from ingest_platform.loading.dump_versions import load_dump_version
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.ports import free_port
from ingest_platform.postgres.connection import with_database

SCHEMA, TABLE = "bench", "item_1"


def measure_write(dsn: str, rest: str, grpc: str, version: str, dataset: str) -> None:
    """Child process: one Storage Write mirror run."""
    endpoints = EmulatorEndpoints(rest, grpc)
    client, writer = emulator_bigquery_client(endpoints), emulator_write_client(endpoints)
    with psycopg.connect(dsn) as conn:
        result = mirror_dump_version(
            conn,
            client,
            writer,
            SCHEMA,
            TABLE,
            version,
            MirrorTarget(EMULATOR_PROJECT, dataset, TABLE),
        )
    print(f"RESULT {result.rows} {result.seconds:.3f} {result.bytes} {result.requests}", flush=True)


def run_child(args: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak, process = 0, psutil.Process(child.pid)
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.02)
    output, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"child exited with {child.returncode}: {output}")
    return time.perf_counter() - started, peak, output


def json_rows(conn, source, limit: int) -> list[dict]:
    """The same rows, as insert_rows_json/load_table_from_json take them."""
    from ingest_platform.bigquery.source import read_rows

    names = [c.bq_name for c in source.columns]
    rows: list[dict] = []
    for chunk in read_rows(conn, source):
        for row in chunk:
            item = {}
            for column, name, value in zip(source.columns, names, row, strict=True):
                if value is None:
                    continue
                if column.kind == "timestamp":
                    value = value / 1e6
                elif column.kind == "datetime":
                    import datetime as dt

                    value = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=value)).isoformat()
                item[name] = value
            rows.append(item)
            if len(rows) >= limit:
                return rows
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=50_000,
        help="rows for insert_rows_json/load_table_from_json",
    )
    parser.add_argument(
        "--skip-json",
        action="store_true",
        help="skip the insert_rows_json/load_table_from_json rows (slow; the latter fails for "
        "small samples)",
    )
    parser.add_argument(
        "--naive-rows",
        type=int,
        default=None,
        help="rows for the fetch-everything comparison (default --rows)",
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ingest_platform_bench"
    )
    parser.add_argument("--measure-write", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_write:
        measure_write(*args.measure_write)
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    dump = bench_dump(args.workdir, 1, args.rows)
    database = f"ingest_bench_bq_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = with_database(args.dsn, database)
    emulator = start_emulator(
        free_port(), free_port(), None, args.workdir / "bigquery_mirror_emulator.log"
    )
    # (method, rows measured, seconds for all rows, rows per second or None, notes)
    lines: list[tuple[str, int, float, float | None, str]] = []
    try:
        started = time.perf_counter()
        load_dump_version(dsn, dump, SCHEMA, processes=1)
        print(
            f"loaded {args.rows:,} rows into PostgreSQL in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        endpoints = EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
        client = emulator_bigquery_client(endpoints)
        client.create_dataset("bench")
        version = str(args.rows)

        seconds, peak, output = run_child(
            ["--measure-write", dsn, endpoints.rest, endpoints.grpc, version, "bench"]
        )
        written, write_text, nbytes, requests = output.split("RESULT")[1].split()[:4]
        rows, write_seconds = int(written), float(write_text)
        lines.append(
            (
                "Storage Write (ours), mirror_dump_version",
                rows,
                write_seconds,
                rows / write_seconds,
                f"{int(requests)} requests, {int(nbytes) / 1e6:.0f} MB protobuf; client peak RSS "
                f"{peak / 2**20:.0f} MiB",
            )
        )

        with psycopg.connect(dsn) as conn:
            source = dump_source(conn, SCHEMA, TABLE, version, bignumeric=False)
            sample = [] if args.skip_json else json_rows(conn, source, args.sample_rows)
        if not args.skip_json:
            from google.cloud import bigquery

            schema = [
                bigquery.SchemaField(c.bq_name, c.bq_type, mode=c.mode) for c in source.columns
            ]
            client.create_table(
                bigquery.Table(f"{EMULATOR_PROJECT}.bench.insert_json", schema=schema)
            )
            started = time.perf_counter()
            for i in range(0, len(sample), 10_000):
                errors = client.insert_rows_json(
                    f"{EMULATOR_PROJECT}.bench.insert_json", sample[i : i + 10_000]
                )
                assert not errors, errors[:3]
            t = time.perf_counter() - started
            lines.append(
                (
                    "insert_rows_json (10k per call)",
                    len(sample),
                    t * args.rows / len(sample),
                    len(sample) / t,
                    f"measured on {len(sample):,} rows, extrapolated",
                )
            )
            started = time.perf_counter()
            config = bigquery.LoadJobConfig(schema=schema)
            client.load_table_from_json(
                sample, f"{EMULATOR_PROJECT}.bench.load_json", job_config=config
            ).result()
            t = time.perf_counter() - started
            lines.append(
                (
                    "load_table_from_json (one job)",
                    len(sample),
                    t * args.rows / len(sample),
                    len(sample) / t,
                    f"measured on {len(sample):,} rows, extrapolated",
                )
            )

        target = MirrorTarget(EMULATOR_PROJECT, "bench", TABLE)
        with psycopg.connect(dsn) as conn:
            started = time.perf_counter()
            (pg_count,) = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(SCHEMA), sql.Identifier(TABLE)
                )
            ).fetchone() or (0,)
            lines.append(
                ("count(*) in PostgreSQL", pg_count, time.perf_counter() - started, None, "")
            )
            started = time.perf_counter()
            bq_count = list(client.query(f"SELECT COUNT(*) FROM {target.ref}").result())[0][0]
            lines.append(
                (
                    "COUNT(*) in BigQuery (emulator)",
                    bq_count,
                    time.perf_counter() - started,
                    None,
                    "",
                )
            )
            result = compare_hashes(
                PostgresSide(conn, source), BigQuerySide(client, target.ref, source)
            )
            assert result.passed, result.markdown()
            lines.append(
                (
                    "consistency check (hash buckets)",
                    result.left_rows,
                    result.seconds,
                    result.left_rows / result.seconds,
                    f"{result.buckets} buckets of ~{result.left_rows // max(result.buckets, 1)} "
                    f"rows; passed",
                )
            )
            naive_rows = args.naive_rows or args.rows
            started = time.perf_counter()
            names = [c.name for c in source.columns]
            pg_rows = {}
            with conn.cursor(name="naive") as cur:
                cur.execute(
                    sql.SQL("SELECT {} FROM {}.{} LIMIT %s").format(
                        sql.SQL(", ").join(map(sql.Identifier, names)),
                        sql.Identifier(SCHEMA),
                        sql.Identifier(TABLE),
                    ),
                    (naive_rows,),
                )
                for row in cur:
                    pg_rows[row[0]] = row
            bq_rows = {
                r[0]: tuple(r.values())
                for r in client.query(
                    f"SELECT {', '.join('`' + c.bq_name + '`' for c in source.columns)} FROM "
                    f"{target.ref} ORDER BY 1 LIMIT {naive_rows}"
                ).result()
            }
            differing = sum(1 for k in pg_rows if k not in bq_rows)
            t = time.perf_counter() - started
            lines.append(
                (
                    "naive: fetch all rows of both sides, compare in Python",
                    naive_rows,
                    t * args.rows / naive_rows,
                    naive_rows / t,
                    (f"extrapolated from {naive_rows:,} rows; " if naive_rows < args.rows else "")
                    + f"{differing} keys missing",
                )
            )
    finally:
        emulator.stop()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    print()
    print(
        f"| method ({args.rows:,} rows, 10 columns) | rows measured | seconds for {args.rows:,} | "
        f"rows/s | notes |"
    )
    print("|---|---|---|---|---|")
    for name, measured, seconds, rate, notes in lines:
        print(
            f"| {name} | {measured:,} | {seconds:.2f} | {'' if rate is None else f'{rate:,.0f}'} | "
            f"{notes} |"
        )
    check = next(line for line in lines if line[0].startswith("consistency"))
    naive = next(line for line in lines if line[0].startswith("naive"))
    print(
        f"\nconsistency check vs naive: {naive[2] / check[2]:.1f}x faster (requirement: >= 10x) "
        f"{'PASS' if naive[2] / check[2] >= 10 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
