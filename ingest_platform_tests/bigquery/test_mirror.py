"""The dump mirror against the emulator: every type, NULLs, version replace, retried runs."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg
import pytest

from ingest_platform.bigquery.mirror import mirror_dump_version
from ingest_platform_tests.bigquery.helpers import bq_rows, make_dump_table, replace_version, target

COLUMNS = [
    ("id", "bigint"),
    ("small", "smallint"),
    ("amount", "numeric(12,2)"),
    ("big", "numeric"),
    ("price", "money"),
    ("ratio", "double precision"),
    ("flag", "boolean"),
    ("label", "varchar(20)"),
    ("code", "char(4)"),
    ("blob", "bytea"),
    ("day", "date"),
    ("at", "timestamptz"),
    ("local_at", "timestamp(3)"),
    ("clock", "time"),
    ("doc", "jsonb"),
    ("uid", "uuid"),
    ("tags", "text[]"),
    ("scores", "integer[]"),
    ("Odd Name", "text"),
]
ROW_1 = (
    1,
    7,
    Decimal("12.50"),
    Decimal("123456789012345678901234567890.123456789"),
    "$1,234.56",
    0.1,
    True,
    "Zürich",
    "ab",
    b"\x00\xff",
    dt.date(2024, 2, 29),
    dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC),
    dt.datetime(2001, 2, 3, 4, 5, 6, 789000),
    dt.time(12, 34, 56, 789000),
    json.dumps({"a": [1, 2]}),
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ["x", "y"],
    [3, 1, 2],
    "odd",
)
ROW_2 = (2,) + (None,) * (len(COLUMNS) - 1)


@pytest.fixture
def conn(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        yield conn


@pytest.mark.parametrize("row_format", ["arrow", "proto"])
def test_every_type_round_trips_and_null_stays_null(
    conn, bigquery_resource, bq_dataset, row_format
):
    make_dump_table(conn, "shop", "item", COLUMNS, {"1.0": [ROW_1, ROW_2]}, ["id"])
    mirror = target(bq_dataset, "item")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        result = mirror_dump_version(
            conn, client, writer, "shop", "item", "1.0", mirror, row_format=row_format
        )
        assert result.rows == 2 and result.requests == 1 and result.bytes > 0
        assert result.metadata()["row_format"] == row_format
        rows = bq_rows(client, mirror, "id")
        schema = {f.name: (f.field_type, f.mode) for f in client.get_table(mirror.table_id).schema}
    assert (
        schema["amount"] == ("NUMERIC", "NULLABLE") and schema["big"][0] == "STRING"
    )  # BIGNUMERIC on real BigQuery
    assert (
        schema["at"][0] == "TIMESTAMP"
        and schema["local_at"][0] == "DATETIME"
        and schema["tags"] == ("STRING", "REPEATED")
    )
    assert schema["Odd_Name"][0] == "STRING"
    one, two = rows
    assert one["id"] == 1 and one["small"] == 7 and one["amount"] == Decimal("12.50")
    assert one["big"] == "123456789012345678901234567890.123456789"
    assert one["price"] == Decimal("1234.56") and one["ratio"] == 0.1 and one["flag"] is True
    assert one["label"] == "Zürich" and one["code"] == "ab" and one["blob"] == b"\x00\xff"
    assert one["day"] == dt.date(2024, 2, 29)
    assert one["at"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)
    assert one["local_at"] == dt.datetime(2001, 2, 3, 4, 5, 6, 789000)
    assert one["clock"] == dt.time(12, 34, 56, 789000)
    assert (
        json.loads(one["doc"]) == {"a": [1, 2]}
        if isinstance(one["doc"], str)
        else one["doc"] == {"a": [1, 2]}
    )
    assert (
        one["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        and one["tags"] == ["x", "y"]
        and one["scores"] == [3, 1, 2]
    )
    assert one["Odd_Name"] == "odd" and one["_version"] == "1.0"
    assert two["id"] == 2 and two["_version"] == "1.0"
    assert all(two[k] is None for k in two if k not in ("id", "_version", "tags", "scores"))
    assert two["tags"] == [] and two["scores"] == []  # BigQuery arrays are never NULL


def test_reloading_a_version_replaces_only_its_rows_and_reruns_do_not_duplicate(
    conn, bigquery_resource, bq_dataset
):
    columns = [("id", "integer"), ("name", "text")]
    make_dump_table(
        conn,
        "app",
        "t",
        columns,
        {"1.0": [(1, "a"), (2, "b")], "2.0": [(1, "A"), (3, "C")]},
        ["id"],
    )
    mirror = target(bq_dataset, "t")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror_dump_version(conn, client, writer, "app", "t", "1.0", mirror)
        mirror_dump_version(conn, client, writer, "app", "t", "2.0", mirror)
        mirror_dump_version(conn, client, writer, "app", "t", "2.0", mirror)  # a retried run
        assert [
            (r["_version"], r["id"], r["name"]) for r in bq_rows(client, mirror, "_version, id")
        ] == [("1.0", 1, "a"), ("1.0", 2, "b"), ("2.0", 1, "A"), ("2.0", 3, "C")]
        replace_version(conn, "app", "t", columns, "1.0", [(9, "z")], ["id"])
        result = mirror_dump_version(conn, client, writer, "app", "t", "1.0", mirror)
        assert result.deleted_rows == 2 and result.rows == 1
        assert [(r["_version"], r["id"]) for r in bq_rows(client, mirror, "_version, id")] == [
            ("1.0", 9),
            ("2.0", 1),
            ("2.0", 3),
        ]


def test_requests_stay_under_the_size_limit_and_streams_rotate(conn, bigquery_resource, bq_dataset):
    from ingest_platform.bigquery.mirror import dump_source
    from ingest_platform.bigquery.source import ProtoRowEncoder
    from ingest_platform.bigquery.writer import PendingStreamWriter

    make_dump_table(
        conn,
        "app",
        "w",
        [("id", "integer"), ("pad", "text")],
        {"1": [(i, "x" * 200) for i in range(3000)]},
        ["id"],
    )
    mirror = target(bq_dataset, "w")
    with (
        bigquery_resource.get_client() as client,
        bigquery_resource.get_write_client() as write_client,
    ):
        from ingest_platform.bigquery.mirror import ensure_mirror_table, write_source

        source = dump_source(conn, "app", "w", "1")
        ensure_mirror_table(client, mirror, source.columns)
        encoder = ProtoRowEncoder(source)
        writer = PendingStreamWriter(
            write_client,
            mirror.path,
            encoder.descriptor,
            max_request_bytes=100_000,
            rows_per_stream=1000,
            parallel_streams=1,  # one stream at a time: each fills up before the next
        )
        write_source(conn, source, writer, encoder, chunk_rows=700)
        writer.commit()
        assert (
            writer.stats.rows == 3000 and writer.stats.streams == 3 and writer.stats.requests >= 7
        )
        assert writer.stats.bytes / writer.stats.requests < 100_000
        assert list(
            client.query(f"SELECT COUNT(*) c, COUNT(DISTINCT id) d FROM {mirror.ref}").result()
        )[0].values() == (3000, 3000)


@pytest.mark.parametrize("row_format", ["arrow", "proto"])
def test_fill_nulls_option(conn, bigquery_resource, bq_dataset, row_format):
    columns = [
        ("id", "integer"),
        ("n", "integer"),
        ("s", "text"),
        ("at", "timestamptz"),
        ("local_at", "timestamp"),
        ("clock", "time"),
        ("day", "date"),
        ("amount", "numeric(10,2)"),
        ("doc", "jsonb"),
        ("tags", "text[]"),
    ]
    make_dump_table(conn, "app", "f", columns, {"1": [(1,) + (None,) * 9]}, ["id"])
    mirror = target(bq_dataset, "f")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror_dump_version(
            conn, client, writer, "app", "f", "1", mirror, fill_nulls=True, row_format=row_format
        )
        row = bq_rows(client, mirror, "id")[0]
    assert (row["n"], row["s"], row["at"], row["local_at"], row["clock"], row["day"]) == (
        0,
        "",
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1970, 1, 1),
        dt.time(0, 0),
        dt.date(1970, 1, 1),
    )
    # JSON gets the JSON literal null, which the client reads as None
    assert row["amount"] == 0 and row["doc"] is None and row["tags"] == []


def test_parallel_streams_take_turns_rotate_when_full_and_commit_every_row_once(
    conn, bigquery_resource, bq_dataset
):
    from ingest_platform.bigquery.arrow_rows import ArrowBatchEncoder
    from ingest_platform.bigquery.mirror import dump_source, ensure_mirror_table, write_source
    from ingest_platform.bigquery.writer import PendingStreamWriter

    make_dump_table(
        conn,
        "app",
        "p",
        [("id", "integer"), ("pad", "text")],
        {"1": [(i, "x" * 200) for i in range(3000)]},
        ["id"],
    )
    mirror = target(bq_dataset, "p")
    committed = []
    with (
        bigquery_resource.get_client() as client,
        bigquery_resource.get_write_client() as write_client,
    ):
        source = dump_source(conn, "app", "p", "1")
        ensure_mirror_table(client, mirror, source.columns)
        encoder = ArrowBatchEncoder(source)
        with PendingStreamWriter(
            write_client,
            mirror.path,
            encoder.schema,
            max_request_bytes=30_000,
            rows_per_stream=500,
            parallel_streams=3,
            in_flight=3,
        ) as writer:
            write_source(conn, source, writer, encoder, chunk_rows=400)
            writer.commit(
                before_commit=lambda: committed.append([s.offset for s in writer.streams])
            )
        (offsets,) = committed
        # 3000 rows of ~210 bytes: requests of < 30 kB, streams of at most 500 rows, 3 at a time
        assert writer.stats.rows == 3000 and writer.stats.requests >= 22
        assert writer.stats.bytes / writer.stats.requests < 30_000
        assert len(offsets) == writer.stats.streams >= 6 and sum(offsets) == 3000
        assert max(offsets) <= 500
        assert list(
            client.query(f"SELECT COUNT(*) c, COUNT(DISTINCT id) d FROM {mirror.ref}").result()
        )[0].values() == (3000, 3000)


def test_char_and_quoted_enum_columns_mirror_as_string_and_check_clean(
    conn, bigquery_resource, bq_dataset
):
    """`"char"` (the one-byte type) and an enum whose name needs quoting are types
    parse_pg_type declines: they mirror as STRING and the consistency checks agree."""
    from ingest_platform.bigquery.mirror import dump_source
    from ingest_platform.consistency.compare import (
        BigQuerySide,
        PostgresSide,
        compare_counts,
        compare_hashes,
    )

    conn.execute("""CREATE TYPE public."Mood Type" AS ENUM ('ok', 'not ok')""")
    columns = [("id", "integer"), ("flag", '"char"'), ("mood", 'public."Mood Type"')]
    rows = [(1, "a", "ok"), (2, None, "not ok"), (3, "z", None)]
    make_dump_table(conn, "app", "odd_types", columns, {"1": rows}, ["id"])
    mirror = target(bq_dataset, "odd_types")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        result = mirror_dump_version(conn, client, writer, "app", "odd_types", "1", mirror)
        assert result.rows == 3
        schema = {f.name: f.field_type for f in client.get_table(mirror.table_id).schema}
        assert schema["flag"] == "STRING" and schema["mood"] == "STRING"
        assert [(r["id"], r["flag"], r["mood"]) for r in bq_rows(client, mirror, "id")] == rows
        source = dump_source(conn, "app", "odd_types", "1", bignumeric=False)
        pg, bq = PostgresSide(conn, source), BigQuerySide(client, mirror.ref, source)
        assert compare_counts(pg, bq).passed
        clean = compare_hashes(pg, bq)
        assert clean.passed, clean.markdown()
        client.query(f"UPDATE {mirror.ref} SET mood = 'bad' WHERE id = 1").result()
        broken = compare_hashes(pg, bq)
    assert [(d.key["id"], d.detail) for d in broken.differences] == [("1", "columns: mood")]
