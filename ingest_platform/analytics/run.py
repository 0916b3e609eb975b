"""Running a model: its table (or view) in BigQuery, and the proof that PostgreSQL agrees.

Materializing is one `CREATE OR REPLACE TABLE ... AS SELECT` job: BigQuery swaps the table only
when the query succeeds, so a model whose run fails keeps its previous table. The proof runs the
model's own SQL on PostgreSQL into a temporary table and compares it with the BigQuery table
through the comparison engine (bucket hashes, differing keys named), keyed by the model's grain.
Columns the header calls `unproved` are left out of the comparison (for example a time only
BigQuery knows). Floats (and PostgreSQL's unscaled numerics, which BigQuery computes as FLOAT64:
avg, division) are compared rounded to the model's `float_decimals`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest_platform.analytics.models import Model, ModelError
from ingest_platform.bigquery.source import MirrorSource
from ingest_platform.bigquery.types import bq_name, quote_bq, quote_bq_column
from ingest_platform.consistency.compare import (
    BigQuerySide,
    Comparison,
    PostgresSide,
    compare_hashes,
    postgres_table,
)
from ingest_platform.postgres import catalog

MODELS_DATASET = "analytics"
# Types compared as rounded floats: BigQuery's answer for them is FLOAT64.
APPROXIMATE_TYPES = {"double precision", "real", "numeric"}


@dataclass(frozen=True)
class ModelRun:
    table_id: str
    rows: int
    bytes_processed: int
    seconds: float
    bigquery_sql: str


def check_sources(conn: psycopg.Connection, client, model: Model, dataset_prefix: str) -> None:
    """Every table the model reads exists in PostgreSQL and has a BigQuery mirror."""
    from google.api_core.exceptions import NotFound

    for (schema, table), line in zip(model.tables, model.table_lines, strict=True):
        if not catalog.relation_exists(conn, schema, table):
            raise ModelError(
                f"{model.where(line)}: table {schema}.{table} is not in the warehouse; "
                "fix the name or load the table first."
            )
        mirror = f"{client.project}.{dataset_prefix}{schema}.{table}"
        try:
            client.get_table(mirror)
        except NotFound:
            raise ModelError(
                f"{model.where(line)}: {schema}.{table} has no BigQuery mirror ({mirror}); "
                "materialize its mirror first."
            ) from None


def materialize(client, model: Model, dataset_prefix: str = "") -> ModelRun:
    """Replace the model's BigQuery table (or view) with the model's answer."""
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import bigquery

    started = time.perf_counter()
    statement = model.bigquery_sql(client.project, dataset_prefix)
    dataset = f"{client.project}.{dataset_prefix}{MODELS_DATASET}"
    table_id = f"{dataset}.{model.name}"
    ref = quote_bq(*table_id.split("."))
    kind = "VIEW" if model.materialized == "view" else "TABLE"
    try:
        client.create_dataset(bigquery.Dataset(dataset), exists_ok=True)
        job = client.query(f"CREATE OR REPLACE {kind} {ref} AS {statement}")
        job.result()
        rows = next(iter(client.query(f"SELECT COUNT(*) FROM {ref}").result()))[0]
    except GoogleAPIError as error:
        message = getattr(error, "message", None) or str(error)
        raise ModelError(
            f"{model.where()}: BigQuery refused the model ({message.splitlines()[0]}); "
            f"the previous {kind.lower()} {table_id} is unchanged."
        ) from None
    return ModelRun(
        table_id,
        int(rows),
        int(job.total_bytes_processed or 0),
        time.perf_counter() - started,
        statement,
    )


def prove(conn: psycopg.Connection, client, model: Model, table_id: str) -> Comparison:
    """Compare PostgreSQL's answer to the model with BigQuery's table (see the module)."""
    answer, compared = f"_model_{model.name}", f"_model_{model.name}_compared"
    query = model.postgres_sql.strip().rstrip(";")
    for name in (answer, compared):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))
    try:
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} AS {}").format(sql.Identifier(answer), sql.SQL(query))
        )
    except psycopg.Error as error:
        raise ModelError(
            f"{model.where()}: PostgreSQL refused the model ({error.diag.message_primary})."
        ) from None
    schema = conn.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
    temp_schema = schema.fetchone()[0]  # type: ignore[index]
    columns = postgres_table(conn, temp_schema, answer).columns
    names = [c.name for c in columns]
    for what, wanted in (("grain", model.grain), ("unproved", model.unproved)):
        missing = [g for g in wanted if g not in names]
        if missing:
            raise ModelError(
                f"{model.where()}: {what} column(s) {', '.join(missing)} are not in the result "
                f"({', '.join(names)}); fix the header's {what}."
            )
    names = [n for n in names if n not in model.unproved or n in model.grain]
    columns = tuple(c for c in columns if c.name in names)
    decimals = model.float_decimals
    approximate = {
        c.name for c in columns if catalog.parsed_type(c.pg_type).name in APPROXIMATE_TYPES
    }
    pg_columns = sql.SQL(", ").join(
        sql.SQL("round({}::numeric, {})::float8 AS {}").format(
            sql.Identifier(n), sql.Literal(decimals), sql.Identifier(n)
        )
        if n in approximate
        else sql.Identifier(n)
        for n in names
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {}").format(
            sql.Identifier(compared), pg_columns, sql.Identifier(answer)
        )
    )
    source = postgres_table(conn, temp_schema, compared, key=model.grain)
    bq_columns = ", ".join(
        f"ROUND(CAST({quote_bq_column(bq_name(n))} AS FLOAT64), {decimals})"
        f" AS {quote_bq_column(bq_name(n))}"
        if n in approximate
        else quote_bq_column(bq_name(n))
        for n in names
    )
    bq_source = f"(SELECT {bq_columns} FROM {quote_bq(*table_id.split('.'))})"
    left = PostgresSide(conn, source)
    right = BigQuerySide(
        client, bq_source, MirrorSource(MODELS_DATASET, model.name, source.columns, source.key)
    )
    return compare_hashes(left, right, what=f"analytics/{model.name}")
