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
- ``quarantined_at``;
- ``load_table``: set while the records belong to a staged load not yet attached (its load
  table's name), NULL once they describe the version readers see.

A load writes its records with its load table when it stages (``add_pending``, the stage's
transaction); the attach of the version publishes them (``publish``: the (table, version)'s
previous rows go, the pending ones become visible) in the transaction that makes the child
visible; an abandoned load's pending rows go with its load table (``discard_pending``). So the
visible rows always describe the child table readers see: a reload that loads every record removes
them, a failed load leaves the previous load's rows with the previous child. Every record of a
loaded version's file is in exactly one place: its child table or here. Readers count only visible
rows (``load_table IS NULL``).
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
                " quarantined_at timestamptz NOT NULL DEFAULT now(), load_table text)"
            ).format(qualified(schema, QUARANTINE_TABLE))
        )
        # A quarantine made before staged loads had (table_name, version, file, record) as its
        # key, which a pending record and its visible predecessor would share.
        table = qualified(schema, QUARANTINE_TABLE)
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS load_table text").format(table)
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                table, sql.Identifier(f"{QUARANTINE_TABLE}_pkey")
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {}"
                " (table_name, version, file, record, load_table) NULLS NOT DISTINCT"
            ).format(sql.Identifier(f"{QUARANTINE_TABLE}_record"), table)
        )


def add_pending(
    conn: psycopg.Connection,
    schema: str,
    load_table: str,
    table: str,
    version: str,
    dump: str,
    records: list[QuarantinedRecord],
) -> None:
    """Write a staged load's records, invisible to readers until ``publish``. In the caller's
    transaction (the stage). The table exists when there are records: the load created it before
    its COPY."""
    if not records:
        return
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        raise IngestError(
            f'The quarantine table "{schema}"."{QUARANTINE_TABLE}" was dropped during the '
            f'load of "{table}" version {version}; load the version again.'
        )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (table_name, version, dump, file, record, column_name, reason,"
                " raw_record, load_table) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(qualified(schema, QUARANTINE_TABLE)),
            [
                (table, version, dump, r.file, r.record, r.column, r.reason, r.raw, load_table)
                for r in records
            ],
        )


def publish(conn: psycopg.Connection, schema: str, table: str, version: str, load_table: str):
    """The records of (table, version) become the pending ones of `load_table`, in the caller's
    transaction (the attach)."""
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        return
    target = qualified(schema, QUARANTINE_TABLE)
    conn.execute(
        sql.SQL(
            "DELETE FROM {} WHERE table_name = %s AND version = %s AND load_table IS NULL"
        ).format(target),
        (table, version),
    )
    conn.execute(
        sql.SQL("UPDATE {} SET load_table = NULL WHERE load_table = %s").format(target),
        (load_table,),
    )


def discard_pending(conn: psycopg.Connection, schema: str, load_table: str) -> None:
    """Forget the records of a load table that is being dropped. In the caller's transaction."""
    if relation_exists(conn, schema, QUARANTINE_TABLE):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE load_table = %s").format(
                qualified(schema, QUARANTINE_TABLE)
            ),
            (load_table,),
        )


def quarantined_count(
    conn: psycopg.Connection, schema: str, version: str, table: str | None = None
) -> int:
    """Records quarantined for a version (of one table, or of every table); 0 without a table."""
    if not relation_exists(conn, schema, QUARANTINE_TABLE):
        return 0
    query = sql.SQL("SELECT count(*) FROM {} WHERE version = %s AND load_table IS NULL").format(
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
            " WHERE version = %s AND load_table IS NULL ORDER BY table_name, file, record LIMIT %s"
        ).format(qualified(schema, QUARANTINE_TABLE)),
        (version, limit),
    )
    names = ("table", "file", "record", "column", "reason", "raw_bytes")
    return [dict(zip(names, row, strict=True)) for row in cur]
