"""The quarantine: records of dump files that did not load, kept whole, one table per application.

A table whose reject budget (``max_errors``, see ``loading/reject_budget.py``) allows bad records
loads the others and sets the bad ones aside here, ``S."_ingest_quarantine"``:

- ``table_name``, ``version``, ``dump`` (the dump file's name): which load;
- ``file`` (the data file in the dump), ``record`` (1-based, header rows included, counted as
  everywhere else), ``column_name`` (NULL when the record as a whole is wrong, e.g. its field
  count), ``reason`` (the reader's or PostgreSQL's words);
- ``raw_record``: the record's bytes exactly as the file has them (its encoding, its field
  terminators; without the row terminator), so nothing of the dump is lost and a fixed record can
  be loaded later;
- ``quarantined_at``.

The rows of one (table, version) are replaced inside the attach transaction of that version
(``replace_rows``), so they always describe the child table readers see: a reload that loads every
record removes them, a failed load leaves the previous load's rows with the previous child.
Every record of a loaded version's file is in exactly one place: its child table or here.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest_platform.errors import IngestError
from ingest_platform.postgres.catalog import qualified, relation_exists
from ingest_platform.postgres.connection import scalar

QUARANTINE_TABLE = "_ingest_quarantine"


@dataclass(frozen=True)
class QuarantinedRecord:
    file: str
    record: int
    column: str | None
    reason: str
    raw: bytes


def create_quarantine(conn: psycopg.Connection, schema: str) -> None:
    """Create the schema's quarantine table if missing. Commits (one short transaction)."""
    with conn.transaction():
        # CREATE ... IF NOT EXISTS races with itself: one creator per schema at a time.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ingest_platform.quarantine'), hashtext(%s))",
            (schema,),
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " table_name text NOT NULL, version text NOT NULL, dump text NOT NULL,"
                " file text NOT NULL, record bigint NOT NULL, column_name text,"
                " reason text NOT NULL, raw_record bytea NOT NULL,"
                " quarantined_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (table_name, version, file, record))"
            ).format(qualified(schema, QUARANTINE_TABLE))
        )


def replace_rows(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    version: str,
    dump: str,
    records: list[QuarantinedRecord],
) -> None:
    """The quarantine of (table, version) becomes `records`, in the caller's transaction (the
    attach). The table exists when there are records: the load created it before its COPY."""
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        if records:
            raise IngestError(
                f'The quarantine table "{schema}"."{QUARANTINE_TABLE}" was dropped during the '
                f'load of "{table}" version {version}; load the version again.'
            )
        return
    target = qualified(schema, QUARANTINE_TABLE)
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE table_name = %s AND version = %s").format(target),
        (table, version),
    )
    if records:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (table_name, version, dump, file, record, column_name, reason,"
                    " raw_record) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(target),
                [
                    (table, version, dump, r.file, r.record, r.column, r.reason, r.raw)
                    for r in records
                ],
            )


def quarantined_count(
    conn: psycopg.Connection, schema: str, version: str, table: str | None = None
) -> int:
    """Records quarantined for a version (of one table, or of every table); 0 without a table."""
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        return 0
    query = sql.SQL("SELECT count(*) FROM {} WHERE version = %s").format(
        qualified(schema, QUARANTINE_TABLE)
    )
    if table is None:
        return scalar(conn, query, (version,))
    return scalar(conn, query + sql.SQL(" AND table_name = %s"), (version, table))


def quarantined_records(
    conn: psycopg.Connection, schema: str, version: str, limit: int = 20
) -> list[dict]:
    """The version's first quarantined records (by table, file, record), without their bytes."""
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        return []
    cur = conn.execute(
        sql.SQL(
            "SELECT table_name, file, record, column_name, reason, length(raw_record) FROM {}"
            " WHERE version = %s ORDER BY table_name, file, record LIMIT %s"
        ).format(qualified(schema, QUARANTINE_TABLE)),
        (version, limit),
    )
    names = ("table", "file", "record", "column", "reason", "raw_bytes")
    return [dict(zip(names, row, strict=True)) for row in cur]
