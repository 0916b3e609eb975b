"""Test helpers: dump-shaped parent/child tables and CDC-shaped merged tables made by hand."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingest_platform.bigquery.clients import EMULATOR_PROJECT
from ingest_platform.bigquery.mirror import MirrorTarget
from ingest_platform.postgres import version_registry as catalog


def make_dump_table(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: list[tuple[str, str]],
    versions: dict[str, list[tuple]],
    primary_key: list[str],
) -> None:
    """Parent `schema.table` (+ `_version`) with one INHERITS child per version, registered like
    a load."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    catalog.create_registry(conn, schema)
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, _version text)").format(
            sql.Identifier(schema),
            sql.Identifier(table),
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns
            ),
        )
    )
    for version, rows in versions.items():
        replace_version(conn, schema, table, columns, version, rows, primary_key)
    conn.commit()


def replace_version(conn, schema, table, columns, version, rows, primary_key):
    child = f"{table}__v{version}"
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(child))
    )
    conn.execute(
        sql.SQL("CREATE TABLE {}.{} (CHECK (_version = {})) INHERITS ({}.{})").format(
            sql.Identifier(schema),
            sql.Identifier(child),
            sql.Literal(version),
            sql.Identifier(schema),
            sql.Identifier(table),
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} ALTER _version SET DEFAULT {}").format(
            sql.Identifier(schema), sql.Identifier(child), sql.Literal(version)
        )
    )
    names = [n for n, _ in columns]
    with conn.cursor().copy(
        sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
            sql.Identifier(schema),
            sql.Identifier(child),
            sql.SQL(", ").join(map(sql.Identifier, names)),
        )
    ) as copy:
        for row in rows:
            copy.write_row(row)
    catalog.register_version(
        conn,
        schema,
        table,
        version,
        child,
        len(rows),
        [{"name": n, "type": t, "declared": t} for n, t in columns],
        primary_key,
    )
    conn.commit()


def target(dataset: str, table: str) -> MirrorTarget:
    return MirrorTarget(EMULATOR_PROJECT, dataset, table)


def bq_rows(client, target: MirrorTarget, order_by: str) -> list[dict]:
    return [
        dict(r.items())
        for r in client.query(f"SELECT * FROM {target.ref} ORDER BY {order_by}").result()
    ]
