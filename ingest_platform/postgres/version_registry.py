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


def load_tables(conn: psycopg.Connection, schema: str, version: str) -> dict[str, dict]:
    """Load tables (begun, never attached) of this version: name -> marker (``load_marker``)."""
    rows = conn.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') LIKE %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
        (schema, f"%{LOAD_MARKER}%"),
    ).fetchall()
    found = {}
    for name, comment in rows:
        try:
            marker = json.loads(comment)
        except ValueError:
            continue
        if (
            isinstance(marker, dict)
            and marker.get("marker") == LOAD_MARKER
            and marker.get("version") == version
        ):
            found[name] = marker
    return found


def load_marker(**fields) -> str:
    """The comment of a load table: table, version, dump, state ("loading", or "staged" with the
    load and its rows once its COPY is complete)."""
    return json.dumps({"marker": LOAD_MARKER, **fields})


def create_registry(conn: psycopg.Connection, schema: str) -> None:
    # columns: [{"name", "type" (as loaded, = the parent's type then), "declared"}], in file order;
    # a jsonb array because jsonb objects do not keep key order.
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " table_name text NOT NULL, version text NOT NULL, child_table text NOT NULL,"
            " rows bigint NOT NULL, columns jsonb NOT NULL, primary_key jsonb NOT NULL,"
            " loaded_at timestamptz NOT NULL DEFAULT now(), dump text,"
            " PRIMARY KEY (table_name, version))"
        ).format(qualified(schema, REGISTRY_TABLE))
    )
    # dump: the file the version's child came from (registries made before it have none).
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS dump text").format(
            qualified(schema, REGISTRY_TABLE)
        )
    )


def version_dumps(conn: psycopg.Connection, schema: str, version: str) -> dict[str, str | None]:
    """Table -> the dump file its registered child of `version` came from."""
    if relation_oid(conn, schema, REGISTRY_TABLE) is None:
        return {}
    cur = conn.execute(
        sql.SQL("SELECT table_name, dump FROM {} WHERE version = %s").format(
            qualified(schema, REGISTRY_TABLE)
        ),
        (version,),
    )
    return dict(cur.fetchall())


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
    dump: str = "",
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, version, child_table, rows, columns, primary_key, "
            "loaded_at, dump)"
            " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp(), %s)"
            " ON CONFLICT (table_name, version) DO UPDATE SET child_table = EXCLUDED.child_table,"
            " rows = EXCLUDED.rows, columns = EXCLUDED.columns, primary_key = EXCLUDED.primary_key,"
            " loaded_at = EXCLUDED.loaded_at, dump = EXCLUDED.dump"
        ).format(qualified(schema, REGISTRY_TABLE)),
        (table, version, child_table, rows, Jsonb(columns), Jsonb(primary_key), dump),
    )
