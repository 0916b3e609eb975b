"""CDC merged tables -> BigQuery: merge mode on the emulator; native_cdc request construction."""

from __future__ import annotations

import psycopg
import pytest
from google.cloud.bigquery_storage_v1 import types as write_types

from ingest_platform.bigquery.mirror import ensure_dataset, ensure_mirror_table, mirror_changes
from ingest_platform.bigquery.native_cdc import (
    change_sequence_number,
    native_cdc_requests,
    native_cdc_table_ddl,
)
from ingest_platform.bigquery.proto import message_class
from ingest_platform.bigquery.source import read_rows, source_for_table
from ingest_platform.consistency.compare import (
    BigQuerySide,
    PostgresSide,
    compare_counts,
    compare_hashes,
)
from ingest_platform_tests.bigquery.helpers import bq_rows, target


@pytest.fixture
def conn(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cdc")
        conn.execute(
            'CREATE TABLE cdc."pm plan" (id bigint PRIMARY KEY, title text, budget numeric(12,2),'
            " is_deleted boolean NOT NULL DEFAULT false, _last_change_id bigint NOT NULL,"
            " _applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            'INSERT INTO cdc."pm plan" (id, title, budget, _last_change_id) VALUES'
            " (1, 'one', 10, 1), (2, 'two', 20, 2), (3, 'three', NULL, 3)"
        )
        yield conn


def _apply(conn, client, writer, mirror, mode="soft"):
    source = source_for_table(conn, "cdc", "pm plan")
    ensure_dataset(client, mirror.project, mirror.dataset)
    ensure_mirror_table(client, mirror, source.columns)
    return source, mirror_changes(conn, client, writer, source, mirror, delete_mode=mode)


def test_merge_mode_applies_inserts_updates_and_soft_deletes_once(
    conn, bigquery_resource, bq_dataset
):
    mirror = target(bq_dataset, "pm_plan")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        source, first = _apply(conn, client, writer, mirror)
        assert first.rows == 3 and first.watermark_before is None
        conn.execute("""UPDATE cdc."pm plan" SET title = 'TWO', _last_change_id = 4 WHERE id = 2""")
        conn.execute(
            """UPDATE cdc."pm plan" SET is_deleted = true, _last_change_id = 5 WHERE id = 3"""
        )
        conn.execute(
            """INSERT INTO cdc."pm plan" (id, title, _last_change_id) VALUES (4, 'four', 6)"""
        )
        _, second = _apply(conn, client, writer, mirror)
        assert second.rows == 3 and second.watermark_before == 3
        _, third = _apply(
            conn, client, writer, mirror
        )  # a retried run: nothing new, nothing doubled
        assert third.rows == 0
        rows = bq_rows(client, mirror, "id")
        assert [(r["id"], r["title"], r["is_deleted"], r["_last_change_id"]) for r in rows] == [
            (1, "one", False, 1),
            (2, "TWO", False, 4),
            (3, "three", True, 5),
            (4, "four", False, 6),
        ]
        pg, bq = PostgresSide(conn, source), BigQuerySide(client, mirror.ref, source)
        assert compare_hashes(pg, bq).passed
        counts = compare_counts(pg, bq, deleted="is_deleted")
        assert counts.passed and counts.totals()["bq_rows_not_deleted"] == 3
        assert not [t for t in client.list_tables(bq_dataset) if "staging" in t.table_id]


def test_merge_mode_hard_delete(conn, bigquery_resource, bq_dataset):
    mirror = target(bq_dataset, "pm_plan")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        _apply(conn, client, writer, mirror, "hard")
        conn.execute(
            """UPDATE cdc."pm plan" SET is_deleted = true, _last_change_id = 7 WHERE id = 1"""
        )
        _apply(conn, client, writer, mirror, "hard")
        assert [r["id"] for r in bq_rows(client, mirror, "id")] == [2, 3]


def test_native_cdc_builds_default_stream_upserts_and_deletes(conn):
    source = source_for_table(conn, "cdc", "pm plan")
    conn.execute(
        """UPDATE cdc."pm plan" SET is_deleted = true, _last_change_id = 255 WHERE id = 3"""
    )
    mirror = target("ds", "pm_plan")
    ddl = native_cdc_table_ddl(mirror, source, max_staleness_minutes=10)
    assert "PRIMARY KEY (`id`) NOT ENFORCED" in ddl and "max_staleness = INTERVAL 10 MINUTE" in ddl
    assert "`budget` NUMERIC" in ddl and "CLUSTER BY `id`" in ddl
    rows = [row for chunk in read_rows(conn, source) for row in chunk]
    requests = list(native_cdc_requests(mirror, source, sorted(rows), delete_mode="hard"))
    assert len(requests) == 1
    request = requests[0]
    assert request.write_stream.endswith("/tables/pm_plan/streams/_default")
    assert "offset" not in write_types.AppendRowsRequest.pb(request).ListFields().__repr__()
    descriptor = request.proto_rows.writer_schema.proto_descriptor
    assert [f.name for f in descriptor.field][-2:] == ["_CHANGE_TYPE", "_CHANGE_SEQUENCE_NUMBER"]
    Row = message_class(descriptor)
    decoded = [Row.FromString(r) for r in request.proto_rows.rows.serialized_rows]
    assert [(m.id, m._CHANGE_TYPE, m._CHANGE_SEQUENCE_NUMBER) for m in decoded] == [
        (1, "UPSERT", "1"),
        (2, "UPSERT", "2"),
        (3, "DELETE", "FF"),
    ]
    assert change_sequence_number(2**40) == "10000000000"
