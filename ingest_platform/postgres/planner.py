"""Planner settings for the statements that join a batch with a table (CDC merges and source
reads, ``ingest()`` upserts): work_mem and no JIT, and index lookups for a batch that is small
against the table."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
from psycopg import sql

from ingest_platform.postgres.connection import scalar

# Joins of a batch of keys with a large table: below 1/INDEX_LOOKUP_RATIO of the table's rows, the
# batch is joined by index lookups (the planner would scan and hash the whole table: it does not
# know the keys arrive sorted, so the lookups walk the index in order and touch each page about
# once).
INDEX_LOOKUP_RATIO = 4


def set_planner(conn: psycopg.Connection, work_mem: str) -> None:
    """(Inside a transaction.) work_mem for the sorts and joins; no JIT: compiling the expressions
    costs 0.1-0.3 s on plans whose cost passes jit_above_cost, more than it saves on them."""
    conn.execute(
        sql.SQL("SET LOCAL work_mem = {}; SET LOCAL jit = off").format(sql.Literal(work_mem))
    )


@contextmanager
def index_lookup_joins(conn: psycopg.Connection, enabled: bool):
    """(Inside a transaction.) With `enabled`, the statements inside join by nested loops over an
    index (no hash or merge joins); the previous settings come back afterwards (after an error the
    transaction rolls back, and the SET LOCAL with it)."""
    if not enabled:
        yield
        return
    saved = conn.execute(
        "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')"
    ).fetchone()
    conn.execute(
        "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', "
        "true)"
    )
    yield
    conn.execute(
        "SELECT set_config('enable_hashjoin', %s, true), set_config('enable_mergejoin', %s, true)",
        saved,
    )


def estimated_rows(conn: psycopg.Connection, relation: sql.Composable) -> float | None:
    """The planner's estimate of a table's rows (statistics' density x current size); None if the
    table has no statistics yet."""
    return scalar(
        conn,
        sql.SQL(
            "SELECT CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples / relpages * "
            "(pg_relation_size(oid) / current_setting('block_size')::int) END FROM pg_class WHERE "
            "oid = {}::regclass"
        ).format(sql.Literal(relation.as_string(conn))),
    )


def few_of(batch_rows: float, table_rows: float | None) -> bool:
    """Whether a batch is small enough against a table to join it by index lookups."""
    return table_rows is not None and batch_rows * INDEX_LOOKUP_RATIO <= table_rows
