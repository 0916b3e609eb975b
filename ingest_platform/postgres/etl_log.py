"""The ETL transaction log: one row per change a pipeline makes to a warehouse table, written in
the same transaction as the data (``"_ingest_meta".etl_log``).

Every pipeline that changes warehouse data calls ``record`` inside the transaction that writes
it: a dump version attach (one row per table attached), a CDC merge or resync, ``ingest()`` (per
table and committed transaction), a REST API batch, a migration's data copy and a CSV import. So a
committed change always has its row and a rolled-back one never has (the row is part of the
same transaction). The BigQuery mirror changes BigQuery, not PostgreSQL: its row is written right
after the BigQuery commit succeeded, in a short PostgreSQL transaction of its own.

"What changed this table, when" (``changes(conn, table)`` below, or in SQL)::

    SELECT finished, kind, version, rows, run_id FROM "_ingest_meta".etl_log
    WHERE table_name = 'hr.hired_employees' ORDER BY id DESC LIMIT 50;

Columns: ``kind`` (what wrote), ``table_name`` ("schema.table" as PostgreSQL names it,
unquoted), ``version`` (the dump version, CDC watermark, ... or NULL), ``rows`` (rows written),
``started`` (the pipeline's start, default: its transaction's start), ``finished`` (the time of
the record, just before the commit), ``run_id`` (the Dagster run, when there is one), ``xid``
(the transaction's id: the rows written have it as ``xmin``), ``detail`` (jsonb, optional).

The Dagster run id: the core does not import dagster. The definitions layer sets it for the run
(``run_scope``, a context variable) and `INGEST_DAGSTER_RUN_ID` in the environment is the
fallback, for processes a run starts; ``record(run_id=...)`` overrides both.

The table is created on first use, in the caller's transaction (so a failed first load leaves no
table either), under a transaction-level advisory lock so two first loads do not race on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest_platform.postgres.catalog import qualified

SCHEMA = "_ingest_meta"
TABLE = "etl_log"
RUN_ID_ENV = "INGEST_DAGSTER_RUN_ID"

# The kinds the platform writes (free text in the table: a kind of another tool is welcome).
KINDS = (
    "dump_version",
    "cdc_merge",
    "cdc_resync",
    "bigquery_mirror",
    "ingest",
    "api_batch",
    "migration",
    "csv_import",
)

_run_id: ContextVar[str | None] = ContextVar("ingest_platform_run_id", default=None)

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    table_name text NOT NULL,
    version text,
    rows bigint NOT NULL,
    started timestamptz NOT NULL,
    finished timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id text,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    detail jsonb
);
-- The admin and the query filter by table, by time and by kind, newest first, on a log that may
-- hold millions of rows: an index each, all ending in id so "newest first" is an index scan.
CREATE INDEX IF NOT EXISTS etl_log_table_idx ON {table} (table_name, id);
CREATE INDEX IF NOT EXISTS etl_log_finished_idx ON {table} (finished);
CREATE INDEX IF NOT EXISTS etl_log_kind_idx ON {table} (kind, id);
"""


def log_table() -> sql.Composed:
    return qualified(SCHEMA, TABLE)


def current_run_id() -> str | None:
    """The Dagster run this process works for, if any (``run_scope``, else the environment)."""
    return _run_id.get() or os.environ.get(RUN_ID_ENV) or None


@contextmanager
def run_scope(run_id: str | None) -> Iterator[None]:
    """Records written inside carry `run_id` (the definitions layer wraps a run's work in it)."""
    token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(token)


def set_run_id(run_id: str | None) -> None:
    """Records written from now on in this context carry `run_id` (a resource's setup, which
    has no block to wrap)."""
    _run_id.set(run_id)


def ensure_table(conn: psycopg.Connection) -> None:
    """The log table, created if missing, in the caller's transaction."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{SCHEMA}"."{TABLE}"',))
    row = exists.fetchone()
    if row and row[0]:
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('ingest_platform.etl_log'))")
    conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(SCHEMA), table=log_table()))


def record(
    conn: psycopg.Connection,
    *,
    kind: str,
    table: str,
    rows: int,
    version: str | None = None,
    started: datetime | None = None,
    run_id: str | None = None,
    detail: dict[str, Any] | None = None,
    ensure: bool = True,
) -> None:
    """One row of the log, in `conn`'s current transaction (call it inside the transaction that
    writes the data; it never commits). `table`: "schema.table"; `started`: default the
    transaction's start (``now()``). `ensure=False`: the caller created the table beforehand
    (``ensure_table`` at startup; the REST API), so no catalog lookup or DDL runs here."""
    if ensure:
        ensure_table(conn)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (kind, table_name, version, rows, started, run_id, detail)"
            " VALUES (%s, %s, %s, %s, COALESCE(%s, now()), %s, %s)"
        ).format(log_table()),
        (
            kind,
            table,
            version,
            int(rows),
            started,
            run_id or current_run_id(),
            Jsonb(detail) if detail is not None else None,
        ),
    )


def changes(
    conn: psycopg.Connection,
    table: str | None = None,
    *,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """What changed `table` (all tables: None), newest first."""
    if conn.execute("SELECT to_regclass(%s)", (f'"{SCHEMA}"."{TABLE}"',)).fetchone() == (None,):
        return []
    where, params = [], []
    for column, value, op in (
        ("table_name", table, "="),
        ("kind", kind, "="),
        ("finished", since, ">="),
    ):
        if value is not None:
            where.append(sql.SQL("{} " + op + " %s").format(sql.Identifier(column)))
            params.append(value)
    cursor = conn.execute(
        sql.SQL(
            "SELECT id, kind, table_name, version, rows, started, finished, run_id FROM {}"
            " {} ORDER BY id DESC LIMIT %s"
        ).format(
            log_table(),
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        ),
        [*params, limit],
    )
    names = [c.name for c in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor]
