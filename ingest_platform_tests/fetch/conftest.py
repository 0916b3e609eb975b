"""The source database of the fetch tests: a second database on the test server."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingest_platform.postgres.connection import ensure_database, with_database
from ingest_platform_tests.conftest import unique_name


@pytest.fixture
def source_dsn(pg_server_dsn):
    database = unique_name("fetch_src")
    ensure_database(pg_server_dsn, database)
    yield with_database(pg_server_dsn, database)
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
