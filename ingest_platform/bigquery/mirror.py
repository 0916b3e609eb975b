"""Mirror a PostgreSQL source into a BigQuery table, exactly once.

Two ways to apply rows, both on top of ``PendingStreamWriter`` (pending streams, offsets, one
batch commit per run). Rows go as Arrow record batches (``row_format="arrow"``, the default) or
as protobuf rows (``"proto"``: for a project whose Storage Write API takes no Arrow rows):

``mirror_slice`` (dump versions)
    The source is one slice of the table (``_version = V``). Rows are appended to pending streams
    of the mirror table and finalized; then one DML ``DELETE .. WHERE _version = V`` removes the
    slice's previous rows, and the batch commit makes the new rows visible. A run that fails
    before the DELETE changes nothing; one that fails between the DELETE and the commit leaves the
    slice empty (never doubled) until the next run. Reloading a version replaces its rows.

``mirror_changes`` (CDC merged tables, mode ``merge``)
    Rows changed since the mirror's high-water mark (``max(_last_change_id)`` in BigQuery, so
    no state outside the two tables) are written to a fresh staging table through pending
    streams, then one ``MERGE`` applies them by key: newer rows update, new keys insert;
    soft-deleted rows arrive as ``is_deleted = true``, or with ``delete_mode="hard"`` are
    deleted. MERGE is idempotent by key, so a retried run never duplicates rows. The staging
    table expires after a day even if the run dies before dropping it. With ``full=True`` (a
    resync) every row is staged and the MERGE also deletes what the source no longer has
    (``WHEN NOT MATCHED BY SOURCE``): one statement, so readers see the old table or the new.
    With ``stamp_column`` (a CDC change history's ``_mirrored_at``, NULL in PostgreSQL) the MERGE
    writes BigQuery's ``CURRENT_TIMESTAMP()`` there when it first inserts a row and keeps it
    afterwards: the time the row reached BigQuery, for the lag of a change (source -> BigQuery).

``native_cdc`` (real BigQuery only) lives in ``native_cdc``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import psycopg

from ingest_platform.bigquery.arrow_rows import ArrowBatchEncoder
from ingest_platform.bigquery.source import MirrorSource, ProtoRowEncoder, read_ahead, read_rows
from ingest_platform.bigquery.types import MirrorColumn, quote_bq, quote_bq_column
from ingest_platform.bigquery.writer import DEFAULT_RETRY, PendingStreamWriter, RetryPolicy
from ingest_platform.errors import SchemaError, ServiceUnavailableError
from ingest_platform.postgres import etl_log

DELETE_MODES = ("soft", "hard")
IS_DELETED = "is_deleted"
LAST_CHANGE_ID = "_last_change_id"
STAGING_EXPIRATION = dt.timedelta(days=1)
ROW_FORMATS = ("arrow", "proto")
DEFAULT_ROW_FORMAT = "arrow"


@dataclass(frozen=True)
class MirrorTarget:
    project: str
    dataset: str
    table: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"

    @property
    def ref(self) -> str:
        """Quoted for SQL: `project.dataset.table`."""
        return quote_bq(self.project, self.dataset, self.table)

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


@dataclass(frozen=True)
class MirrorResult:
    target: str
    rows: int
    bytes: int
    requests: int
    streams: int
    seconds: float
    row_format: str = DEFAULT_ROW_FORMAT
    deleted_rows: int | None = None  # slice rows replaced (mirror_slice)
    merged_rows: int | None = None  # rows the MERGE touched (mirror_changes)
    watermark_before: int | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict:
        data = {
            "target": self.target,
            "rows": self.rows,
            "bytes": self.bytes,
            "requests": self.requests,
            "streams": self.streams,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "row_format": self.row_format,
        }
        for name in ("deleted_rows", "merged_rows", "watermark_before"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data


# ----------------------------------------------------------------------------- tables


def supports_bignumeric(client) -> bool:
    """False for the local emulator (DuckDB decimals stop at 38 digits), True for real BigQuery."""
    base = getattr(getattr(client, "_connection", None), "API_BASE_URL", "") or ""
    return "googleapis.com" in base


def bq_schema(columns: list[MirrorColumn] | tuple[MirrorColumn, ...]):
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(
            c.bq_name,
            c.bq_type,
            mode=c.mode,
            description=f"PostgreSQL {c.name}: {c.pg_type}"[:1024],
        )
        for c in columns
    ]


def ensure_dataset(client, project: str, dataset: str, location: str | None = None) -> None:
    from google.cloud import bigquery

    ds = bigquery.Dataset(f"{project}.{dataset}")
    if location:
        ds.location = location
    client.create_dataset(ds, exists_ok=True)


def ensure_mirror_table(
    client, target: MirrorTarget, columns, *, description: str = ""
) -> list[str]:
    """Create the mirror table, or add the source's new columns to it. Returns the changes.
    A column whose BigQuery type changed is a SchemaError (BigQuery cannot change it in place)."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    wanted = bq_schema(columns)
    try:
        table = client.get_table(target.table_id)
    except NotFound:
        table = bigquery.Table(target.table_id, schema=wanted)
        table.description = description[:16384]
        client.create_table(table, exists_ok=True)
        return [f"created {target.table_id}"]
    existing = {f.name.lower(): f for f in table.schema}
    added, changes = [], []
    for field in wanted:
        have = existing.get(field.name.lower())
        if have is None:
            added.append(field)
            changes.append(f"added column {field.name} {field.field_type}")
        elif (
            _canonical_bq_type(have.field_type) != _canonical_bq_type(field.field_type)
            or have.mode != field.mode
        ):
            raise SchemaError(
                f"Mirror table {target.table_id}: column {field.name} is {have.mode} "
                f"{have.field_type} in BigQuery "
                f"but the source now maps to {field.mode} {field.field_type}. BigQuery cannot "
                f"change a column's "
                "type in place: drop the mirror table (it is rebuilt from PostgreSQL) or exclude "
                "the column."
            )
    if added:
        table.schema = list(table.schema) + added
        client.update_table(table, ["schema"])
    return changes


def _canonical_bq_type(name: str) -> str:
    return {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(
        name.upper(), name.upper()
    )


def _query(client, statement: str, params: list | None = None):
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=params or [])
    job = client.query(statement, job_config=config)
    job.result()
    return job


def _scalar_param(name: str, value):
    from google.cloud import bigquery

    kind = "INT64" if isinstance(value, int) and not isinstance(value, bool) else "STRING"
    return bigquery.ScalarQueryParameter(name, kind, value)


# ----------------------------------------------------------------------------- writing


def row_encoder(source: MirrorSource, row_format: str = DEFAULT_ROW_FORMAT):
    """The encoder of `row_format`: Arrow record batches or protobuf rows."""
    if row_format == "arrow":
        return ArrowBatchEncoder(source)
    if row_format == "proto":
        return ProtoRowEncoder(source)
    raise ValueError(f"row_format must be one of {ROW_FORMATS}, not {row_format!r}")


def write_source(
    conn: psycopg.Connection,
    source: MirrorSource,
    writer: PendingStreamWriter,
    encoder: ProtoRowEncoder | ArrowBatchEncoder | None = None,
    chunk_rows: int = 5000,
) -> int:
    """Read the source and hand its rows to the writer (the next chunk is read while this one is
    encoded); then send what is left. The caller commits."""
    encoder = encoder or row_encoder(source, "proto" if writer.proto else "arrow")
    arrow = isinstance(encoder, ArrowBatchEncoder)
    rows = 0
    with closing(read_ahead(read_rows(conn, source, chunk_rows, arrow=arrow))) as chunks:
        for chunk in chunks:
            if isinstance(encoder, ArrowBatchEncoder):
                writer.append_batch(encoder.encode(chunk))
            else:
                for row in chunk:
                    writer.append(encoder.encode(row))
            rows += len(chunk)
    writer.flush()
    return rows


def mirror_slice(
    conn: psycopg.Connection,
    bq_client,
    write_client,
    source: MirrorSource,
    target: MirrorTarget,
    *,
    slice_column: str | None,
    slice_value,
    retry: RetryPolicy = DEFAULT_RETRY,
    chunk_rows: int = 5000,
    max_request_bytes: int | None = None,
    on_request: Callable[[int], None] | None = None,
    row_format: str = DEFAULT_ROW_FORMAT,
) -> MirrorResult:
    """Replace the rows of one slice (``slice_column = slice_value``) of the mirror table with the
    source's rows of that slice (the source must carry the same filter); with `slice_column`
    None, replace all its rows (a table mirrored whole)."""
    started = time.perf_counter()
    encoder = row_encoder(source, row_format)
    deleted = {}

    def delete_previous():
        if slice_column is None:
            job = _query(bq_client, f"DELETE FROM {target.ref} WHERE TRUE")
        else:
            bq_column = source.column(slice_column).bq_name
            job = _query(
                bq_client,
                f"DELETE FROM {target.ref} WHERE {quote_bq_column(bq_column)} = @slice",
                [_scalar_param("slice", slice_value)],
            )
        deleted["rows"] = job.num_dml_affected_rows

    with PendingStreamWriter(
        write_client,
        target.path,
        encoder.writer_schema,
        retry=retry,
        on_request=on_request,
        **({"max_request_bytes": max_request_bytes} if max_request_bytes else {}),
    ) as writer:
        write_source(conn, source, writer, encoder, chunk_rows)
        writer.commit(before_commit=delete_previous)
    version = None if slice_value is None else str(slice_value)
    _log_commit(conn, source, target, writer.stats.rows, version)
    return _result(target, writer, started, deleted_rows=deleted.get("rows"))


def mirror_changes(
    conn: psycopg.Connection,
    bq_client,
    write_client,
    source: MirrorSource,
    target: MirrorTarget,
    *,
    delete_mode: str = "soft",
    change_column: str = LAST_CHANGE_ID,
    deleted_column: str = IS_DELETED,
    retry: RetryPolicy = DEFAULT_RETRY,
    chunk_rows: int = 5000,
    full: bool = False,
    row_format: str = DEFAULT_ROW_FORMAT,
    on_request: Callable[[int], None] | None = None,
    stamp_column: str | None = None,
) -> MirrorResult:
    """Apply the source's rows changed since the mirror's high-water mark with one MERGE;
    `full`: all rows, and delete the mirror's rows the source lacks (repairs any drift)."""
    if delete_mode not in DELETE_MODES:
        raise ValueError(f"delete_mode must be one of {DELETE_MODES}, not {delete_mode!r}")
    if not source.key:
        raise SchemaError(f"{source.label}: merge mode needs a key (primary key) to MERGE on.")
    names = {c.name for c in source.columns}
    stamp = (stamp_column,) if stamp_column else ()
    for needed in (change_column, *stamp) + ((deleted_column,) if delete_mode == "hard" else ()):
        if needed not in names:
            raise SchemaError(
                f'{source.label}: column "{needed}" is missing; mirror a CDC merged table or '
                "change history that has it, or name another column."
            )
    started = time.perf_counter()
    change_bq = source.column(change_column).bq_name
    row = list(
        _query(bq_client, f"SELECT MAX({quote_bq_column(change_bq)}) FROM {target.ref}").result()
    )
    watermark = row[0][0] if row and row[0][0] is not None and not full else None
    changed = source.with_filters(
        *source.filters, *(((change_column, ">", watermark),) if watermark is not None else ())
    )

    staging = MirrorTarget(
        target.project, target.dataset, f"{target.table}__staging_{secrets.token_hex(4)}"
    )
    from google.cloud import bigquery

    table = bigquery.Table(staging.table_id, schema=bq_schema(source.columns))
    table.expires = dt.datetime.now(dt.UTC) + STAGING_EXPIRATION
    bq_client.create_table(table)
    try:
        encoder = row_encoder(changed, row_format)
        with PendingStreamWriter(
            write_client, staging.path, encoder.writer_schema, retry=retry, on_request=on_request
        ) as writer:
            write_source(conn, changed, writer, encoder, chunk_rows)
            writer.commit()
        merged = None
        if writer.stats.rows or full:
            job = _query(
                bq_client,
                merge_statement(
                    target,
                    staging,
                    source.columns,
                    [source.column(k).bq_name for k in source.key],
                    change_bq,
                    source.column(deleted_column).bq_name if deleted_column in names else None,
                    delete_mode,
                    full,
                    source.column(stamp_column).bq_name if stamp_column else None,
                ),
            )
            merged = job.num_dml_affected_rows
    except ServiceUnavailableError:
        # BigQuery does not answer: dropping the staging table would wait out the deadline a
        # second time. It expires by itself (STAGING_EXPIRATION).
        raise
    except BaseException:
        bq_client.delete_table(staging.table_id, not_found_ok=True)
        raise
    bq_client.delete_table(staging.table_id, not_found_ok=True)
    _log_commit(conn, source, target, merged or 0, None if watermark is None else str(watermark))
    return _result(target, writer, started, merged_rows=merged, watermark_before=watermark)


def _log_commit(conn, source: MirrorSource, target: MirrorTarget, rows: int, version) -> None:
    """The ETL log's row of a mirror run, once BigQuery committed it: a transaction of its own
    (BigQuery's commit cannot share PostgreSQL's; the row records a change already made)."""
    with conn.transaction():
        etl_log.record(
            conn, kind="bigquery_mirror", table=target.table_id, rows=rows, version=version,
            detail={"source": source.label},
        )  # fmt: skip


def merge_statement(
    target: MirrorTarget,
    staging: MirrorTarget,
    columns,
    key: list[str],
    change_column: str,
    deleted_column: str | None,
    delete_mode: str,
    full: bool = False,
    stamp_column: str | None = None,
) -> str:
    """One MERGE: newer rows update (or, hard mode, deleted rows delete), new keys insert;
    `full`: every staged row updates, and rows the staging table lacks are deleted;
    `stamp_column`: the time the row was first inserted (kept by updates)."""
    q = quote_bq_column
    names = [c.bq_name for c in columns]
    on = " AND ".join(f"T.{q(k)} = S.{q(k)}" for k in key)
    newer = (
        "TRUE"
        if full
        else f"(T.{q(change_column)} IS NULL OR S.{q(change_column)} >= T.{q(change_column)})"
    )
    now = "CURRENT_TIMESTAMP()"
    update = ", ".join(
        f"{q(n)} = COALESCE(T.{q(n)}, {now})" if n == stamp_column else f"{q(n)} = S.{q(n)}"
        for n in names
        if n not in key
    )
    insert = (
        f"INSERT ({', '.join(q(n) for n in names)})"
        f" VALUES ({', '.join(now if n == stamp_column else 'S.' + q(n) for n in names)})"
    )
    clauses = []
    if delete_mode == "hard" and deleted_column:
        clauses.append(f"WHEN MATCHED AND S.{q(deleted_column)} THEN DELETE")
    if update:
        clauses.append(f"WHEN MATCHED AND {newer} THEN UPDATE SET {update}")
    if delete_mode == "hard" and deleted_column:
        clauses.append(
            f"WHEN NOT MATCHED AND NOT COALESCE(S.{q(deleted_column)}, FALSE) THEN {insert}"
        )
    else:
        clauses.append(f"WHEN NOT MATCHED THEN {insert}")
    if full:
        clauses.append("WHEN NOT MATCHED BY SOURCE THEN DELETE")
    return f"MERGE {target.ref} T USING {staging.ref} S ON {on} " + " ".join(clauses)


# ----------------------------------------------------------------------------- dump parents

VERSION_COLUMN = "_version"


def dump_key(conn: psycopg.Connection, schema: str, table: str) -> tuple[str, ...]:
    """(_version, primary key...) from the newest registered version that declares one;
    () if none."""
    from psycopg import sql

    from ingest_platform.postgres.catalog import relation_exists
    from ingest_platform.postgres.version_registry import REGISTRY_TABLE

    if not relation_exists(conn, schema, REGISTRY_TABLE):
        return ()
    row = conn.execute(
        sql.SQL(
            "SELECT primary_key FROM {}.{} WHERE table_name = {} AND "
            "jsonb_array_length(primary_key) > 0"
            " ORDER BY loaded_at DESC LIMIT 1"
        ).format(sql.Identifier(schema), sql.Identifier(REGISTRY_TABLE), sql.Literal(table)),
    ).fetchone()
    return (VERSION_COLUMN, *row[0]) if row else ()


def dump_source(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    version: str | None = None,
    *,
    fill_nulls: bool = False,
    bignumeric: bool = True,
) -> MirrorSource:
    """The parent table `schema.table` (every version, or one with `version`), keyed by
    (_version, primary key); without a registered primary key the checks key rows by their hash."""
    from ingest_platform.bigquery.source import source_for_table

    source = source_for_table(
        conn,
        schema,
        table,
        key=dump_key(conn, schema, table),
        fill_nulls=fill_nulls,
        bignumeric=bignumeric,
    )
    return source.with_filters((VERSION_COLUMN, "=", version)) if version is not None else source


def mirror_dump_version(
    conn: psycopg.Connection,
    bq_client,
    write_client,
    schema: str,
    table: str,
    version: str,
    target: MirrorTarget,
    *,
    fill_nulls: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_request: Callable[[int], None] | None = None,
    max_request_bytes: int | None = None,
    location: str | None = None,
    bignumeric: bool | None = None,
    row_format: str = DEFAULT_ROW_FORMAT,
) -> MirrorResult:
    """Mirror one dump version: the mirror table follows the parent's columns, the version's rows
    are replaced atomically from a reader's point of view except between DELETE and commit."""
    if bignumeric is None:
        bignumeric = supports_bignumeric(bq_client)
    source = dump_source(conn, schema, table, version, fill_nulls=fill_nulls, bignumeric=bignumeric)
    ensure_dataset(bq_client, target.project, target.dataset, location)
    ensure_mirror_table(
        bq_client,
        target,
        source.columns,
        description=f"Mirror of PostgreSQL {schema}.{table} (every dump version; _version = "
        f"version).",
    )
    return mirror_slice(
        conn,
        bq_client,
        write_client,
        source,
        target,
        slice_column=VERSION_COLUMN,
        slice_value=version,
        retry=retry,
        on_request=on_request,
        max_request_bytes=max_request_bytes,
        row_format=row_format,
    )


def _result(
    target: MirrorTarget, writer: PendingStreamWriter, started: float, **counts
) -> MirrorResult:
    """The writer's totals since `started`, plus what the caller counted."""
    stats = writer.stats
    return MirrorResult(
        target.table_id,
        stats.rows,
        stats.bytes,
        stats.requests,
        stats.streams,
        time.perf_counter() - started,
        "proto" if writer.proto else "arrow",
        **counts,
    )
