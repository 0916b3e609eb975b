"""Real services for the tests: a PostgreSQL server and a BigQuery emulator per session.

PostgreSQL is the embedded server unless INGEST_TEST_PG_DSN names an existing one (for example
host=127.0.0.1 port=5432 user=postgres dbname=postgres). Each test gets its own database and
its own BigQuery dataset, so tests cannot see each other.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest_platform.bigquery.clients import EMULATOR_PROJECT, EmulatorEndpoints, emulator_bigquery_client
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.local.ports import free_port
from ingest_platform.postgres.connection import connect, ensure_database, with_database

PROJECT_DIR = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items):
    # `pytest -m postgres` re-runs exactly the tests that talk to PostgreSQL (CI does, against 5432).
    for item in items:
        if "pg_server_dsn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory) -> str:
    """DSN of the server's maintenance database."""
    dsn = os.environ.get("INGEST_TEST_PG_DSN")
    if dsn:
        connect(dsn).close()
        yield dsn
        return
    embedded = start_embedded_postgres(tmp_path_factory.mktemp("postgres") / "data", delete_on_stop=True)
    yield embedded.dsn
    embedded.stop()


@pytest.fixture
def pg_dsn(pg_server_dsn) -> str:
    """A fresh database for this test, dropped afterwards."""
    database = unique_name("test")
    ensure_database(pg_server_dsn, database)
    yield with_database(pg_server_dsn, database)
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory) -> EmulatorEndpoints:
    log = tmp_path_factory.mktemp("bigquery") / "emulator.log"
    emulator = start_emulator(free_port(), free_port(), None, log)
    yield EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
    emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator) -> str:
    """A fresh dataset in the emulator's project, deleted afterwards."""
    dataset = unique_name("test")
    client = emulator_bigquery_client(bq_emulator)
    client.create_dataset(dataset)
    yield dataset
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.close()


@pytest.fixture
def bigquery_resource(bq_emulator):
    from ingest_platform.defs.resources import BigQueryResource

    return BigQueryResource(project=EMULATOR_PROJECT, emulator_rest_endpoint=bq_emulator.rest,
                            emulator_grpc_endpoint=bq_emulator.grpc)
