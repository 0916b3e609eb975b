"""Primary-key values that a loaded dump version holds more than once.

Decision: a version whose data repeats the primary key its schema declares is loaded, and its
blocking check `primary_key_unique` fails naming the keys (defs/dumps.py), rather than refused
in the load. The source's own constraint could never have held those rows, so the export is
inconsistent (taken without a snapshot while rows moved) or the schema's key is wrong; but
- finding them costs a sort of every key, ~25-35% of a load's time: as a check, loads keep their
  speed and only tables with a key pay, once;
- the rows stay where the user can see which ones repeat and decide which side is wrong;
- the check blocks: the BigQuery mirror of that version does not run, and the run (and the
  `ingest-platform ingest` command) fails naming the keys.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingest_platform.postgres import version_registry as registry
from ingest_platform.postgres.catalog import qualified, relation_oid

# Sorted, not hashed: PostgreSQL's hash aggregate needs ~100 bytes a key and spills to disk long
# before a sort does (measured: 2-3x slower on 1M keys).
_SETTINGS = (("work_mem", "256MB"), ("enable_hashagg", "off"))

Duplicates = list[tuple[tuple[str | None, ...], int]]  # (key values as text, rows), most first


def version_duplicate_keys(
    conn: psycopg.Connection, schema: str, table: str, version: str, key: list[str], limit: int = 5
) -> Duplicates:
    """Up to `limit` keys that the version's child table holds more than once; [] when it holds
    none, or the version is not loaded."""
    with conn.transaction():
        registered = registry.registered_version(conn, schema, table, version)
        if not key or registered is None:
            return []
        child = registered["child_table"]
        if relation_oid(conn, schema, child) is None:
            return []
        for name, value in _SETTINGS:
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in key)
        rows = conn.execute(
            sql.SQL(
                "SELECT {}, count(*) FROM ONLY {} GROUP BY {} HAVING count(*) > 1 "
                "ORDER BY count(*) DESC LIMIT {}"
            ).format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in key),
                qualified(schema, child),
                columns,
                sql.Literal(limit),
            )
        ).fetchall()
    return [(tuple(row[:-1]), row[-1]) for row in rows]


def describe(key: list[str], duplicates: Duplicates) -> str:
    """``id=5 (3 rows), id=7 (2 rows)``."""
    return ", ".join(
        ", ".join(f"{c}={v if v is not None else 'NULL'}" for c, v in zip(key, values, strict=True))
        + f" ({rows} rows)"
        for values, rows in duplicates
    )
