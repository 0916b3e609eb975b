"""What the platform records about versioned tables: the per-schema registry of loaded versions
(``S."_ingest_versions"``) and the marker on load tables not yet attached.

Helpers for ``versioned_tables``; they run inside the caller's transaction and never commit.
Names are looked up as values (``nspname = %s``), so quotes and spaces in them need no care.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest_platform.postgres.catalog import qualified, relation_oid

REGISTRY_TABLE = "_ingest_versions"

# Marks a load table (a table comment) so a later begin can find and drop the ones a crashed
# load left behind, whatever its (possibly shortened) name.
LOAD_MARKER = "ingest_platform load table"


def load_tables_of(conn: psycopg.Connection, schema: str, table: str, version: str) -> list[str]:
    """Names of load tables (begun, never attached) of this table and version."""
    rows = conn.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') LIKE %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
        (schema, f"%{LOAD_MARKER}%"),
    ).fetchall()
    found = []
    for name, comment in rows:
        try:
            marker = json.loads(comment)
        except ValueError:
            continue
        if (
            marker.get("marker") == LOAD_MARKER
            and marker.get("table") == table
            and marker.get("version") == version
        ):
            found.append(name)
    return found


def load_marker(table: str, version: str) -> str:
    return json.dumps({"marker": LOAD_MARKER, "table": table, "version": version})


def create_registry(conn: psycopg.Connection, schema: str) -> None:
    # columns: [{"name", "type" (as loaded, = the parent's type then), "declared"}], in file order;
    # a jsonb array because jsonb objects do not keep key order.
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " table_name text NOT NULL, version text NOT NULL, child_table text NOT NULL,"
            " rows bigint NOT NULL, columns jsonb NOT NULL, primary_key jsonb NOT NULL,"
            " loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, version))"
        ).format(qualified(schema, REGISTRY_TABLE))
    )


def registered_versions(conn: psycopg.Connection, schema: str, table: str) -> list[dict]:
    """Registry rows of a table, oldest load first; [] if the registry does not exist yet."""
    if relation_oid(conn, schema, REGISTRY_TABLE) is None:
        return []
    cur = conn.execute(
        sql.SQL(
            "SELECT version, child_table, rows, columns FROM {} WHERE table_name = %s"
            " ORDER BY loaded_at, version"
        ).format(qualified(schema, REGISTRY_TABLE)),
        (table,),
    )
    return [
        dict(zip(("version", "child_table", "rows", "columns"), row, strict=True)) for row in cur
    ]


def registered_version(
    conn: psycopg.Connection, schema: str, table: str, version: str
) -> dict | None:
    return next(
        (r for r in registered_versions(conn, schema, table) if r["version"] == version), None
    )


def register_version(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    version: str,
    child_table: str,
    rows: int,
    columns: list[dict],
    primary_key: list[str],
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, version, child_table, rows, columns, primary_key, "
            "loaded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp())"
            " ON CONFLICT (table_name, version) DO UPDATE SET child_table = EXCLUDED.child_table,"
            " rows = EXCLUDED.rows, columns = EXCLUDED.columns, primary_key = EXCLUDED.primary_key,"
            " loaded_at = EXCLUDED.loaded_at"
        ).format(qualified(schema, REGISTRY_TABLE)),
        (table, version, child_table, rows, Jsonb(columns), Jsonb(primary_key)),
    )
