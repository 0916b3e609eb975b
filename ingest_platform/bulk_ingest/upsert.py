"""Where a batch's rows go, and how they become visible, for one table.

- No primary key: COPY straight into the live table (append). ROW EXCLUSIVE lock only.
- Primary key: COPY into a temporary *staging table* (``CREATE TEMP TABLE .. (LIKE live)``: same
  types and NOT NULLs, no indexes, no WAL, dropped at commit), then one
  ``INSERT INTO live (..) SELECT .. FROM staging ON CONFLICT (pk) DO UPDATE SET <other columns>``
  (DO NOTHING if every column is in the key). Duplicate keys within the batch: the last row wins.
  The INSERT first runs as is under a savepoint; only if the batch repeats a key (PostgreSQL
  refuses to update a row twice in one statement) it runs again on
  ``SELECT DISTINCT ON (pk) .. ORDER BY pk, ctid DESC`` (rows of a freshly filled temp table lie in
  COPY order, so the highest ctid is the last row). The live table gets ROW EXCLUSIVE only.
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

_SAVEPOINT = sql.Identifier("_ingest_direct_copy")


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
        columns = target.column_list()
        key = sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key)
        others = [c for c in target.columns if c not in target.primary_key]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in others
                )
            )
            if others
            else sql.SQL("DO NOTHING")
        )

        def insert(select: sql.Composable, conflict: bool = True) -> sql.Composed:
            statement = sql.SQL("INSERT INTO {} ({}) {}").format(target.qualified, columns, select)
            return (
                sql.SQL("{} ON CONFLICT ({}) {}").format(statement, key, action)
                if conflict
                else statement
            )

        plain = sql.SQL("SELECT {} FROM {}").format(columns, staging)
        deduplicated = sql.SQL("SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, ctid DESC").format(
            key, columns, staging, key
        )
        if target.diverted:  # the direct COPY failed: a key repeats or is there already
            conn.execute(insert(deduplicated))
        elif target.maybe_empty:
            try:
                with conn.transaction():
                    conn.execute(insert(plain, conflict=False))
            except psycopg.errors.UniqueViolation:
                conn.execute(insert(deduplicated))
        else:
            try:
                with conn.transaction():
                    conn.execute(insert(plain))
            except (
                psycopg.errors.CardinalityViolation
            ):  # the batch repeats a key: the last row wins
                conn.execute(insert(deduplicated))
        target.maybe_empty = False
    conn.execute(sql.SQL("DROP TABLE {}").format(staging))


def delete_all_rows(conn: psycopg.Connection, target: TableTarget) -> None:
    """DELETE (not TRUNCATE, whose ACCESS EXCLUSIVE lock would block readers until commit)."""
    conn.execute(sql.SQL("DELETE FROM {}").format(target.qualified))
    target.maybe_empty = True
