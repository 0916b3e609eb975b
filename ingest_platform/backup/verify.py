"""Proof that a restore holds the backup's rows: the comparison engine's fingerprints.

While the backup reads a table, the same snapshot gives the comparison engine's (``consistency/
compare.py``) first-level bucket fingerprints of it: per bucket of key hashes, the row count and
sums of row-hash chunks. They go into the manifest. After a restore the restored table's buckets
at the same depth must be equal, bucket for bucket: the rows read back from the files and loaded
are the rows the source had, whichever reader and loader stood between.

Both sides hash each column as PostgreSQL prints it (every column as the engine's "string" kind:
its ``::text``) under the same session settings, which is exact for every type, json and arrays
included, and the same on PostgreSQL 15 and 18. When the source is reachable the restored tables
are also compared with it by ``compare_hashes`` (which names differing keys); rows written there
since the backup show up as differences.
"""

from __future__ import annotations

import psycopg

from ingest_platform.bigquery.source import MirrorSource
from ingest_platform.bigquery.types import MirrorColumn
from ingest_platform.consistency.compare import (
    DIFFERENT,
    Comparison,
    Difference,
    PostgresSide,
    choose_depth,
    compare_hashes,
)
from ingest_platform.errors import SchemaError
from ingest_platform.postgres import catalog

# What ::text depends on, the same on both sides.
TEXT_SETTINGS = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


def use_text_settings(conn: psycopg.Connection, local: bool = False) -> None:
    for name, value in TEXT_SETTINGS.items():
        conn.execute(f"SELECT set_config(%s, %s, {'true' if local else 'false'})", (name, value))


def text_side(
    conn: psycopg.Connection, schema: str, table: str, name: str, key: list[str] | None = None
) -> PostgresSide:
    """`key`: the key columns to bucket rows by (default: the table's primary key now)."""
    oid = catalog.relation_oid(conn, schema, table)
    if oid is None:
        raise SchemaError(f'Table "{schema}"."{table}" does not exist on {name}.')
    # By name, not position: a restored child table gets its parent's column order (pg_dump
    # recreates it with INHERITS), which can differ from the order the source's child has.
    columns = tuple(
        MirrorColumn(c.name, c.type, c.name, "STRING", "string")
        for c in sorted(catalog.columns(conn, oid), key=lambda c: c.name)
    )
    key_columns = tuple(key) if key is not None else catalog.primary_key(conn, oid)
    source = MirrorSource(schema, table, columns, key_columns)
    return PostgresSide(conn, source, name=name)


def fingerprint(conn: psycopg.Connection, schema: str, table: str) -> dict:
    """{"depth": d, "key": [columns], "buckets": {prefix: [count, sum1, sum2, sum3, sum4]}} of
    the table as `conn` sees it (call ``use_text_settings`` first)."""
    side = text_side(conn, schema, table, "backup")
    depth = choose_depth(max(int(side.estimated_rows()), 1))
    buckets = {k: list(v) for k, v in side.buckets(depth, None).items()}
    return {"depth": depth, "key": list(side.source.key), "buckets": buckets}


def compare_with_fingerprint(
    conn: psycopg.Connection, schema: str, table: str, recorded: dict
) -> Comparison:
    """The restored table against the backup's fingerprint: differing buckets are named (the
    backup holds no keys to narrow them further)."""
    # The recorded key (backups since it is recorded): the proof needs no primary key yet.
    side = text_side(conn, schema, table, "restored", recorded.get("key"))
    depth = recorded["depth"]
    ours = {k: tuple(v) for k, v in recorded["buckets"].items()}
    theirs = side.buckets(depth, None)
    differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    result = Comparison(
        f"{schema}.{table}",
        "backup",
        "restored",
        sum(v[0] for v in ours.values()),
        sum(v[0] for v in theirs.values()),
        buckets=len(set(ours) | set(theirs)),
        differing_buckets=len(differing),
        depth=depth,
    )
    for prefix in differing[:20]:
        result.differences.append(
            Difference(
                {"key_hash_prefix": prefix},
                DIFFERENT,
                f"{ours.get(prefix, (0,))[0]} rows in the backup,"
                f" {theirs.get(prefix, (0,))[0]} restored",
            )
        )
    result.more_differences = len(differing) > 20
    return result


def compare_with_source(
    source: psycopg.Connection, target: psycopg.Connection, schema: str, table: str
) -> Comparison:
    return compare_hashes(
        text_side(source, schema, table, "source"),
        text_side(target, schema, table, "restored"),
        what=f"{schema}.{table}",
    )
