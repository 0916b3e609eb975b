"""Dagster's standard table metadata, the one place that builds it for every materialization.

`dagster/row_count`, `dagster/column_schema` (types, nullability, primary key),
`dagster/table_name`, `dagster/uri` (never credentials) and, on BigQuery mirrors,
`dagster/column_lineage` back to the PostgreSQL table. The catalog shows columns and row counts
from these keys; numbers stay numbers so Dagster plots them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import quote

import dagster as dg
import psycopg

from ingest_platform.bigquery.types import MirrorColumn
from ingest_platform.postgres import catalog
from ingest_platform.postgres.connection import parse_dsn


def pg_uri(dsn: str, schema: str, table: str) -> str:
    """`postgresql://host[:port]/db/schema.table`: where the table is, without user or password."""
    params = parse_dsn(dsn)
    host = str(params.get("host") or "localhost")
    if host.startswith("/"):  # a Unix-socket directory: percent-encoded, as libpq's URIs take it
        host = quote(host, safe="")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{host}{port}/{params.get('dbname') or ''}/{schema}.{table}"


def bq_uri(project: str, dataset: str, table: str) -> str:
    return f"bigquery://{project}/{dataset}.{table}"


def pg_column_schema(conn: psycopg.Connection, schema: str, table: str) -> dg.TableSchema | None:
    """The table's columns as the catalog has them; None when there is no such table."""
    oid = catalog.relation_oid(conn, schema, table)
    if oid is None:
        return None
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name, c.type, constraints=dg.TableColumnConstraints(nullable=not c.not_null)
            )
            for c in catalog.columns(conn, oid)
        ],
        constraints=_key_constraint(catalog.primary_key(conn, oid)),
    )


def pg_staged_column_schema(
    conn: psycopg.Connection, schema: str, parent: str, load_table: str
) -> dg.TableSchema | None:
    """The parent's columns as the attach of a staged load will make them: the parent's (if it
    exists yet), with the load table's columns added or widened (a load table has the target
    types, ``versioned_tables``)."""
    load_oid = catalog.relation_oid(conn, schema, load_table)
    if load_oid is None:
        return pg_column_schema(conn, schema, parent)
    parent_oid = catalog.relation_oid(conn, schema, parent)
    merged = {c.name: c for c in catalog.columns(conn, parent_oid)} if parent_oid else {}
    merged.update((c.name, replace(c, not_null=False)) for c in catalog.columns(conn, load_oid))
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name, c.type, constraints=dg.TableColumnConstraints(nullable=not c.not_null)
            )
            for c in merged.values()
        ],
        constraints=_key_constraint(catalog.primary_key(conn, parent_oid) if parent_oid else ()),
    )


def bq_column_schema(columns: Iterable[MirrorColumn], key: Iterable[str] = ()) -> dg.TableSchema:
    by_pg = {c.name: c.bq_name for c in columns}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.bq_name, c.bq_type + (" REPEATED" if c.repeated else ""))
            for c in columns
        ],
        constraints=_key_constraint(tuple(by_pg.get(k, k) for k in key)),
    )


def _key_constraint(key: tuple[str, ...]) -> dg.TableConstraints | None:
    return dg.TableConstraints(other=[f"PRIMARY KEY ({', '.join(key)})"]) if key else None


def pg_table_metadata(
    conn: psycopg.Connection, dsn: str, schema: str, table: str, row_count: int | None
) -> dict:
    """Standard metadata of a PostgreSQL table (`row_count` None: not counted here)."""
    metadata: dict = {
        "dagster/table_name": f"{schema}.{table}",
        "dagster/uri": dg.MetadataValue.url(pg_uri(dsn, schema, table)),
    }
    column_schema = pg_column_schema(conn, schema, table)
    if column_schema is not None:
        metadata["dagster/column_schema"] = column_schema
    if row_count is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(row_count)
    return metadata


def bq_table_metadata(
    project: str,
    dataset: str,
    table: str,
    columns: Iterable[MirrorColumn],
    key: Iterable[str],
    upstream: dg.AssetKey,
    row_count: int | None,
) -> dict:
    """Standard metadata of a BigQuery mirror, with each column's lineage to its PostgreSQL column
    in the asset `upstream`."""
    columns = list(columns)
    metadata: dict = {
        "dagster/table_name": f"{project}.{dataset}.{table}",
        "dagster/uri": dg.MetadataValue.url(bq_uri(project, dataset, table)),
        "dagster/column_schema": bq_column_schema(columns, key),
        "dagster/column_lineage": dg.TableColumnLineage(
            deps_by_column={
                c.bq_name: [dg.TableColumnDep(asset_key=upstream, column_name=c.name)]
                for c in columns
            }
        ),
    }
    if row_count is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(row_count)
    return metadata


def pg_row_count(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(
        psycopg.sql.SQL("SELECT count(*) FROM {}").format(catalog.qualified(schema, table))
    ).fetchone()
    return int(row[0]) if row else 0
