"""Copying every table of the selected schemas under one exported snapshot of the source.

1. The target gets the tables first if it has none (pre-data only: keys, indexes and triggers
   are created after the data, which is faster than maintaining them row by row).
2. One source transaction exports its snapshot (``pg_export_snapshot``); each worker connection
   adopts it (``SET TRANSACTION SNAPSHOT``), so every table is read as of the same instant while
   the source keeps taking writes.
3. All target tables are emptied in one TRUNCATE, then each table is one COPY in its own target
   transaction (binary where every column type is built in or an enum, text otherwise), several
   at once. A failed or killed copy leaves its table empty; a re-run truncates and copies again,
   so it converges and never duplicates. When the target already has its foreign keys, tables
   are copied parents first.
4. Then the keys, indexes and triggers (one transaction), the sequences, the materialized views.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest_platform.errors import IngestError, SchemaError, first_line
from ingest_platform.migration.plan import EMPTY, EQUAL, WITHOUT_POST_DATA, Plan
from ingest_platform.migration.schema import apply_sections, copy_sequence_values
from ingest_platform.postgres import etl_log
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.snapshot import adopt_snapshot, export_snapshot
from ingest_platform.progress import PROGRESS_SECONDS

logger = logging.getLogger("ingest_platform.migration")
FIRST_USER_OID = 16384  # FirstNormalObjectId: types below it are built in, the same everywhere


@dataclass(frozen=True)
class SourceTable:
    schema: str
    name: str
    columns: tuple[str, ...]  # stored columns (generated ones are computed by the target)
    binary: bool
    parents: tuple[str, ...]  # "schema.table" this one references by foreign key

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    bytes: int
    seconds: float
    error: str | None = None

    @property
    def line(self) -> str:
        if self.error:
            return f"{self.table}: FAILED, left empty: {self.error}"
        rate = self.rows / max(self.seconds, 1e-9)
        return f"{self.table}: {self.rows:,} rows, {self.bytes / 1e6:,.1f} MB, {rate:,.0f} rows/s"


TABLES = """
    SELECT n.nspname, c.relname,
           array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attgenerated = ''),
           bool_and(t.oid < %(first)s OR t.typtype = 'e'),
           coalesce((SELECT array_agg(DISTINCT pn.nspname || '.' || p.relname)
                     FROM pg_constraint k JOIN pg_class p ON p.oid = k.confrelid
                     JOIN pg_namespace pn ON pn.oid = p.relnamespace
                     WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid),
                    '{}')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE n.nspname = ANY(%(s)s) AND c.relkind = 'r'
    GROUP BY n.nspname, c.relname, c.oid ORDER BY 1, 2"""


def source_tables(conn: psycopg.Connection, schemas: list[str]) -> list[SourceTable]:
    rows = conn.execute(TABLES, {"s": schemas, "first": FIRST_USER_OID}).fetchall()
    return [SourceTable(s, t, tuple(c or ()), b, tuple(p)) for s, t, c, b, p in rows]


def migrate_data(
    plan: Plan, *, jobs: int = 2, on_table=lambda copy: None, replace: bool = False
) -> list[TableCopy]:
    """Copy every table (see the module's docstring); `on_table` hears of each finished one."""
    if plan.problems:
        raise SchemaError("The target cannot take this schema: " + "; ".join(plan.problems) + ".")
    if plan.state == EMPTY or (replace and plan.state not in (EQUAL, WITHOUT_POST_DATA)):
        apply_sections(plan, ["pre-data"], replace=plan.state != EMPTY)
        post_data_later = True
    elif plan.state == WITHOUT_POST_DATA:
        post_data_later = True
    elif plan.state == EQUAL:
        post_data_later = False
    else:
        shown = "; ".join(str(d) for d in plan.differences[:10])
        raise SchemaError(
            f"The target's schema differs from the source ({shown}): nothing was copied. "
            "Run `migrate plan` to see all, or `migrate data --replace`."
        )
    with connect(plan.source_dsn) as source:
        snapshot = export_snapshot(source)
        tables = source_tables(source, plan.schemas)
        _truncate(plan.target_dsn, tables)
        waves = [tables] if post_data_later else _parents_first(tables)
        copies: list[TableCopy] = []
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for wave in waves:
                for done in pool.map(lambda t: copy_table(plan, t, snapshot), wave):
                    on_table(done)
                    copies.append(done)
                if any(c.error for c in copies):
                    break
        failed = [c for c in copies if c.error]
        if failed:
            raise IngestError(
                f"migrate data: {len(failed)} table(s) failed and are left empty: "
                + "; ".join(c.line for c in failed)
                + ". Fix the cause and run `migrate data` again (it copies every table anew)."
            )
        if post_data_later:
            apply_sections(plan, ["post-data"], replace=False)
        with connect(plan.target_dsn) as target:
            copy_sequence_values(plan.source_dsn, target, plan.schemas)
            refresh_materialized_views(target, plan)
        source.rollback()
    return copies


def _truncate(target_dsn: str, tables: list[SourceTable]) -> None:
    if not tables:
        return
    with connect(target_dsn) as target:
        target.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(qualified(t.schema, t.name) for t in tables)
            )
        )


def _parents_first(tables: list[SourceTable]) -> list[list[SourceTable]]:
    """Waves of tables whose parents are all in earlier waves (foreign keys in place)."""
    left = {t.label: t for t in tables}
    done: set[str] = set()
    waves = []
    while left:
        wave = [t for t in left.values() if all(p in done or p not in left for p in t.parents)]
        if not wave:
            raise SchemaError(
                f"Tables {', '.join(sorted(left))} reference each other by foreign keys: copy "
                "them into a target without keys (`migrate data --replace`)."
            )
        waves.append(wave)
        for t in wave:
            done.add(t.label)
            del left[t.label]
    return waves


def copy_table(plan: Plan, table: SourceTable, snapshot: str) -> TableCopy:
    """One table, source snapshot -> target, in one target transaction."""
    started = time.monotonic()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    name = qualified(table.schema, table.name)
    options = sql.SQL(" (FORMAT binary)" if table.binary else "")
    rows = size = 0
    try:
        with connect(plan.source_dsn) as source, connect(plan.target_dsn) as target:
            adopt_snapshot(source, snapshot)
            read = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT{}").format(
                columns, name, options
            )
            write = sql.SQL("COPY {} ({}) FROM STDIN{}").format(name, columns, options)
            last = started
            with target.cursor() as cursor, source.cursor().copy(read) as out:
                with cursor.copy(write) as into:
                    for block in out:
                        into.write(block)
                        size += len(block)
                        if time.monotonic() - last > PROGRESS_SECONDS:
                            last = time.monotonic()
                            logger.info(f"{table.label}: {size / 1e6:,.1f} MB copied")
                rows = cursor.rowcount
            etl_log.record(target, kind="migration", table=table.label, rows=rows)
            target.commit()
    except (psycopg.Error, IngestError) as exc:
        return TableCopy(table.label, 0, 0, time.monotonic() - started, first_line(exc))
    return TableCopy(table.label, rows, size, time.monotonic() - started)


def refresh_materialized_views(target: psycopg.Connection, plan: Plan) -> None:
    """Materialized views were created empty; fill them in restore order."""
    for entry in plan.toc:
        if entry.kind == "MATERIALIZED VIEW":
            schema, _, name = entry.what.partition(" ")
            target.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(qualified(schema, name)))
    target.commit()
