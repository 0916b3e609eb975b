"""A second PostgreSQL server for migrations: the system server at 127.0.0.1:5432 when the tests
run on the embedded one, the embedded one when they run on a server given by INGEST_TEST_PG_DSN.
The two differ in major version here (15 and 18), so migrations cross versions both ways."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest_platform.errors import ServiceUnavailableError
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.postgres.connection import connect, ensure_database, with_database
from ingest_platform_tests.conftest import unique_name

SYSTEM_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="session")
def other_server_dsn() -> Iterator[str]:
    if not os.environ.get("INGEST_TEST_PG_DSN"):
        try:
            connect(SYSTEM_DSN).close()
        except ServiceUnavailableError:
            pytest.skip("no second PostgreSQL server: nothing answers at 127.0.0.1:5432")
        yield SYSTEM_DSN
        return
    data_dir = Path(tempfile.mkdtemp(prefix="ingest_test_pg2_")) / "data"
    embedded = start_embedded_postgres(data_dir, delete_on_stop=True)
    yield embedded.dsn
    embedded.stop()
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def other_dsn(other_server_dsn) -> Iterator[str]:
    """A fresh database on the other server, dropped afterwards."""
    database = unique_name("test")
    ensure_database(other_server_dsn, database)
    yield with_database(other_server_dsn, database)
    with psycopg.connect(other_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
