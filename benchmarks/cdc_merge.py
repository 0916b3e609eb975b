"""CDC benchmark: the pipeline (reduce, COPY between databases, one merge transaction) against
applying each change with its own statements.

    python benchmarks/cdc_merge.py [--rows 1000000] [--changes 100000] \\
        [--baseline-sample 10000] [--rounds 3] [--dsn DSN]

Rounds: each of --rounds rounds makes a fresh batch of changes (untimed) and runs the three timed
methods below on it, the order rotated from round to round; the best of each is reported.

Setup (not timed): a source database with `bench_item` (--rows rows: bigint key, text, integer,
numeric, timestamptz, jsonb), Django's content type and change-log tables, and a warehouse database
on the same server. The initial sync (every row logged as 'added') runs through the pipeline and is
reported too. Each round's source transaction changes the data: 60% of --changes update existing
rows, 30% insert new rows, 10% delete rows, each with its change-log row (shuffled ids).

Timed:
- pipeline: `run_table` (safe horizon, validation, reduce, COPY TO STDOUT -> COPY FROM STDIN into
  staging, one merge transaction with the watermark, TRUNCATE staging);
- per-change statements: for each of the first --baseline-sample changes in id order, one SELECT of
  the row on the source and one INSERT .. ON CONFLICT DO UPDATE (or soft-delete UPDATE) on a copy
  of the merged table (same fillfactor); twice: in autocommit (each change its own transaction, as
  an applier that records its progress per change must) and all in one warehouse transaction (a
  lower bound);
- no-change run: `run_table` when nothing is new.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import psycopg
from psycopg import sql

from ingest_platform.cdc import checks, pipeline
from ingest_platform.cdc import warehouse as wh
from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.demo.cdc_app import SCHEMA_SQL
from ingest_platform.postgres.connection import with_database

TABLE = CdcTable(app_label="bench", model="item", source_table="bench_item")
CONFIG = CdcConfig(tables=(TABLE,))


def setup_source(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        conn.execute("INSERT INTO django_content_type (app_label, model) VALUES ('bench', 'item')")
        conn.execute(
            "CREATE TABLE bench_item (id bigint PRIMARY KEY, name text NOT NULL, qty integer, "
            "price numeric(12, 2), updated_at timestamptz NOT NULL, attrs jsonb)"
        )
        conn.execute(
            "INSERT INTO bench_item SELECT g, 'item ' || g, g %% 1000, (g %% 100000) / 100.0, "
            "'2024-01-01'::timestamptz + g * interval '1 second', jsonb_build_object('g', g %% 7) "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(
            "INSERT INTO models_logging_change (object_id, content_type_id, action, changed_data, "
            "object_repr) "
            "SELECT b.id::text, (SELECT id FROM django_content_type WHERE app_label = 'bench' AND "
            "model = 'item'), 'added', NULL, "
            "'bench_item ' || b.id FROM bench_item b ORDER BY b.id"
        )
        conn.execute("VACUUM ANALYZE")


def make_changes(dsn: str, changes: int) -> None:
    changed, added, deleted = (
        int(changes * 0.6),
        int(changes * 0.3),
        changes - int(changes * 0.6) - int(changes * 0.3),
    )
    with psycopg.connect(dsn) as conn:
        # New ids past every id the log ever named (a round's inserts follow the previous ones).
        rows = conn.execute("SELECT max(object_id::bigint) FROM models_logging_change").fetchone()[
            0
        ]
        conn.execute(
            "CREATE TEMP TABLE picks AS SELECT id, row_number() OVER () AS n FROM "
            "(SELECT id FROM bench_item ORDER BY random() LIMIT %s) x",
            (changed + deleted,),
        )
        conn.execute(
            "UPDATE bench_item b SET qty = b.qty + 1, price = b.price + 1, updated_at = now(), "
            "attrs = jsonb_build_object('changed', true) FROM picks p WHERE p.id = b.id AND p.n <= "
            "%s",
            (changed,),
        )
        conn.execute(
            "DELETE FROM bench_item b USING picks p WHERE p.id = b.id AND p.n > %s", (changed,)
        )
        conn.execute(
            "INSERT INTO bench_item SELECT g, 'new ' || g, 1, 1.5, now(), NULL FROM "
            "generate_series(%s, %s) g",
            (rows + 1, rows + added),
        )
        conn.execute(
            "INSERT INTO models_logging_change (object_id, content_type_id, action, changed_data, "
            "object_repr) "
            "SELECT k::text, (SELECT id FROM django_content_type WHERE app_label = 'bench' AND "
            "model = 'item'), a, '{}'::jsonb, 'bench_item ' || k "
            "FROM (SELECT id AS k, CASE WHEN n <= %s THEN 'changed' ELSE 'deleted' END AS a FROM "
            "picks "
            "UNION ALL SELECT g, 'added' FROM generate_series(%s, %s) g) x ORDER BY random()",
            (changed, rows + 1, rows + added),
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def per_change_statements(
    source_dsn: str, warehouse_dsn: str, start_id: int, sample: int, autocommit: bool
) -> tuple[int, float]:
    with psycopg.connect(warehouse_dsn, autocommit=True) as w:
        w.execute("DROP TABLE IF EXISTS cdc.baseline")
        # The merged table's design, fillfactor included (its updates can be HOT too).
        w.execute(
            sql.SQL(
                "CREATE TABLE cdc.baseline WITH (fillfactor = {}) AS SELECT * FROM cdc.bench_item"
            ).format(sql.Literal(wh.MERGED_FILLFACTOR))
        )
        w.execute("ALTER TABLE cdc.baseline ADD PRIMARY KEY (id)")
    with (
        psycopg.connect(source_dsn, autocommit=autocommit) as s,
        psycopg.connect(warehouse_dsn, autocommit=autocommit) as w,
    ):
        changes = s.execute(
            "SELECT id, object_id, action FROM models_logging_change WHERE id > %s ORDER BY id "
            "LIMIT %s",
            (start_id, sample),
        ).fetchall()
        started = time.perf_counter()
        for change_id, object_id, action in changes:
            row = s.execute(
                "SELECT id, name, qty, price, updated_at, attrs FROM bench_item WHERE id = "
                "%s::bigint",
                (object_id,),
            ).fetchone()
            if action == "deleted" or row is None:
                w.execute(
                    "UPDATE cdc.baseline SET is_deleted = true, _last_change_id = %s, _applied_at "
                    "= now() "
                    "WHERE id = %s::bigint",
                    (change_id, object_id),
                )
            else:
                w.execute(
                    "INSERT INTO cdc.baseline (id, name, qty, price, updated_at, attrs, "
                    "is_deleted, _last_change_id, "
                    "_applied_at) VALUES (%s, %s, %s, %s, %s, %s, false, %s, now()) ON CONFLICT "
                    "(id) DO UPDATE SET "
                    "name = EXCLUDED.name, qty = EXCLUDED.qty, price = EXCLUDED.price, updated_at "
                    "= EXCLUDED.updated_at, "
                    "attrs = EXCLUDED.attrs, is_deleted = false, _last_change_id = "
                    "EXCLUDED._last_change_id, "
                    "_applied_at = EXCLUDED._applied_at",
                    (
                        *row[:5],
                        psycopg.types.json.Jsonb(row[5]) if row[5] is not None else None,
                        change_id,
                    ),
                )
        w.commit()
        seconds = time.perf_counter() - started
        s.rollback()
    return len(changes), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--baseline-sample", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best counts)")
    args = parser.parse_args()
    load_at_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    suffix = uuid.uuid4().hex[:8]
    source_db, warehouse_db = f"cdc_bench_src_{suffix}", f"cdc_bench_wh_{suffix}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for db in (source_db, warehouse_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    source, warehouse = with_database(args.dsn, source_db), with_database(args.dsn, warehouse_db)
    # (run, changes, seconds, stage seconds, merge seconds)
    rows: list[tuple[str, int, float, float | None, float | None]] = []
    try:
        print(f"setup: {args.rows:,} source rows ...", flush=True)
        setup_source(source, args.rows)
        started = time.perf_counter()
        stage, merge = pipeline.run_table(source, warehouse, CONFIG, TABLE)
        initial = time.perf_counter() - started
        rows.append(
            (
                "pipeline: initial sync (all 'added')",
                args.rows,
                initial,
                stage.seconds,
                merge.seconds,
            )
        )
        with psycopg.connect(warehouse, autocommit=True) as w:
            w.execute("VACUUM ANALYZE cdc.bench_item")
        # Interleaved rounds: each makes a fresh batch of changes (untimed), then runs the three
        # methods on it in an order rotated from round to round; the best of each counts.
        runs: dict[str, list[float]] = {"pipeline": [], "one": [], "auto": []}
        sample = applied = 0
        for number in range(args.rounds):
            make_changes(source, args.changes)
            start_id = merge.watermark

            def run_pipeline() -> float:
                nonlocal stage, merge, applied
                started = time.perf_counter()
                stage, merge = pipeline.run_table(source, warehouse, CONFIG, TABLE)
                applied = sum(stage.changes.values())
                return time.perf_counter() - started

            methods = {
                "pipeline": run_pipeline,
                "one": lambda start_id=start_id: per_change_statements(
                    source, warehouse, start_id, args.baseline_sample, False
                ),
                "auto": lambda start_id=start_id: per_change_statements(
                    source, warehouse, start_id, args.baseline_sample, True
                ),
            }
            order = list(methods)[number % 3 :] + list(methods)[: number % 3]
            for name in order:
                outcome = methods[name]()
                if isinstance(outcome, tuple):
                    sample, outcome = outcome
                runs[name].append(outcome)
                print(
                    f"  round {number + 1}: {name}: {outcome:.2f} s "
                    f"({os.getloadavg()[0]:.1f} load)",
                    flush=True,
                )
        seconds, baseline_seconds, autocommit_seconds = (
            min(runs[name]) for name in ("pipeline", "one", "auto")
        )
        rows.append(
            (
                f"pipeline: {applied:,} changes (60/30/10), best of {args.rounds}",
                applied,
                seconds,
                stage.seconds,
                merge.seconds,
            )
        )
        rows.append(
            (
                f"per-change statements, one transaction ({sample:,} sample)",
                sample,
                baseline_seconds,
                None,
                None,
            )
        )
        rows.append(
            (
                f"per-change statements, autocommit ({sample:,} sample)",
                sample,
                autocommit_seconds,
                None,
                None,
            )
        )
        started = time.perf_counter()
        stage2, merge2 = pipeline.run_table(source, warehouse, CONFIG, TABLE)
        rows.append(
            (
                "pipeline: no new changes",
                0,
                time.perf_counter() - started,
                stage2.seconds,
                merge2.seconds,
            )
        )
        match = checks.compare_with_source(source, warehouse, CONFIG, TABLE)
        pipeline_rate = applied / seconds
        baseline_rate = sample / baseline_seconds
        print()
        print("| run | changes | seconds | changes/s | stage s | merge s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, n, secs, st, mg in rows:
            rate = f"{n / secs:,.0f}" if n else "-"
            print(
                f"| {name} | {n:,} | {secs:.2f} | {rate} | {'' if st is None else f'{st:.2f}'} | "
                f"{'' if mg is None else f'{mg:.2f}'} |"
            )
        print()
        print(f"merge counts: {merge.counts}; staged objects: {stage.staged}")
        autocommit_rate = sample / autocommit_seconds
        print(
            f"pipeline vs per-change statements: {pipeline_rate / autocommit_rate:.1f}x faster "
            f"than autocommit "
            f"({autocommit_rate:,.0f} changes/s), {pipeline_rate / baseline_rate:.1f}x faster than "
            f"one transaction "
            f"({baseline_rate:,.0f} changes/s); pipeline {pipeline_rate:,.0f} changes/s"
        )
        print(f"matches_source check: {match.describe()}")
        print(
            f"load average (1, 5, 15 min) at the end: "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} "
            f"({os.cpu_count()} CPUs); at the start: {load_at_start}"
        )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for db in (source_db, warehouse_db):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )


if __name__ == "__main__":
    main()
