"""The consistency check (``compare_hashes``) against fetching every row of both sides and comparing
them in Python, at several table sizes, in interleaved rounds.

    .venv/bin/python benchmarks/consistency.py --rows 100000,1000000 [--rounds 3] [--dsn DSN]

For each size, dump_load.py's 10-column table (cached dump in --workdir) is loaded into a database
made for the run (``load_dump_version``), mirrored to a private in-memory BigQuery emulator
(``mirror_dump_version``), and copied to a second PostgreSQL table (``CREATE TABLE AS``): untimed.
Then, each round, on the unchanged tables:

- the mirror's ``row_hashes`` check: ``compare_hashes(PostgresSide, BigQuerySide)``;
- fetch and compare, PostgreSQL vs BigQuery: every row of the PostgreSQL table (server-side cursor)
  and of the BigQuery table (a query, rows through the client), by key into dicts, compared;
- CDC ``matches_source``'s engine: ``compare_hashes(*postgres_sides(...))`` on the two tables;
- fetch and compare, PostgreSQL vs PostgreSQL.

Requirement (PASS/FAIL): the mirror's check at least 10x faster than fetch and compare, from
100,000 rows up, in every round (the ratios are per round: the same round's times). PostgreSQL vs
PostgreSQL is information: on one server, fetching every row moves nothing over a network, and
the check's worth is what it saves there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Method, interleave, print_table, round_ratios, say_load
from dump_load import DEFAULT_DSN, bench_dump

from ingest_platform.bigquery.clients import (
    EMULATOR_PROJECT,
    EmulatorEndpoints,
    emulator_bigquery_client,
    emulator_write_client,
)
from ingest_platform.bigquery.mirror import MirrorTarget, dump_source, mirror_dump_version
from ingest_platform.consistency.compare import (
    BigQuerySide,
    PostgresSide,
    compare_hashes,
    postgres_sides,
)
from ingest_platform.loading.dump_versions import load_dump_version
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.ports import free_port
from ingest_platform.postgres.connection import with_database

SCHEMA, TABLE = "bench", "item_1"
TARGET = 10.0


def fetch_postgres(conn: psycopg.Connection, schema: str, table: str, columns: list[str]) -> dict:
    rows = {}
    with conn.cursor(name=f"naive_{time.monotonic_ns()}") as cursor:
        cursor.itersize = 10_000
        cursor.execute(
            sql.SQL("SELECT {} FROM {}.{}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(schema),
                sql.Identifier(table),
            )
        )
        for row in cursor:
            rows[row[0]] = row
    return rows


def compared(left: dict, right: dict) -> int:
    """Keys missing on one side or holding other values."""
    return sum(1 for k in left.keys() | right.keys() if left.get(k) != right.get(k))


class Size:
    """One table size: its PostgreSQL tables and BigQuery mirror, and the four methods."""

    def __init__(self, args, dsn: str, client, endpoints: EmulatorEndpoints, rows: int):
        self.dsn, self.client, self.rows = dsn, client, rows
        dump = bench_dump(args.workdir, 1, rows)
        self.schema = f"{SCHEMA}_{rows}"
        started = time.perf_counter()
        load_dump_version(dsn, dump, self.schema, processes=1)
        version = str(rows)
        dataset = f"bench_{rows}"
        client.create_dataset(dataset)
        self.target = MirrorTarget(EMULATOR_PROJECT, dataset, TABLE)
        with psycopg.connect(dsn) as conn:
            self.source = dump_source(conn, self.schema, TABLE, version, bignumeric=False)
            mirror_dump_version(
                conn,
                client,
                emulator_write_client(endpoints),
                self.schema,
                TABLE,
                version,
                self.target,
            )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE {s}.copy AS SELECT * FROM {s}.{t}").format(
                    s=sql.Identifier(self.schema), t=sql.Identifier(TABLE)
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {}.copy ADD PRIMARY KEY (id)").format(
                    sql.Identifier(self.schema)
                )
            )
            conn.execute(sql.SQL("VACUUM ANALYZE {}.copy").format(sql.Identifier(self.schema)))
        print(
            f"  {rows:,} rows loaded, mirrored and copied in {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    def check_bigquery(self) -> float:
        with psycopg.connect(self.dsn) as conn:
            started = time.perf_counter()
            result = compare_hashes(
                PostgresSide(conn, self.source),
                BigQuerySide(self.client, self.target.ref, self.source),
            )
            seconds = time.perf_counter() - started
        assert result.passed, result.markdown()
        return seconds

    def naive_bigquery(self) -> float:
        columns = [c.name for c in self.source.columns]
        names = ", ".join(f"`{c.bq_name}`" for c in self.source.columns)
        with psycopg.connect(self.dsn) as conn:
            started = time.perf_counter()
            here = fetch_postgres(conn, self.schema, TABLE, columns)
            there = {
                r[0]: tuple(r.values())
                for r in self.client.query(f"SELECT {names} FROM {self.target.ref}").result()
            }
            compared(here, there)
            return time.perf_counter() - started

    def check_postgres(self) -> float:
        with psycopg.connect(self.dsn) as a, psycopg.connect(self.dsn) as b:
            started = time.perf_counter()
            left, right = postgres_sides((a, self.schema, TABLE), (b, self.schema, "copy"))
            result = compare_hashes(left, right)
            seconds = time.perf_counter() - started
        assert result.passed, result.markdown()
        return seconds

    def naive_postgres(self) -> float:
        columns = [c.name for c in self.source.columns]
        with psycopg.connect(self.dsn) as a, psycopg.connect(self.dsn) as b:
            started = time.perf_counter()
            differing = compared(
                fetch_postgres(a, self.schema, TABLE, columns),
                fetch_postgres(b, self.schema, "copy", columns),
            )
            seconds = time.perf_counter() - started
        assert differing == 0, differing
        return seconds

    def methods(self) -> list[Method]:
        return [
            Method("check PostgreSQL vs BigQuery (compare_hashes)", self.check_bigquery),
            Method("fetch and compare, PostgreSQL vs BigQuery", self.naive_bigquery),
            Method("check PostgreSQL vs PostgreSQL (compare_hashes)", self.check_postgres),
            Method("fetch and compare, PostgreSQL vs PostgreSQL", self.naive_postgres),
        ]


def report(rows: int, methods: list[Method]) -> None:
    lines = []
    for check, naive in ((methods[0], methods[1]), (methods[2], methods[3])):
        for method, reference in ((check, None), (naive, check)):
            ratio = reference and method.best and reference.best and method.best / reference.best
            result = ""
            if reference is not None and ratio:
                per_round = [a / b for a, b in zip(method.times, reference.times, strict=False)]
                targeted = rows >= 100_000 and "BigQuery" in method.name
                passed = min(per_round) >= TARGET if targeted else None
                result = (
                    "info" if passed is None else "PASS" if passed else "FAIL"
                ) + f" (check >= {TARGET:.0f}x faster in every round)"
            lines.append(
                [
                    method.name,
                    f"{method.best:.3f}" if method.best else "",
                    " ".join(f"{t:.3f}" for t in method.times),
                    f"{rows / method.best:,.0f}" if method.best else "",
                    f"{ratio:.1f}x" if ratio else "",
                    round_ratios(method, reference) if reference else "",
                    result,
                ]
            )
    print(f"\n{rows:,} rows, 10 columns; x and per round: fetch and compare / the check")
    print_table(
        ["method", "best s", "rounds (s)", "rows/s", "x check", "per round", "target"],
        lines,
        {0, 6},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", default="100000,1000000", help="comma-separated table sizes (rows)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ingest_platform_bench"
    )
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(r) for r in args.rows.split(",")]
    database = f"consistency_bench_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = with_database(args.dsn, database)
    emulator = start_emulator(
        free_port(), free_port(), None, args.workdir / "consistency_emulator.log"
    )
    say_load("load before")
    results: dict[int, list[Method]] = {}
    try:
        endpoints = EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
        client = emulator_bigquery_client(endpoints)
        for rows in sizes:
            size = Size(args, dsn, client, endpoints, rows)
            results[rows] = size.methods()
            interleave(results[rows], args.rounds, f"{rows:,} rows: ")
    finally:
        say_load("load after")
        emulator.stop()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    for rows, methods in results.items():
        report(rows, methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
