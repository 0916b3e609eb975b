"""Exported snapshots: one transaction's view of the database shared by several connections.

A REPEATABLE READ transaction exports its snapshot (``pg_export_snapshot``); other connections
adopt it (``SET TRANSACTION SNAPSHOT``) and then read every table as of the same instant while
the server keeps taking writes. The exporting transaction must stay open while others adopt it.
Used by ``migration/data.py`` (parallel copies) and ``backup/`` (parallel table files).
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def export_snapshot(conn: psycopg.Connection) -> str:
    """Begin a read-only REPEATABLE READ transaction on `conn` and export its snapshot; keep
    `conn` open (and the transaction with it) until every adopter has begun."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]


def adopt_snapshot(conn: psycopg.Connection, snapshot: str) -> None:
    """Begin a read-only transaction on `conn` that sees the exported `snapshot`."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
