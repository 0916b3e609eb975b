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
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

from ingest_platform.bulk_ingest.copy_rows import TableTarget


def begin_table(conn: psycopg.Connection, target: TableTarget) -> None:
    """Point the target's COPY at its destination for this batch (creating the staging table)."""
    target.rows = 0
    if not target.primary_key:
        target.destination = target.qualified
        return
    staging = sql.Identifier(f"_ingest_stage_{secrets.token_hex(6)}")
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(staging, target.qualified))
    target.destination = staging


def finish_table(conn: psycopg.Connection, target: TableTarget) -> None:
    """Merge the staging table into the live table and drop it (no-op for append)."""
    if not target.primary_key or target.destination is None:
        return
    staging, target.destination = target.destination, None
    if target.rows:
        columns = target.column_list()
        key = sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key)
        others = [c for c in target.columns if c not in target.primary_key]
        action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others)
        ) if others else sql.SQL("DO NOTHING")

        def insert(select: sql.Composable) -> sql.Composed:
            return sql.SQL("INSERT INTO {} ({}) {} ON CONFLICT ({}) {}").format(
                target.qualified, columns, select, key, action)

        try:
            with conn.transaction():
                conn.execute(insert(sql.SQL("SELECT {} FROM {}").format(columns, staging)))
        except psycopg.errors.CardinalityViolation:   # the batch repeats a key: the last row wins
            conn.execute(insert(sql.SQL("SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, ctid DESC").format(
                key, columns, staging, key)))
    conn.execute(sql.SQL("DROP TABLE {}").format(staging))


def delete_all_rows(conn: psycopg.Connection, target: TableTarget) -> None:
    """DELETE (not TRUNCATE, whose ACCESS EXCLUSIVE lock would block readers until commit)."""
    conn.execute(sql.SQL("DELETE FROM {}").format(target.qualified))
