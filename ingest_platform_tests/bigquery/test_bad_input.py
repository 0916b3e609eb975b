"""Values BigQuery cannot hold stop the run naming table, key and column, with nothing committed;
the emulator stopping mid-run fails the run cleanly and the next run has no duplicates."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from ingest_platform.bigquery.clients import (
    EmulatorEndpoints,
    emulator_bigquery_client,
    emulator_write_client,
)
from ingest_platform.bigquery.mirror import mirror_dump_version
from ingest_platform.bigquery.source import MirrorValueError
from ingest_platform.bigquery.writer import RetryPolicy
from ingest_platform.errors import ServiceUnavailableError
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.ports import free_port
from ingest_platform.postgres.connection import with_database
from ingest_platform_tests.bigquery.helpers import bq_rows, make_dump_table, replace_version, target

COLUMNS = [
    ("id", "integer"),
    ("amount", "numeric"),
    ("price", "numeric(12,2)"),
    ("at", "timestamptz"),
    ("local_at", "timestamp"),
    ("day", "date"),
    ("clock", "time"),
    ("note", "text"),
    ("tags", "integer[]"),
    ("stamps", "timestamptz[]"),
]
GOOD = [
    (1, "1.5", "2.50", "2020-01-01 00:00:00+00", "2020-01-01 00:00", "2020-01-01",
     "23:59:59.999999", "ok", [1, 2], ["2020-01-01 00:00:00+00"]),
    (2, "2", None, None, None, None, None, None, None, None),
]  # fmt: skip
ROW_FORMATS = ["arrow", "proto"]


@pytest.mark.parametrize("row_format", ROW_FORMATS)
@pytest.mark.parametrize(
    "column, value, problem",
    [
        ("amount", "1" + "0" * 40, "beyond BIGNUMERIC precision"),
        ("amount", "0." + "1" * 40, "beyond BIGNUMERIC precision"),
        ("amount", "NaN", "NaN cannot be stored in a BigQuery BIGNUMERIC"),
        ("price", "NaN", "NaN cannot be stored in a BigQuery NUMERIC"),
        ("at", "infinity", "infinite timestamp"),
        ("at", "10000-01-01 00:00:00+00", "outside BigQuery's range"),
        ("local_at", "-infinity", "infinite timestamp"),
        ("day", "0001-01-01 BC", "outside BigQuery's range"),
        ("clock", "24:00:00", "time 24:00:00 is outside BigQuery's range"),
        ("tags", [3, None], "NULL elements"),
        ("stamps", ["2020-01-01 00:00:00+00", "infinity"], "infinite timestamp"),
    ],
)
def test_value_bigquery_cannot_hold(
    pg_dsn, bigquery_resource, bq_dataset, column, value, problem, row_format
):
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(conn, "app", "t", COLUMNS, {"1": GOOD}, ["id"])
        mirror = target(bq_dataset, "t")
        with (
            bigquery_resource.get_client() as client,
            bigquery_resource.get_write_client() as writer,
        ):
            mirror_dump_version(
                conn, client, writer, "app", "t", "1", mirror, row_format=row_format
            )
            bad = {name: None for name, _ in COLUMNS} | {"id": 7, column: value}
            rows = [*GOOD[:1], *[(n, *GOOD[1][1:]) for n in range(10, 5000)]]  # a few chunks
            rows.append(tuple(bad[n] for n, _ in COLUMNS))
            replace_version(conn, "app", "t", COLUMNS, "1", rows, ["id"])
            with pytest.raises(MirrorValueError) as caught:
                mirror_dump_version(
                    conn, client, writer, "app", "t", "1", mirror, row_format=row_format
                )
            # nothing committed: the version keeps its previous rows
            assert [r["id"] for r in bq_rows(client, mirror, "id")] == [1, 2]
        # the read stopped cleanly: its cursor is closed, the connection usable
        assert conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
    message = str(caught.value)
    assert (
        "app.t" in message
        and "id=7" in message
        and f'column "{column}"' in message
        and problem in message
    )


@pytest.mark.parametrize("row_format", ROW_FORMATS)
def test_invalid_utf8_names_table_key_and_column(
    pg_server_dsn, bigquery_resource, bq_dataset, row_format
):
    database = f"test_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE "
                "template0"
            ).format(sql.Identifier(database))
        )
    try:
        with psycopg.connect(with_database(pg_server_dsn, database), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TABLE app.t (id integer PRIMARY KEY, note text, _version text)")
            conn.execute(
                "INSERT INTO app.t VALUES (1, 'fine', '1'), (2, convert_from('\\x41ff42'::bytea, "
                "'SQL_ASCII'), '1')"
            )
            from ingest_platform.postgres import version_registry as catalog

            catalog.create_registry(conn, "app")
            catalog.register_version(conn, "app", "t", "1", "t", 2, [], ["id"])
            mirror = target(bq_dataset, "t")
            with (
                bigquery_resource.get_client() as client,
                bigquery_resource.get_write_client() as writer,
            ):
                with pytest.raises(MirrorValueError) as caught:
                    mirror_dump_version(
                        conn, client, writer, "app", "t", "1", mirror, row_format=row_format
                    )
                assert list(client.query(f"SELECT COUNT(*) FROM {mirror.ref}").result())[0][0] == 0
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    message = str(caught.value)
    assert (
        "app.t" in message
        and "id=2" in message
        and 'column "note"' in message
        and "UTF-8" in message
    )


def test_emulator_stopping_mid_run_fails_cleanly_and_the_next_run_has_no_duplicates(
    pg_dsn, tmp_path
):
    rest, grpc_port = free_port(), free_port()
    data = tmp_path / "bq"
    emulator = start_emulator(rest, grpc_port, data, tmp_path / "emulator.log")
    endpoints = EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
    try:
        with psycopg.connect(pg_dsn) as conn:
            make_dump_table(
                conn,
                "app",
                "t",
                [("id", "integer"), ("pad", "text")],
                {"1": [(i, "x" * 100) for i in range(2000)]},
                ["id"],
            )
            client = emulator_bigquery_client(endpoints)
            client.create_dataset("mirror")
            mirror = target("mirror", "t")
            writer = emulator_write_client(endpoints)
            mirror_dump_version(
                conn, client, writer, "app", "t", "1", mirror
            )  # a first, complete run
            replace_version(
                conn,
                "app",
                "t",
                [("id", "integer"), ("pad", "text")],
                "1",
                [(i, "y" * 100) for i in range(2500)],
                ["id"],
            )

            def stop_after_first_request(requests):
                if requests == 1:
                    emulator.stop()

            with pytest.raises(ServiceUnavailableError) as caught:
                mirror_dump_version(
                    conn,
                    client,
                    writer,
                    "app",
                    "t",
                    "1",
                    mirror,
                    on_request=stop_after_first_request,
                    max_request_bytes=60_000,
                    retry=RetryPolicy(attempts=2, first_delay=0.1),
                )
            assert "Nothing of this run was committed" in str(caught.value)
            restarted = start_emulator(rest, grpc_port, data, tmp_path / "emulator.log")
            try:
                client = emulator_bigquery_client(endpoints)
                writer = emulator_write_client(endpoints)
                assert list(client.query(f"SELECT COUNT(*), MIN(pad) FROM {mirror.ref}").result())[
                    0
                ].values() == (2000, "x" * 100)
                result = mirror_dump_version(conn, client, writer, "app", "t", "1", mirror)
                assert result.rows == 2500
                row = list(
                    client.query(
                        f"SELECT COUNT(*), COUNT(DISTINCT id), MIN(pad) FROM {mirror.ref}"
                    ).result()
                )[0]
                assert row.values() == (2500, 2500, "y" * 100)
            finally:
                restarted.stop()
    finally:
        emulator.stop()
