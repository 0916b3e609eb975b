"""Where a batch's rows go, and how they become visible, for one table.

- No primary key: COPY straight into the live table (append). ROW EXCLUSIVE lock only.
- Primary key: COPY into a temporary *staging table* (``CREATE TEMP TABLE .. (LIKE live)``: same
  types and NOT NULLs, no indexes, no WAL, dropped at commit), then one statement that updates the
  rows whose key is there and inserts the others: ``MERGE INTO live USING staging ON <pk> WHEN
  MATCHED THEN UPDATE SET <other columns> WHEN NOT MATCHED THEN INSERT`` on PostgreSQL 15+ (as
  the CDC merge does: no speculative insertion and row lock per row, ~15-20% less time when every
  row is updated), else ``INSERT .. ON CONFLICT (pk) DO UPDATE``. A batch under a quarter of the
  table's rows is joined by index lookups (``postgres.planner``), a larger one as the planner
  likes, with work_mem ``MERGE_WORK_MEM`` and no JIT. Duplicate keys within the batch: the last
  row wins. The statement first runs as is under a savepoint; only if the batch repeats a key
  (PostgreSQL refuses to update a row twice in one statement, and MERGE also to insert a key
  twice) it runs again on ``SELECT DISTINCT ON (pk) .. ORDER BY pk, ctid DESC`` (rows of a freshly
  filled temp table lie in COPY order, so the highest ctid is the last row). The live table gets
  ROW EXCLUSIVE only. Unlike ON CONFLICT, MERGE does not wait for another session that inserts
  the same key meanwhile: the batch then fails with a unique violation and rolls back (ingest() is
  meant to be its tables' only writer).
- Primary key, table empty (at the first batch, or just emptied by a "delete all rows" mode), no
  conflict expected: the work of ON CONFLICT is skipped.
  - If the metadata holds this table only, the COPY goes straight into the live table under a
    savepoint (the primary key index rejects a key repeated in the batch or already there); what
    it sent is kept (a spool file, or the CSV or dump file itself), and if the COPY fails it is
    rolled back and replayed into staging, then merged as above with DISTINCT ON
    (``copy_rows.BatchCopier._replay``).
  - Otherwise the staging table is merged with a plain ``INSERT .. SELECT`` under a savepoint, and
    on a unique violation with the DISTINCT ON .. ON CONFLICT statement.
  Emptiness is only a guess (a concurrent writer may add rows): correctness rests on the index.
  After a failed direct COPY, later batches of the same ``ingest()`` call use staging.
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

from ingest_platform.bulk_ingest.copy_rows import TableTarget
from ingest_platform.postgres.connection import scalar
from ingest_platform.postgres.planner import (
    estimated_rows,
    few_of,
    index_lookup_joins,
    set_planner,
)

_SAVEPOINT = sql.Identifier("_ingest_direct_copy")
MERGE_WORK_MEM = "128MB"


def begin_table(
    conn: psycopg.Connection, target: TableTarget, direct_allowed: bool = False
) -> None:
    """Point the target's COPY at its destination for this batch (creating the staging table)."""
    target.rows = 0
    target.diverted = False
    if not target.primary_key:
        target.destination = target.qualified
        return
    if target.maybe_empty is None:
        target.maybe_empty = scalar(
            conn, sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(target.qualified)
        )
    if direct_allowed and target.maybe_empty and target.can_go_direct:
        conn.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
        target.direct, target.replays, target.destination = True, [], target.qualified
        return
    target.destination = create_staging(conn, target)


def create_staging(conn: psycopg.Connection, target: TableTarget) -> sql.Identifier:
    staging = sql.Identifier(f"_ingest_stage_{secrets.token_hex(6)}")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(staging, target.qualified)
    )
    return staging


def divert_to_staging(conn: psycopg.Connection, target: TableTarget) -> sql.Identifier:
    """A direct COPY failed: undo it, and return a new staging table for its rows."""
    conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
    conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
    return create_staging(conn, target)


def discard(target: TableTarget) -> None:
    """Drop what a batch left on the target (the replays of its direct COPYs)."""
    replays, target.replays, target.direct = target.replays, None, False
    for replay in replays or ():
        replay.close()


def finish_table(conn: psycopg.Connection, target: TableTarget) -> None:
    """Merge the staging table into the live table and drop it (no-op for append)."""
    if not target.primary_key or target.destination is None:
        return
    if target.direct:
        conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
        discard(target)
        target.destination = None
        if target.rows:
            target.maybe_empty = False
        return
    staging, target.destination = target.destination, None
    if target.rows:
        _merge(conn, target, staging)
        target.maybe_empty = False
    conn.execute(sql.SQL("DROP TABLE {}").format(staging))


def _merge(conn: psycopg.Connection, target: TableTarget, staging: sql.Composable) -> None:
    """The staging rows into the live table (see the module's docstring)."""
    columns = target.column_list()
    key = sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key)
    plain = sql.SQL("SELECT {} FROM {}").format(columns, staging)
    deduplicated = sql.SQL("SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, ctid DESC").format(
        key, columns, staging, key
    )
    upsert = _merge_statement if conn.info.server_version >= 150000 else _on_conflict_statement
    repeats = target.diverted  # the direct COPY failed: a key repeats or is there already
    if target.maybe_empty and not repeats:  # no conflict expected: a plain INSERT
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) {}").format(target.qualified, columns, plain)
                )
            return
        except psycopg.errors.UniqueViolation:
            repeats = True
    set_planner(conn, MERGE_WORK_MEM)
    with index_lookup_joins(conn, few_of(target.rows, estimated_rows(conn, target.qualified))):
        if repeats:
            conn.execute(upsert(target, deduplicated))
            return
        try:
            with conn.transaction():
                conn.execute(upsert(target, plain))
        except (psycopg.errors.CardinalityViolation, psycopg.errors.UniqueViolation):
            # The batch repeats a key: the last row wins.
            conn.execute(upsert(target, deduplicated))


def _merge_statement(target: TableTarget, select: sql.Composable) -> sql.Composed:
    others = [sql.Identifier(c) for c in target.columns if c not in target.primary_key]
    matched = (
        sql.SQL("UPDATE SET {}").format(
            sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=c) for c in others)
        )
        if others
        else sql.SQL("DO NOTHING")
    )
    return sql.SQL(
        "MERGE INTO {live} AS t USING ({select}) AS s ON {on} WHEN MATCHED THEN {matched} "
        "WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
    ).format(
        live=target.qualified,
        select=select,
        on=sql.SQL(" AND ").join(
            sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in target.primary_key
        ),
        matched=matched,
        columns=target.column_list(),
        values=sql.SQL(", ").join(
            sql.SQL("s.{}").format(sql.Identifier(c)) for c in target.columns
        ),
    )


def _on_conflict_statement(target: TableTarget, select: sql.Composable) -> sql.Composed:
    others = [sql.Identifier(c) for c in target.columns if c not in target.primary_key]
    action = (
        sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in others)
        )
        if others
        else sql.SQL("DO NOTHING")
    )
    return sql.SQL("INSERT INTO {} ({}) {} ON CONFLICT ({}) {}").format(
        target.qualified,
        target.column_list(),
        select,
        sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key),
        action,
    )


def delete_all_rows(conn: psycopg.Connection, target: TableTarget) -> None:
    """DELETE (not TRUNCATE, whose ACCESS EXCLUSIVE lock would block readers until commit)."""
    conn.execute(sql.SQL("DELETE FROM {}").format(target.qualified))
    target.maybe_empty = True
