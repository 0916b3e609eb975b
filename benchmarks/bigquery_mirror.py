"""Mirror the 10-column benchmark table to the BigQuery emulator: ours against
`load_table_from_json` on the same rows in the same run, then check the mirror.

    .venv/bin/python benchmarks/bigquery_mirror.py --rows 1000000 [--rounds 3] [--memory]

Setup (not timed): the generated table of benchmarks/dump_load.py (cached dump in --workdir),
loaded with our loader into a database created for the run as dump version `<rows>` of
`bench.item_1`; a private emulator (in memory, spatial off) started for the run and stopped at the
end. Each timed run writes a fresh table (the previous one is dropped first, not timed).

Timed, interleaved: --rounds rounds, the order of the methods alternating from round to round;
every run is printed with the load average before and after it, and a method's best run counts.
  - ours, Arrow rows: `mirror_dump_version` end to end (read from PostgreSQL, encode, append to
    pending streams, DELETE of the version's earlier rows, batch commit) in a child process that
    reports its peak RSS;
  - ours, protobuf rows (`row_format="proto"`, the fallback for projects without Arrow), in
    --proto-rounds of the rounds;
  - `load_table_from_json` (one load job) in a child process: the same rows read from
    PostgreSQL and made into the dicts it takes (reported on its own), then the job (timed).
  - `insert_rows_json` (10,000 rows per call) on a --sample-rows sample, extrapolated;
  - with --baseline DIR, `mirror_dump_version` of another checkout (say the commit before a
    change: `git archive <commit> | tar -x -C DIR`) in --baseline-rounds of the rounds.
Then `count(*)` on each side, the consistency check (`compare_hashes`) against the naive way
(fetch every row from both sides, compare in Python; --naive-rows, extrapolated), and with
--memory the peak RSS of ours at --rows and at 4x --rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk_ingest import own_peak_rss
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

SCHEMA, TABLE, DATASET = "bench", "item_1", "bench"


# ----------------------------------------------------------------------------- child processes


def measure_ours(dsn: str, rest: str, grpc: str, version: str, row_format: str) -> None:
    endpoints = EmulatorEndpoints(rest, grpc)
    client, writer = emulator_bigquery_client(endpoints), emulator_write_client(endpoints)
    target = MirrorTarget(EMULATOR_PROJECT, DATASET, TABLE)
    with psycopg.connect(dsn) as conn:
        if row_format == "baseline":  # another checkout, before row formats existed
            result = mirror_dump_version(conn, client, writer, SCHEMA, TABLE, version, target)
        else:
            result = mirror_dump_version(
                conn, client, writer, SCHEMA, TABLE, version, target, row_format=row_format
            )
    print(
        f"RESULT {result.rows} {result.seconds:.3f} {result.bytes} {result.requests} "
        f"{result.streams} {own_peak_rss()}",
        flush=True,
    )


def measure_json(dsn: str, rest: str, version: str, table: str) -> None:
    from google.cloud import bigquery

    client = emulator_bigquery_client(EmulatorEndpoints(rest, ""))
    with psycopg.connect(dsn) as conn:
        source = dump_source(conn, SCHEMA, TABLE, version, bignumeric=False)
        started = time.perf_counter()
        rows = json_rows(conn, source)
        build = time.perf_counter() - started
    config = bigquery.LoadJobConfig(schema=schema_of(source))
    started = time.perf_counter()
    client.load_table_from_json(
        rows, f"{EMULATOR_PROJECT}.{DATASET}.{table}", job_config=config
    ).result()
    load = time.perf_counter() - started
    print(f"RESULT {len(rows)} {load:.3f} {build:.3f} {own_peak_rss()}", flush=True)


def json_rows(conn, source, limit: int | None = None) -> list[dict]:
    """The same rows, as insert_rows_json/load_table_from_json take them."""
    from ingest_platform.bigquery.source import read_rows

    epoch = dt.datetime(1970, 1, 1)
    rows: list[dict] = []
    for chunk in read_rows(conn, source):
        for row in chunk:
            item = {}
            for column, value in zip(source.columns, row, strict=True):
                if value is None:
                    continue
                if column.kind == "timestamp":
                    value = value / 1e6
                elif column.kind == "datetime":
                    value = (epoch + dt.timedelta(microseconds=value)).isoformat()
                item[column.bq_name] = value
            rows.append(item)
            if limit and len(rows) >= limit:
                return rows
    return rows


def schema_of(source):
    from google.cloud import bigquery

    return [bigquery.SchemaField(c.bq_name, c.bq_type, mode=c.mode) for c in source.columns]


def run_child(args: list[str], pythonpath: str | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    child = subprocess.run(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=False, env=env
    )
    if child.returncode:
        raise RuntimeError(f"child exited with {child.returncode}: {child.stdout}")
    return child.stdout.split("RESULT")[1]


# ----------------------------------------------------------------------------- the runs


def load_text() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class Runs:
    """Every timed run, printed as it ends."""

    def __init__(self):
        self.runs: list[dict] = []

    def add(self, method: str, rows: int, seconds: float, before: str, **extra) -> dict:
        run = {
            "method": method,
            "rows": rows,
            "seconds": seconds,
            "load": f"{before} -> {load_text()}",
            **extra,
        }
        self.runs.append(run)
        notes = ", ".join(f"{k} {v}" for k, v in extra.items())
        print(
            f"  {method}: {rows:,} rows in {seconds:.2f} s ({rows / seconds:,.0f} rows/s); "
            f"load {run['load']}; {notes}",
            flush=True,
        )
        return run

    def best(self, method: str) -> dict | None:
        mine = [r for r in self.runs if r["method"] == method]
        return min(mine, key=lambda r: r["seconds"]) if mine else None

    def all_of(self, method: str) -> list[dict]:
        return [r for r in self.runs if r["method"] == method]


OURS, PROTO, JSON, BASELINE = (
    "ours: Storage Write, Arrow rows",
    "ours: Storage Write, protobuf rows",
    "load_table_from_json (load job only)",
    "baseline: mirror_dump_version of --baseline",
)


def run_ours(
    runs: Runs,
    client,
    dsn,
    endpoints,
    version: str,
    row_format: str,
    method: str,
    pythonpath: str | None = None,
):
    client.delete_table(f"{EMULATOR_PROJECT}.{DATASET}.{TABLE}", not_found_ok=True)
    before = load_text()
    out = run_child(
        ["--measure-ours", dsn, endpoints.rest, endpoints.grpc, version, row_format], pythonpath
    ).split()
    rows, seconds, nbytes, requests, streams, peak = out[:6]
    return runs.add(
        method,
        int(rows),
        float(seconds),
        before,
        requests=int(requests),
        streams=int(streams),
        MB=round(int(nbytes) / 1e6),
        peak_rss_MiB=round(int(peak) / 2**20),
    )


def run_json(runs: Runs, client, dsn, endpoints, version: str, n: int):
    table = f"load_json_{n}"
    before = load_text()
    rows, load, build, peak = run_child(
        ["--measure-json", dsn, endpoints.rest, version, table]
    ).split()[:4]
    client.delete_table(f"{EMULATOR_PROJECT}.{DATASET}.{table}", not_found_ok=True)
    return runs.add(
        JSON,
        int(rows),
        float(load),
        before,
        rows_from_postgres_s=float(build),
        peak_rss_MiB=round(int(peak) / 2**20),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (interleaved)")
    parser.add_argument(
        "--proto-rounds", type=int, default=1, help="rounds that also run protobuf rows"
    )
    parser.add_argument("--sample-rows", type=int, default=50_000, help="rows for insert_rows_json")
    parser.add_argument(
        "--skip-json",
        action="store_true",
        help="skip load_table_from_json and insert_rows_json",
    )
    parser.add_argument(
        "--naive-rows",
        type=int,
        default=None,
        help="rows for the fetch-everything comparison (default --rows)",
    )
    parser.add_argument("--skip-checks", action="store_true", help="skip the consistency rows")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose mirror_dump_version to time too"
    )
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument(
        "--memory", action="store_true", help="peak RSS of ours at --rows and 4x --rows"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ingest_platform_bench"
    )
    parser.add_argument("--measure-ours", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--measure-json", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_ours:
        measure_ours(*args.measure_ours)
        return 0
    if args.measure_json:
        measure_json(*args.measure_json)
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    dumps = [bench_dump(args.workdir, 1, args.rows)]
    if args.memory:
        dumps.append(bench_dump(args.workdir, 1, 4 * args.rows))
    database = f"ingest_bench_bq_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = with_database(args.dsn, database)
    emulator = start_emulator(
        free_port(), free_port(), None, args.workdir / "bigquery_mirror_emulator.log"
    )
    runs = Runs()
    # (method, rows measured, seconds for all rows, rows per second or None, notes)
    lines: list[tuple[str, int, float, float | None, str]] = []
    load_before = load_text()
    try:
        started = time.perf_counter()
        for dump in dumps:
            load_dump_version(dsn, dump, SCHEMA, processes=1)
        print(f"loaded into PostgreSQL in {time.perf_counter() - started:.1f} s", flush=True)
        endpoints = EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
        client = emulator_bigquery_client(endpoints)
        client.create_dataset(DATASET)
        version = str(args.rows)

        print(f"load average before: {load_before} (1/5/15 min), {os.cpu_count()} cores")
        for n in range(args.rounds):
            methods = ["ours", "json"] if n % 2 == 0 else ["json", "ours"]
            if n < args.proto_rounds:
                methods.append("proto")
            if args.baseline and n < args.baseline_rounds:
                methods.insert(n % 2, "baseline")
            for method in methods:
                if method == "ours":
                    run_ours(runs, client, dsn, endpoints, version, "arrow", OURS)
                elif method == "proto":
                    run_ours(runs, client, dsn, endpoints, version, "proto", PROTO)
                elif method == "baseline":
                    path = str(args.baseline.resolve())
                    run_ours(runs, client, dsn, endpoints, version, "baseline", BASELINE, path)
                elif not args.skip_json:
                    run_json(runs, client, dsn, endpoints, version, n)
        # the table the checks compare: a mirror made by ours
        run_ours(runs, client, dsn, endpoints, version, "arrow", OURS)

        for method in (OURS, PROTO, BASELINE, JSON):
            best = runs.best(method)
            if best is None:
                continue
            every = ", ".join(f"{r['seconds']:.2f}" for r in runs.all_of(method))
            notes = f"best of {len(runs.all_of(method))} ({every} s)" + "".join(
                f"; {k} {best[k]}"
                for k in (
                    "requests",
                    "streams",
                    "MB",
                    "rows_from_postgres_s",
                    "peak_rss_MiB",
                    "load",
                )
                if k in best
            )
            lines.append(
                (method, best["rows"], best["seconds"], best["rows"] / best["seconds"], notes)
            )

        with psycopg.connect(dsn) as conn:
            source = dump_source(conn, SCHEMA, TABLE, version, bignumeric=False)
            sample = [] if args.skip_json else json_rows(conn, source, args.sample_rows)
        if sample:
            from google.cloud import bigquery

            client.create_table(
                bigquery.Table(
                    f"{EMULATOR_PROJECT}.{DATASET}.insert_json", schema=schema_of(source)
                )
            )
            started = time.perf_counter()
            for i in range(0, len(sample), 10_000):
                errors = client.insert_rows_json(
                    f"{EMULATOR_PROJECT}.{DATASET}.insert_json", sample[i : i + 10_000]
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
        if not args.skip_checks:
            lines += consistency_lines(args, dsn, client, source)
        if args.memory:
            print("memory: ours at 1x and 4x rows", flush=True)
            for dump_rows in (args.rows, 4 * args.rows):
                run = run_ours(runs, client, dsn, endpoints, str(dump_rows), "arrow", "memory")
                lines.append(
                    (
                        f"peak RSS of ours at {dump_rows:,} rows",
                        dump_rows,
                        run["seconds"],
                        dump_rows / run["seconds"],
                        f"{run['peak_rss_MiB']} MiB (child process, VmHWM); load {run['load']}",
                    )
                )
    finally:
        emulator.stop()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    print()
    print(f"load average before: {load_before}, after: {load_text()} (1/5/15 min)")
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
    ours, json_load = runs.best(OURS), runs.best(JSON)
    if ours and json_load:
        ratio = json_load["seconds"] / ours["seconds"]
        print(
            f"\nours vs load_table_from_json (best runs): {ratio:.2f}x as fast (goal: >= 1) "
            f"{'PASS' if ratio >= 1 else 'FAIL'}"
        )
    if not args.skip_checks:
        check = next(line for line in lines if line[0].startswith("consistency"))
        naive = next(line for line in lines if line[0].startswith("naive"))
        print(
            f"consistency check vs naive: {naive[2] / check[2]:.1f}x faster (requirement: >= 10x) "
            f"{'PASS' if naive[2] / check[2] >= 10 else 'FAIL'}"
        )
    return 0


def consistency_lines(args, dsn: str, client, source) -> list:
    lines = []
    target = MirrorTarget(EMULATOR_PROJECT, DATASET, TABLE)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        (pg_count,) = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{} WHERE _version = %s").format(
                sql.Identifier(SCHEMA), sql.Identifier(TABLE)
            ),
            (str(args.rows),),
        ).fetchone() or (0,)
        lines.append(("count(*) in PostgreSQL", pg_count, time.perf_counter() - started, None, ""))
        started = time.perf_counter()
        bq_count = list(client.query(f"SELECT COUNT(*) FROM {target.ref}").result())[0][0]
        lines.append(
            ("COUNT(*) in BigQuery (emulator)", bq_count, time.perf_counter() - started, None, "")
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
                sql.SQL("SELECT {} FROM {}.{} WHERE _version = %s ORDER BY 2 LIMIT %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                    sql.Identifier(SCHEMA),
                    sql.Identifier(TABLE),
                ),
                (str(args.rows), naive_rows),
            )
            for row in cur:
                pg_rows[row[1]] = row
        bq_rows = {
            r[1]: tuple(r.values())
            for r in client.query(
                f"SELECT {', '.join('`' + c.bq_name + '`' for c in source.columns)} FROM "
                f"{target.ref} ORDER BY 2 LIMIT {naive_rows}"
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
    return lines


if __name__ == "__main__":
    sys.exit(main())
