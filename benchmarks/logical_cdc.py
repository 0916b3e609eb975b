"""Log-based CDC benchmark: the logical kind (pgoutput decoded from a slot) against the change-log
kind, on the same updates, into the same staging -> merged tables.

    python benchmarks/logical_cdc.py [--rows 200000] [--updates 100000] [--per-transaction 1000] \\
        [--rounds 3] [--dsn DSN]

--dsn: a PostgreSQL server with wal_level = logical (default: a private embedded server started
with it in a temporary directory; the shared system server is not restarted).

Peers: dlt's `pg_replication` is a verified source (`dlt init pg_replication postgres` copies it
from GitHub into a project) and not part of the dlt wheel; Sling's free CLI has no log-based CDC.
When neither imports, the reference is the change-log kind on the same changes, which is what a
user of this platform would otherwise run.

Setup (not timed): a source database with `bench_item` (--rows rows), Django's content type and
change-log tables, a publication of `bench_item` and a pgoutput slot; a warehouse database on the
same server; both kinds' initial syncs (schemas cdc_wal and cdc_log). Each round (untimed) updates
--updates random rows in transactions of --per-transaction rows, each row with its change-log
row, as an application logging its changes would; then both kinds run once on that batch, the
order rotated from round to round.

Timed: `pipeline.run_all` of each kind: logical: decode the slot (peek), reduce, COPY into
staging, one merge transaction with the watermark and the change history, confirm the slot;
change log: safe horizon, reduce in SQL, COPY TO STDOUT -> COPY FROM STDIN, the same merge.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from cdc_merge import setup_source as setup_change_log_source
from common import Method, interleave, print_table, python_peer, round_ratios, say_load
from psycopg import sql

from ingest_platform.cdc import checks, pipeline
from ingest_platform.cdc.config import CdcConfig, CdcTable, LogicalSource
from ingest_platform.postgres.connection import scalar, with_database

LOG_TABLE = CdcTable(app_label="bench", model="item", source_table="bench_item")
WAL_TABLE = CdcTable(source_table="bench_item")


def setup_source(dsn: str, rows: int, slot: str) -> None:
    """cdc_merge's source (the table and its change log), with a publication and a slot."""
    setup_change_log_source(dsn, rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE PUBLICATION bench_pub FOR TABLE bench_item "
            "WITH (publish = 'insert, update, delete')"
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def make_updates(dsn: str, updates: int, per_transaction: int) -> None:
    """`updates` row updates, `per_transaction` random rows a transaction, each logged."""
    with psycopg.connect(dsn) as conn:
        rows = scalar(conn, "SELECT max(id) FROM bench_item")
        done = 0
        while done < updates:
            n = min(per_transaction, updates - done)
            conn.execute(
                "WITH picks AS (SELECT DISTINCT (random() * (%s - 1))::bigint + 1 AS id "
                "FROM generate_series(1, %s)), "
                "u AS (UPDATE bench_item b SET qty = b.qty + 1, price = b.price + 1, "
                "updated_at = clock_timestamp() FROM picks p WHERE p.id = b.id RETURNING b.id) "
                "INSERT INTO models_logging_change (object_id, content_type_id, action, "
                "changed_data, object_repr) SELECT id::text, (SELECT id FROM "
                "django_content_type WHERE app_label = 'bench'), 'changed', '{}'::jsonb, "
                "'bench_item ' || id FROM u",
                (rows, n),
            )
            conn.commit()
            done += n
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE bench_item")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server with wal_level = logical (default: embedded)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--per-transaction", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best counts)")
    args = parser.parse_args()
    say_load("start")
    embedded, workdir = None, None
    server = args.dsn
    if not server:
        from ingest_platform.local.embedded_postgres import start_embedded_postgres

        workdir = Path(tempfile.mkdtemp(prefix="bench_logical_cdc_"))
        embedded = start_embedded_postgres(
            workdir / "data", delete_on_stop=True, settings={"wal_level": "logical"}
        )
        server = embedded.dsn
    suffix = uuid.uuid4().hex[:8]
    source_db, warehouse_db, slot = f"lcdc_src_{suffix}", f"lcdc_wh_{suffix}", f"lcdc_{suffix}"
    with psycopg.connect(server, autocommit=True) as conn:
        if scalar(conn, "SHOW wal_level") != "logical":
            raise SystemExit("--dsn: the server's wal_level is not logical")
        for db in (source_db, warehouse_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    source, warehouse = with_database(server, source_db), with_database(server, warehouse_db)
    wal = CdcConfig(
        tables=(WAL_TABLE,),
        warehouse_schema="cdc_wal",
        logical=LogicalSource(slot, "bench_pub", max_changes_per_run=100_000_000),
    )
    log = CdcConfig(tables=(LOG_TABLE,), warehouse_schema="cdc_log")
    try:
        print(f"setup: {args.rows:,} source rows ...", flush=True)
        setup_source(source, args.rows, slot)
        initial = {}
        for name, config in (("logical", wal), ("change log", log)):
            started = time.perf_counter()
            pipeline.run_all(source, warehouse, config)
            initial[name] = time.perf_counter() - started
        last: dict[str, tuple] = {}
        applied: dict[str, int] = {}

        def run(name: str, config: CdcConfig):
            def timed() -> float:
                started = time.perf_counter()
                staged, merged = pipeline.run_all(source, warehouse, config)["bench_item"]
                seconds = time.perf_counter() - started
                last[name] = (staged.seconds, merged.seconds)
                applied[name] = sum(staged.changes.values())
                return seconds

            return timed

        ours = Method("logical (pgoutput slot)", run("logical", wal))
        reference = Method("change-log kind", run("change log", log))
        peers = [
            Method("dlt pg_replication", lambda: 0.0),
        ]
        peers[0].missing = python_peer(
            "pg_replication",
            "a dlt verified source: `dlt init pg_replication postgres` copies it from GitHub",
        )
        methods = [ours, reference] + [p for p in peers if not p.missing]
        for number in range(args.rounds):
            make_updates(source, args.updates, args.per_transaction)
            # One round: every method once on the same batch, the order rotated by interleave().
            methods_this_round = methods[number % len(methods) :] + methods[: number % len(methods)]
            print(f"round {number + 1} of {args.rounds}:", flush=True)
            interleave(methods_this_round, 1)
        say_load("end")
        print()
        lines = []
        for method, name in ((ours, "logical"), (reference, "change log")):
            best = method.best or 0.0
            lines.append(
                [
                    method.name,
                    f"{applied[name]:,}",
                    f"{best:.2f}",
                    f"{applied[name] / best:,.0f}" if best else "-",
                    f"{last[name][0]:.2f}",
                    f"{last[name][1]:.2f}",
                    round_ratios(method, ours),
                    f"{initial[name]:.2f}",
                ]
            )
        for peer in peers:
            if peer.missing:
                lines.append([peer.name, "-", "-", "-", "-", "-", "not available", "-"])
        print_table(
            [
                "method",
                "changes",
                "best s",
                "changes/s",
                "stage s",
                "merge s",
                "vs logical per round",
                f"initial {args.rows:,} rows s",
            ],
            lines,
            left={0, 6},
        )
        for peer in peers:
            if peer.missing:
                print(f"{peer.name}: not available: {peer.missing}")
        print(
            f"{args.rounds} rounds of {args.updates:,} updates in transactions of "
            f"{args.per_transaction:,} rows on {args.rows:,} rows (stage/merge s: last round)"
        )
        for name, config, table in (("logical", wal, WAL_TABLE), ("change log", log, LOG_TABLE)):
            match = checks.compare_with_source(source, warehouse, config, table)
            print(f"matches_source ({name}): {match.describe()}")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            for db in (source_db, warehouse_db):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
        if embedded is not None:
            embedded.stop()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
