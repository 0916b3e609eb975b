"""Mode ``native_cdc`` (real BigQuery only): BigQuery applies changes itself.

Rows go to the table's ``_default`` stream with two pseudo-columns: ``_CHANGE_TYPE`` (``UPSERT``
or ``DELETE``) and ``_CHANGE_SEQUENCE_NUMBER`` (the change id as hex, so a late, older change
never overwrites a newer one). The table needs ``PRIMARY KEY (..) NOT ENFORCED`` and
``max_staleness``; BigQuery merges in the background within that staleness. The default stream
has no offsets: at-least-once delivery, made idempotent by the key and the sequence number.

The local emulator implements neither the pseudo-columns nor primary-key upserts, so the tests
check the DDL and the requests built here; they are not sent anywhere locally.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from google.cloud.bigquery_storage_v1 import types as write_types

from ingest_platform.bigquery.mirror import IS_DELETED, LAST_CHANGE_ID, MirrorTarget
from ingest_platform.bigquery.proto import CHANGE_SEQUENCE_FIELD, CHANGE_TYPE_FIELD
from ingest_platform.bigquery.source import MirrorSource, ProtoRowEncoder
from ingest_platform.bigquery.types import quote_bq_column
from ingest_platform.bigquery.writer import MAX_REQUEST_BYTES


def native_cdc_table_ddl(
    target: MirrorTarget, source: MirrorSource, *, max_staleness_minutes: int = 15
) -> str:
    """CREATE TABLE with the primary key (NOT ENFORCED), clustered by it, with max_staleness."""
    if not source.key:
        raise ValueError(f"{source.label}: native_cdc needs a primary key.")
    columns = ", ".join(
        f"{quote_bq_column(c.bq_name)} {'ARRAY<' + c.bq_type + '>' if c.repeated else c.bq_type}"
        for c in source.columns
    )
    key = ", ".join(quote_bq_column(source.column(k).bq_name) for k in source.key)
    return (
        f"CREATE TABLE IF NOT EXISTS {target.ref} ({columns}, PRIMARY KEY ({key}) NOT ENFORCED) "
        f"CLUSTER BY {key} OPTIONS (max_staleness = INTERVAL {int(max_staleness_minutes)} MINUTE)"
    )


def change_sequence_number(change_id: int) -> str:
    """BigQuery's _CHANGE_SEQUENCE_NUMBER: up to 16 hex digits (per section), larger = newer."""
    if change_id < 0:
        raise ValueError("change ids must not be negative")
    return format(change_id, "X")


def native_cdc_requests(
    target: MirrorTarget,
    source: MirrorSource,
    rows: Iterable[tuple],
    *,
    delete_mode: str = "soft",
    change_column: str = LAST_CHANGE_ID,
    deleted_column: str = IS_DELETED,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[write_types.AppendRowsRequest]:
    """AppendRowsRequests for the default stream: each row an UPSERT, or a DELETE for a
    soft-deleted row with ``delete_mode="hard"``. Rows are as ``source.read_rows`` yields them."""
    encoder = ProtoRowEncoder(source, cdc_pseudo_columns=True)
    names = [c.name for c in source.columns]
    change_at = names.index(change_column)
    deleted_at = names.index(deleted_column) if deleted_column in names else None
    stream = f"{target.path}/streams/_default"
    batch: list[bytes] = []
    size, first = 0, True
    for row in rows:
        deleted = deleted_at is not None and bool(row[deleted_at]) and delete_mode == "hard"
        data = encoder.encode(
            row,
            {
                CHANGE_TYPE_FIELD: "DELETE" if deleted else "UPSERT",
                CHANGE_SEQUENCE_FIELD: change_sequence_number(row[change_at] or 0),
            },
        )
        if batch and size + len(data) + 64 * 1024 > max_request_bytes:
            yield _request(stream, encoder, batch, first)
            batch, size, first = [], 0, False
        batch.append(data)
        size += len(data) + 6
    if batch:
        yield _request(stream, encoder, batch, first)


def _request(
    stream: str, encoder: ProtoRowEncoder, rows: list[bytes], with_schema: bool
) -> write_types.AppendRowsRequest:
    data = write_types.AppendRowsRequest.ProtoData(rows=write_types.ProtoRows(serialized_rows=rows))
    if with_schema:
        data.writer_schema = write_types.ProtoSchema(proto_descriptor=encoder.descriptor)
    return write_types.AppendRowsRequest(
        write_stream=stream, proto_rows=data
    )  # default stream: no offset
