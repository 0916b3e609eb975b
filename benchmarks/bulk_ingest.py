"""``ingest()`` against the tools a user would pick instead, on the same data in the same run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bulk_ingest.py --rows 1000000 [--rounds 3] [--dsn DSN]

The data: dump_load.py's 10-column table (bigint key, int, smallint, numeric(12,2), numeric(19,4),
varchar(12), varchar(200) or NULL, timestamp, boolean, double) as two CSV files with a header
(generated once, cached in --workdir): "base" and "update", the same keys with other values.

Cases (each method gets a fresh table with the same column types, except dlt, which creates its
own; a table is VACUUM ANALYZEd and a CHECKPOINT runs before each timing; row count and column
sums are checked after it):

- **load**: the base rows into an empty table with a primary key;
- **upsert**: the update rows into the table holding the base rows: every row is updated;
- **append**: the base rows into a table without a key (ours from Python rows vs pg-bulk-ingest).

Methods: ours ``ingest()`` from Python rows (held in memory, made before any timing), from Arrow
(``pyarrow.csv.read_csv`` of the file, timed, then ``ingest()``; and the same Arrow table read
before the timing, as for data that is Arrow already) and from the CSV file (``CsvFile``); psql
(``\\copy``; for the upsert ``\\copy`` into a temporary table and ``INSERT .. ON CONFLICT DO
UPDATE``, in one transaction); dlt's fastest path (the same Arrow table through dlt's ``parquet``
files and the ADBC driver; ``append`` to load, ``merge`` with the primary key to upsert, dlt's
default delete-insert strategy); Sling (the binary of the ``sling-linux-amd64`` wheel: ``--mode
truncate`` into the table to load, ``--mode incremental --primary-key id`` to upsert);
pg-bulk-ingest (``Upsert.IF_PRIMARY_KEY``, the same rows as ours). A missing peer is reported as
"not available" with the reason. Rounds are interleaved (``common.interleave``); the table shows
each method's best time, every round's time and its ratio to the first method's in the same round.

Requirements checked (PASS/FAIL): the upsert from Arrow at least as fast as psql's and faster than
dlt's; rows at least 3x faster than pg-bulk-ingest with a key (load) and 4x without (append);
peak memory: N and 4N rows streamed (``--memory-rows``) from Python rows and from an Arrow
record batch reader, in a child process each; "flat" = the 4N peak within 20% of the N peak.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Method,
    bench_csv,
    interleave,
    print_table,
    psql_binary,
    python_peer,
    read_arrow,
    round_ratios,
    say_load,
    sling_binary,
)
from dump_load import DEFAULT_DSN, sqlalchemy_engine, sqlalchemy_table

from ingest_platform.postgres.connection import scalar, with_database

CASES = ("load", "upsert", "append")
COLUMNS = (
    "id",
    "customer_id",
    "quantity",
    "amount",
    "price",
    "sku",
    "description",
    "created_at",
    "is_active",
    "score",
)
DDL = (
    "id bigint {key}, customer_id integer NOT NULL, quantity smallint NOT NULL, "
    "amount numeric(12,2) NOT NULL, price numeric(19,4) NOT NULL, sku varchar(12) NOT NULL, "
    "description varchar(200), created_at timestamp NOT NULL, is_active boolean NOT NULL, "
    "score double precision NOT NULL"
)
INSTALL = "pip install -e '.[bench]'"


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


class Bench:
    """One run: the database, the data, and a method per (case, tool)."""

    def __init__(self, args, dsn: str, files: dict[str, Path]):
        self.args, self.dsn, self.files = args, dsn, files
        self.arrow = {v: read_arrow(p) for v, p in files.items()}
        self._rows: dict[str, list[tuple]] = {}
        self.expected = {v: fingerprint_of(t) for v, t in self.arrow.items()}
        self.engine = sqlalchemy_engine(dsn)
        self.watermark = 0
        self.problems: list[str] = []

    # ------------------------------------------------------------------ helpers

    def python_rows(self, variant: str) -> list[tuple]:
        """The rows as Python values, made on first use (untimed) and kept."""
        if variant not in self._rows:
            self._rows[variant] = list(python_rows(self.arrow[variant]))
            gc.freeze()  # permanent: no method pays for the collector walking them
        return self._rows[variant]

    def sql(self, *statements: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def fresh_table(self, schema: str, key: bool = True) -> None:
        self.sql(
            f"DROP SCHEMA IF EXISTS {schema} CASCADE",
            f"CREATE SCHEMA {schema}",
            f"CREATE TABLE {schema}.item ({DDL.format(key='PRIMARY KEY' if key else 'NOT NULL')})",
        )

    def settle(self, table: str | None = None) -> None:
        """VACUUM ANALYZE the table (the loaded rows' hint bits set, as autovacuum would have
        done), then CHECKPOINT: no method pays for another's writes."""
        if table:
            self.sql(f"VACUUM ANALYZE {table}")
        self.sql("CHECKPOINT")

    def check(self, name: str, table: str, variant: str) -> None:
        with psycopg.connect(self.dsn) as conn:
            found = conn.execute(
                f"SELECT count(*), sum(quantity), sum(amount), count(description) FROM {table}"
            ).fetchone()
        if tuple(found or ()) != self.expected[variant]:
            problem = f"{name}: {table} holds {found}, expected {self.expected[variant]}"
            print(f"  WRONG RESULT: {problem}", flush=True)
            self.problems.append(problem)

    def timed(self, run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    # ------------------------------------------------------------------ ours

    def ours(self, schema: str, what, key: bool = True) -> None:
        """One ingest() of `what` (rows, an Arrow table or a CsvFile) as the next batch."""
        from ingest_platform import ingest

        metadata, table = table_for(schema, "item", key)
        self.watermark += 1
        watermark = self.watermark
        if isinstance(what, list):
            items = ((table, row) for row in what)
        else:
            items = iter([(table, what)])
        with self.engine.connect() as conn:
            ingest(conn, metadata, lambda _: [(watermark, items)])

    def ours_method(self, case: str, source: str) -> Method:
        from ingest_platform import CsvFile

        schema = f"ours_{source.replace('-', '_')}_{case}"

        def data(variant: str):
            if source == "rows":
                return self.python_rows(variant)
            if source == "arrow":
                return read_arrow(self.files[variant])
            if source == "arrow-in-memory":
                return self.arrow[variant]
            return CsvFile(self.files[variant])

        def run() -> float:
            self.fresh_table(schema, key=case != "append")
            if case == "upsert":
                self.ours(schema, data("base"))
                self.settle(f"{schema}.item")
            else:
                self.settle()
            variant = "update" if case == "upsert" else "base"
            if source == "arrow":  # reading the file is part of the time
                seconds = self.timed(lambda: self.ours(schema, data(variant), case != "append"))
            else:
                ready = data(variant)
                seconds = self.timed(lambda: self.ours(schema, ready, case != "append"))
            self.check(f"ours {source} {case}", f"{schema}.item", variant)
            return seconds

        label = {
            "rows": "Python rows",
            "arrow": "Arrow (read_csv included)",
            "arrow-in-memory": "Arrow table in memory",
            "csv": "CsvFile",
        }
        return Method(f"ours ingest(), {label[source]}", run)

    # ------------------------------------------------------------------ peers

    def psql_method(self, case: str) -> Method:
        psql, missing = psql_binary()
        schema = f"psql_{case}"
        columns = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])

        def copy(variant: str, into: str) -> str:
            return f"\\copy {into} ({columns}) FROM '{self.files[variant]}' (FORMAT csv, HEADER)\n"

        def upsert(variant: str) -> str:
            return (
                "BEGIN;\n"
                f"CREATE TEMP TABLE stage (LIKE {schema}.item) ON COMMIT DROP;\n"
                + copy(variant, "stage")
                + f"INSERT INTO {schema}.item ({columns}) SELECT {columns} FROM stage "
                f"ON CONFLICT (id) DO UPDATE SET {updates};\n"
                "COMMIT;\n"
            )

        def run_psql(text: str) -> None:
            subprocess.run(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.dsn],
                input=text,
                text=True,
                check=True,
            )

        def run() -> float:
            self.fresh_table(schema)
            if case == "upsert":
                run_psql(copy("base", f"{schema}.item"))
                self.settle(f"{schema}.item")
                seconds = self.timed(lambda: run_psql(upsert("update")))
            else:
                self.settle()
                seconds = self.timed(lambda: run_psql(copy("base", f"{schema}.item")))
            variant = "update" if case == "upsert" else "base"
            self.check(f"psql {case}", f"{schema}.item", variant)
            return seconds

        name = (
            "psql \\copy to a temp table + INSERT .. ON CONFLICT"
            if case == "upsert"
            else "psql \\copy"
        )
        return Method(name, run, missing=missing)

    def dlt_method(self, case: str) -> Method:
        missing = python_peer("dlt", INSTALL) or python_peer("adbc_driver_postgresql", INSTALL)
        dataset = f"dlt_{case}"

        def pipeline(round_name: str):
            import dlt

            info = psycopg.conninfo.conninfo_to_dict(self.dsn)
            url = (
                f"postgresql://{info.get('user', 'postgres')}:{info.get('password') or 'unused'}@"
                f"{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{info['dbname']}"
            )
            return dlt.pipeline(
                pipeline_name=round_name,
                destination=dlt.destinations.postgres(url),
                dataset_name=dataset,
                pipelines_dir=str(self.args.workdir / "dlt_pipelines"),
            )

        def load(pipe, variant: str, disposition: str) -> None:
            import dlt

            resource = dlt.resource(
                read_arrow(self.files[variant]),
                name="item",
                primary_key="id",
                write_disposition=disposition,
            )
            pipe.run(resource, loader_file_format="parquet")

        def run() -> float:
            self.sql(
                f"DROP SCHEMA IF EXISTS {dataset} CASCADE",
                f"DROP SCHEMA IF EXISTS {dataset}_staging CASCADE",
            )
            pipe = pipeline(f"bench_{case}_{os.getpid()}_{time.monotonic_ns()}")
            disposition = "merge" if case == "upsert" else "append"
            if case == "upsert":
                load(pipe, "base", disposition)
                self.settle(f"{dataset}.item")
            else:
                self.settle()
            variant = "update" if case == "upsert" else "base"
            seconds = self.timed(lambda: load(pipe, variant, disposition))
            pipe.drop()
            self.check(f"dlt {case}", f"{dataset}.item", variant)
            return seconds

        name = (
            "dlt merge, Arrow -> parquet -> ADBC"
            if case == "upsert"
            else "dlt append, Arrow -> parquet -> ADBC"
        )
        return Method(name, run, missing=missing)

    def sling_method(self, case: str) -> Method:
        binary, missing = sling_binary()
        schema = f"sling_{case}"
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        url = (
            f"postgresql://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
            f"{info.get('port', 5432)}/{info['dbname']}?sslmode=disable"
        )
        environment = dict(
            os.environ,
            BENCH_PG=url,
            SLING_HOME_DIR=str(self.args.workdir / "sling_home"),
            SLING_DISABLE_TELEMETRY="true",
        )

        def sling(variant: str, mode: str) -> None:
            command = [
                binary,
                "run",
                "--src-stream",
                f"file://{self.files[variant]}",
                "--src-options",
                '{"empty_as_null": true}',  # an unquoted empty field is NULL, as for the others
                "--tgt-conn",
                "BENCH_PG",
                "--tgt-object",
                f"{schema}.item",
                "--mode",
                mode,
            ] + (["--primary-key", "id"] if mode == "incremental" else [])
            subprocess.run(command, env=environment, check=True, capture_output=True)

        def run() -> float:
            self.fresh_table(schema)
            if case == "upsert":
                sling("base", "truncate")
                self.settle(f"{schema}.item")
            else:
                self.settle()
            variant = "update" if case == "upsert" else "base"
            mode = "incremental" if case == "upsert" else "truncate"
            seconds = self.timed(lambda: sling(variant, mode))
            self.check(f"sling {case}", f"{schema}.item", variant)
            return seconds

        name = (
            "Sling --mode incremental --primary-key id"
            if case == "upsert"
            else "Sling --mode truncate"
        )
        return Method(name, run, missing=missing)

    def pg_bulk_ingest_method(self, case: str) -> Method:
        missing = python_peer("pg_bulk_ingest", INSTALL)
        schema = f"pgbi_{case}"

        def ingest_rows(variant: str, key: bool) -> None:
            from pg_bulk_ingest import Delete, Upsert, ingest

            metadata, table = table_for(schema, "item", key)
            rows = self.python_rows(variant)
            self.watermark += 1
            watermark = self.watermark

            def batches(_):
                yield watermark, None, ((table, row) for row in rows)

            with self.engine.connect() as conn:
                ingest(conn, metadata, batches, upsert=Upsert.IF_PRIMARY_KEY, delete=Delete.OFF)

        def run() -> float:
            key = case != "append"
            self.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}")
            if case == "upsert":
                ingest_rows("base", key)
                self.settle(f"{schema}.item")
            else:
                self.settle()
            variant = "update" if case == "upsert" else "base"
            self.python_rows(variant)  # made before the timing
            seconds = self.timed(lambda: ingest_rows(variant, key))
            self.check(f"pg-bulk-ingest {case}", f"{schema}.item", variant)
            return seconds

        return Method("pg-bulk-ingest, Python rows", run, missing=missing)

    def methods(self, case: str) -> list[Method]:
        if case == "append":
            return [self.ours_method(case, "rows"), self.pg_bulk_ingest_method(case)]
        return [
            self.ours_method(case, "arrow"),
            self.ours_method(case, "arrow-in-memory"),
            self.ours_method(case, "csv"),
            self.ours_method(case, "rows"),
            self.psql_method(case),
            self.dlt_method(case),
            self.sling_method(case),
            self.pg_bulk_ingest_method(case),
        ]


def python_rows(table):
    """The Arrow table's rows as Python values (Decimal, datetime, str ...), as a Python pipeline
    would hand them to a library."""
    return zip(*(column.to_pylist() for column in table.columns), strict=True)


def fingerprint_of(table) -> tuple:
    """(rows, sum of quantity, sum of amount, non-NULL descriptions), as SQL computes them."""
    import pyarrow.compute as pc

    return (
        table.num_rows,
        pc.sum(table["quantity"].cast("int64")).as_py(),
        Decimal(pc.sum(table["amount"]).as_py()).quantize(Decimal("0.01")),
        table.num_rows - table["description"].null_count,
    )


def csv_module_rows(path: Path):
    """The CSV as Python values with the csv module: what turning text into Python values costs."""
    converters = [
        int,
        int,
        int,
        Decimal,
        Decimal,
        str,
        str,
        datetime.fromisoformat,
        lambda v: v == "true",
        float,
    ]
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        next(reader)
        for fields in reader:
            yield tuple(None if f == "" else c(f) for c, f in zip(converters, fields, strict=True))


# ---------------------------------------------------------------------------------- peak memory


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


def measure_in_child(library: str, dsn: str, path: Path) -> None:
    """Child process: one streamed ingest of `path` into a fresh table with a key."""
    schema = f"memory_{os.getpid()}"
    metadata, table = table_for(schema, "item", True)
    engine = sqlalchemy_engine(dsn)
    with engine.connect() as conn:
        if library == "pg-bulk-ingest":
            from pg_bulk_ingest import Delete, Upsert, ingest

            rows = ((table, row) for row in csv_module_rows(path))
            ingest(
                conn,
                metadata,
                lambda _: [(1, None, rows)],
                upsert=Upsert.IF_PRIMARY_KEY,
                delete=Delete.OFF,
            )
        else:
            from ingest_platform import ingest

            if library == "ours-arrow":
                items = iter([(table, read_arrow(path, streaming=True))])
            else:
                items = ((table, row) for row in csv_module_rows(path))
            ingest(conn, metadata, lambda _: [(1, items)])
    engine.dispose()
    print(json.dumps({"peak_rss": own_peak_rss()}))


def peak_rss(library: str, dsn: str, path: Path) -> int:
    command = [sys.executable, __file__, "--measure", library, "--dsn", dsn, "--file", str(path)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss"]


# ------------------------------------------------------------------------------------ main


@dataclass
class Target:
    method: str  # name of the method checked
    reference: str  # name of the method it is compared with
    factor: float  # passes if reference best >= factor x method best
    text: str


TARGETS = {
    "upsert": [
        Target(
            "ours ingest(), Arrow (read_csv included)",
            "psql \\copy to a temp table + INSERT .. ON CONFLICT",
            1.0,
            "<= psql",
        ),
        Target(
            "ours ingest(), Arrow (read_csv included)",
            "dlt merge, Arrow -> parquet -> ADBC",
            1.0001,
            "< dlt",
        ),
        Target(
            "ours ingest(), CsvFile",
            "psql \\copy to a temp table + INSERT .. ON CONFLICT",
            1.0,
            "<= psql",
        ),
    ],
    "load": [
        Target(
            "ours ingest(), Python rows",
            "pg-bulk-ingest, Python rows",
            3.0,
            ">= 3x faster than pg-bulk-ingest",
        ),
    ],
    "append": [
        Target(
            "ours ingest(), Python rows",
            "pg-bulk-ingest, Python rows",
            4.0,
            ">= 4x faster than pg-bulk-ingest",
        ),
    ],
}


def report(case: str, methods: list[Method], rows: int) -> None:
    """One table per case: best time, every round, the ratio to the first method (ours, Arrow or
    rows) best to best and round by round, and the targets of the case."""
    by_name = {m.name: m for m in methods}
    reference = methods[0]
    lines = []
    for method in methods:
        if method.missing or not method.times:
            why = method.missing or "did not run"
            lines.append([method.name, "", "", "", "", "", f"not available: {why}"])
            continue
        checks = []
        for target in TARGETS.get(case, []):
            other = by_name.get(target.reference)
            if target.method != method.name or other is None:
                continue
            if other.missing or not other.times:
                checks.append(f"{target.text}: not checked, {other.name} not available")
                continue
            passed = other.best >= target.factor * method.best
            checks.append(
                f"{'PASS' if passed else 'FAIL'} {target.text} ({other.best / method.best:.2f}x)"
            )
        lines.append(
            [
                method.name,
                f"{method.best:.2f}",
                " ".join(f"{t:.2f}" for t in method.times),
                f"{rows / method.best:,.0f}",
                f"{method.best / reference.best:.2f}x" if reference.best else "",
                round_ratios(method, reference),
                "; ".join(checks),
            ]
        )
    what = "every row updated" if case == "upsert" else "into an empty table"
    print(f"\n{case}: {rows:,} rows {what}; x and per round: time / {reference.name}'s")
    print_table(
        ["method", "best s", "rounds (s)", "rows/s", "x", "per round", "target"], lines, {0, 6}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words; run only the methods whose name holds one (e.g. arrow,psql)",
    )
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=200_000,
        help="N of the peak-memory runs (N and 4N rows; default 200,000)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server; a database is made and dropped")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ingest_platform_bench",
        help="where the generated CSV files are cached",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child of peak_rss
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure_in_child(args.measure, args.dsn, args.file)
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    files = {v: bench_csv(args.workdir, args.rows, v) for v in ("base", "update")}
    database = f"bulk_bench_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        server = scalar(conn, "SHOW server_version")
    dsn = with_database(args.dsn, database)
    print(f"{args.rows:,} rows; PostgreSQL {server}; {args.rounds} interleaved rounds", flush=True)
    say_load("load before")
    results: dict[str, list[Method]] = {}
    memory: list[list[str]] = []
    try:
        bench = Bench(args, dsn, files)
        started = time.perf_counter()
        parsed = sum(1 for _ in csv_module_rows(files["update"]))
        parse_seconds = time.perf_counter() - started
        print(
            f"  (the csv module turns the update file into Python values in {parse_seconds:.2f} s "
            f"({parsed:,} rows); the rows' times leave that out)",
            flush=True,
        )
        for case in args.cases.split(","):
            words = [w.lower() for w in args.only.split(",") if w]
            results[case] = [
                m
                for m in bench.methods(case)
                if not words or any(w in m.name.lower() for w in words)
            ]
            interleave(results[case], args.rounds, f"{case}: ")
        if not args.skip_memory:
            small = bench_csv(args.workdir, args.memory_rows, "base")
            large = bench_csv(args.workdir, 4 * args.memory_rows, "base")
            for library in ("ours-rows", "ours-arrow", "pg-bulk-ingest"):
                if library == "pg-bulk-ingest" and python_peer("pg_bulk_ingest", INSTALL):
                    continue
                peaks = [peak_rss(library, dsn, path) for path in (small, large)]
                flat = peaks[1] <= 1.2 * peaks[0]
                memory.append(
                    [
                        library,
                        f"{peaks[0] / 2**20:.0f} MiB",
                        f"{peaks[1] / 2**20:.0f} MiB",
                        ("PASS" if flat else "FAIL") if library.startswith("ours") else "info",
                    ]
                )
    finally:
        say_load("load after")
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    for case, methods in results.items():
        report(case, methods, args.rows)
    if memory:
        print(
            f"\npeak RSS, {args.memory_rows:,} vs {4 * args.memory_rows:,} rows streamed "
            "(flat: the 4N peak within 20% of the N peak)"
        )
        print_table(["library", "N", "4N", "flat"], memory, {0, 3})
    for problem in bench.problems if results else []:
        print(f"WRONG RESULT: {problem}")
    return 1 if results and bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
