"""Direct fetch: a table of N rows x 10 columns pulled from PostgreSQL and from MariaDB into the
warehouse, ours against the shell pipes and dlt.

  python benchmarks/direct_fetch.py [--rows 200000] [--rounds 3] [--sources postgres,mysql]

Methods (each round runs every one once, the order rotated; best of the rounds printed):
- ours: ``ingest_platform.fetch`` snapshot pull into a new version child (atomic attach), without
  and with the checks (counts; bucket hashes for PostgreSQL sources);
- pipe: ``psql -c "COPY (SELECT ...) TO STDOUT" | psql -c "COPY t FROM STDIN"`` (PostgreSQL) and
  ``mariadb --batch -N -e 'SELECT ...' | psql -c "COPY t FROM STDIN"`` (MariaDB) into a table
  created beforehand (untimed): no atomic version, no type mapping, no checks;
- dlt: ``sql_database`` with its pyarrow backend (connectorx is not installed) into the same
  PostgreSQL, parquet loader files;
- incremental: after a full pull and a first incremental pull (untimed: it builds the kept
  key-bucket counts), 1% of the rows get a new updated_at and 0.1% are deleted (untimed), then
  ``fetch --incremental``: upsert of those rows, deletes found from per-bucket key counts
  (``fetch.deletes``), checks (counts per key bucket, bucket hashes of the rows copied); against
  a full pull with the same checks ("x full" column).

Servers: INGEST_PG_DSN (default host=127.0.0.1 port=5432 user=postgres dbname=postgres; a source
and a warehouse database are created on it) and MariaDB at 127.0.0.1:3306 as root.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from common import Method, interleave, print_table, python_peer, say_load
from psycopg import sql

from ingest_platform.fetch.config import Incremental, SourceConfig
from ingest_platform.fetch.pull import fetch
from ingest_platform.postgres.connection import ensure_database, with_database

COLUMNS = "id, a, b, c, d, e, f, g, h, updated_at"
PG_TABLE = (
    "CREATE TABLE {} (id bigint PRIMARY KEY, a integer, b bigint, c numeric(12,2),"
    " d double precision, e text, f varchar(40), g timestamp, h date, updated_at timestamp)"
)
MY_TABLE = (
    "CREATE TABLE items (id bigint PRIMARY KEY, a int, b bigint, c decimal(12,2), d double,"
    " e text, f varchar(40), g datetime, h date, updated_at datetime) ENGINE=InnoDB"
)
PG_ROWS = (
    "INSERT INTO items SELECT g, g % 1000, g * 7, g * 0.25, g / 3.0, 'text value ' || g,"
    " md5(g::text), timestamp '2020-01-01' + g * interval '1 minute', date '2020-01-01' + g % 3000,"
    " timestamp '2024-01-01' + g * interval '1 second' FROM generate_series(1, {}) g"
)
MY_ROWS = (
    "INSERT INTO items SELECT seq, seq % 1000, seq * 7, seq * 0.25, seq / 3.0,"
    " concat('text value ', seq), md5(seq), '2020-01-01' + interval seq minute,"
    " '2020-01-01' + interval (seq % 3000) day, '2024-01-01' + interval seq second"
    " FROM seq_1_to_{}"
)
MY = ["-h", "127.0.0.1", "-P", "3306", "-u", "root"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=200_000,
        help="default 200000 (a few minutes); the README's numbers: 1000000",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--sources", default="postgres,mysql", help="which source kinds (default postgres,mysql)"
    )
    args = parser.parse_args()
    server = os.environ.get(
        "INGEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    src, wh = with_database(server, "bench_fetch_src"), with_database(server, "bench_fetch_wh")
    for name in ("bench_fetch_src", "bench_fetch_wh"):
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        ensure_database(server, name)
    say_load("before")
    print(f"Setting up {args.rows:,} rows x 10 columns in PostgreSQL and MariaDB ...", flush=True)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(sql.SQL(PG_TABLE).format(sql.Identifier("items")))
        conn.execute(PG_ROWS.format(args.rows).encode())
        conn.execute("CREATE INDEX ON items (updated_at, id)")  # as an app with updated_at has
        conn.execute("VACUUM ANALYZE items")
    mysql = shutil.which("mariadb") or shutil.which("mysql")
    my_ok = (
        mysql is not None
        and subprocess.run([mysql, *MY, "-e", "SELECT 1"], capture_output=True).returncode == 0
    )
    if my_ok:
        script = (
            "DROP DATABASE IF EXISTS bench_fetch; CREATE DATABASE bench_fetch; USE bench_fetch; "
            f"{MY_TABLE}; {MY_ROWS.format(args.rows)};"
            " CREATE INDEX updated ON items (updated_at, id);"
        )
        subprocess.run([mysql, *MY, "-e", script], check=True)
        # An incremental pull reads 1% of the rows, spread over every page: at random-read cost
        # where the table does not fit in the buffer pool (MariaDB's default: 128 MB).
        sizes = subprocess.run(
            [mysql, *MY, "-N", "-e", "SELECT @@innodb_buffer_pool_size >> 20, (SELECT"
             " (data_length + index_length) >> 20 FROM information_schema.tables WHERE"
             " table_schema = 'bench_fetch' AND table_name = 'items')"],
            check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        print(f"MariaDB: innodb_buffer_pool_size {sizes[0]} MB, the table {sizes[1]} MB")
    env = {
        "BENCH_PG_SRC": src,
        "BENCH_MY_SRC": "mysql://root@127.0.0.1:3306/bench_fetch",
    }
    configs = {
        kind: SourceConfig(
            name=f"bench_{kind}",
            kind=kind,
            dsn_env="BENCH_PG_SRC" if kind == "postgres" else "BENCH_MY_SRC",
            app=f"bench_{kind}",
            tables=("items",),
            version="v1",
            incremental={"items": Incremental("updated_at")},
            file="benchmark",
        )  # fmt: skip
        for kind in ("postgres", "mysql")
    }
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute(sql.SQL(PG_TABLE).format(sql.Identifier("pipe_items")))
    workdir = Path(tempfile.mkdtemp(prefix="bench_fetch_"))
    results: dict[str, list[Method]] = {}
    delete_sets = iter(range(1, 1000))  # id % 1000 = n: rows deleted before incremental pull n
    for kind in ("postgres", "mysql"):
        if kind not in args.sources.split(","):
            continue
        if kind == "mysql" and not my_ok:
            print("MariaDB not available at 127.0.0.1:3306: its rows are left out", flush=True)
            continue
        config = configs[kind]

        def ours(check: bool, config=config) -> float:
            started = time.perf_counter()
            fetch(wh, config, environ=env, check=check)
            return time.perf_counter() - started

        def pipe(kind=kind) -> float:
            with psycopg.connect(wh, autocommit=True) as conn:
                conn.execute("TRUNCATE pipe_items")
            into = f"psql '{wh}' -q -c 'COPY pipe_items FROM STDIN'"
            if kind == "postgres":
                out = f"psql '{src}' -q -c 'COPY (SELECT {COLUMNS} FROM items) TO STDOUT'"
            else:
                out = (
                    f"{mysql} {' '.join(MY)} --batch -N bench_fetch"
                    f" -e 'SELECT {COLUMNS} FROM items'"
                )
            started = time.perf_counter()
            subprocess.run(
                f"set -o pipefail; {out} | {into}", shell=True, check=True, executable="/bin/bash"
            )
            return time.perf_counter() - started

        def dlt_run(kind=kind) -> float:
            import dlt
            from dlt.sources.sql_database import sql_database

            # MariaDB's DOUBLE arrives as decimals in some batches: let dlt merge the schemas.
            os.environ["DATA_WRITER__ARROW_CONCAT_PROMOTE_OPTIONS"] = "default"

            info = psycopg.conninfo.conninfo_to_dict(wh)
            url = (
                f"postgresql://{info.get('user', 'postgres')}:{info.get('password') or 'unused'}@"
                f"{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{info['dbname']}"
            )
            sinfo = psycopg.conninfo.conninfo_to_dict(src)
            credentials = (
                f"postgresql+psycopg2://{sinfo.get('user', 'postgres')}@"
                f"{sinfo.get('host', '127.0.0.1')}:{sinfo.get('port', 5432)}/{sinfo['dbname']}"
                if kind == "postgres"
                else "mysql+pymysql://root@127.0.0.1:3306/bench_fetch"
            )
            dataset = f"dlt_{kind}"
            with psycopg.connect(wh, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(dataset))
                )
            pipe = dlt.pipeline(
                pipeline_name=f"bench_fetch_{kind}_{time.monotonic_ns()}",
                destination=dlt.destinations.postgres(url),
                dataset_name=dataset,
                pipelines_dir=str(workdir / "dlt"),
            )
            source = sql_database(credentials, table_names=["items"], backend="pyarrow")
            started = time.perf_counter()
            pipe.run(source, loader_file_format="parquet")
            seconds = time.perf_counter() - started
            pipe.drop()
            return seconds

        def incremental(check: bool, deletes: bool = True, config=config, kind=kind) -> float:
            if not deletes:
                config = dataclasses.replace(
                    config, incremental={"items": Incremental("updated_at", deletes=False)}
                )
            fetch(wh, config, environ=env, check=False)  # a fresh full version (untimed)
            # The first incremental pull after it, untimed: it builds the kept key-bucket counts
            # (a scan of the child); the timed one is an incremental pull after an incremental
            # pull, as they follow each other in use.
            fetch(wh, config, incremental=True, environ=env, check=False)
            # 1% of the rows changed and 0.1% deleted (other ones each time), untimed.
            step, gone = 100, next(delete_sets)
            change = f"UPDATE items SET a = -a, updated_at = now() WHERE id % {step} = 0"
            delete = f"DELETE FROM items WHERE id % 1000 = {gone}"
            if kind == "postgres":
                with psycopg.connect(src, autocommit=True) as conn:
                    conn.execute(change)
                    deleted = conn.execute(delete).rowcount
            else:
                out = subprocess.run(
                    [mysql, *MY, "bench_fetch", "-N", "-e",
                     f"{change}; {delete}; SELECT ROW_COUNT()"],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                deleted = int(out.stdout.split()[-1])
            started = time.perf_counter()
            (report,) = fetch(wh, config, incremental=True, environ=env, check=check)
            seconds = time.perf_counter() - started
            assert report.mode == "incremental" and report.rows == args.rows // step, report
            assert report.deleted == (deleted if deletes else 0), (report, deleted)
            return seconds

        dlt_missing = (
            "--skip-dlt" if args.skip_dlt else python_peer("dlt", "pip install -e '.[bench]'")
        )
        methods = [
            Method("ours (pull)", lambda: ours(False)),
            Method("ours (pull + checks)", lambda: ours(True)),
            Method("psql COPY pipe" if kind == "postgres" else "mariadb --batch | psql COPY", pipe),
            Method("dlt sql_database (pyarrow)", dlt_run, missing=dlt_missing),
            Method("ours incremental 1% (pull, deletes=false)", lambda: incremental(False, False)),
            Method("ours incremental 1% (pull + deletes)", lambda: incremental(False)),
            Method("ours incremental 1% (pull + deletes + checks)", lambda: incremental(True)),
        ]  # fmt: skip
        print(f"\n{kind}:", flush=True)
        interleave(methods, args.rounds, f"{kind}: ")
        results[kind] = methods
    say_load("after")
    print(f"\nDirect fetch of {args.rows:,} rows x 10 columns, best of {args.rounds} rounds:\n")

    def rate(name: str, best: float | None) -> str:
        if best is None:
            return "-"
        return (
            f"{args.rows // 100:,} changed" if "incremental" in name else f"{args.rows / best:,.0f}"
        )

    def faster(m: Method, full: Method) -> str:
        if "incremental" not in m.name or m.best is None or full.best is None:
            return ""
        return f"{full.best / m.best:.1f}x faster"

    lines = []
    for kind, methods in results.items():
        reference = methods[0]
        for m in methods:
            best = m.best
            # An incremental pull against the full pull with the same checks (or none).
            full = methods[1] if "checks" in m.name else methods[0]
            lines.append([
                kind, m.name,
                "-" if best is None else f"{best:.2f}",
                rate(m.name, best),
                "-" if best is None or reference.best is None else f"{best / reference.best:.2f}",
                faster(m, full),
                m.missing or "",
            ])  # fmt: skip
    print_table(
        ["source", "method", "seconds", "rows/s", "x ours (pull)", "vs full pull", "note"],
        lines,
        {0, 1, 5, 6},
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
