"""Backups restore into a fresh database on the same server (`target_dsn`) and on the other
server of another major version (`other_dsn`, from the migration tests)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ingest_platform.postgres.connection import ensure_database, with_database
from ingest_platform_tests.conftest import unique_name
from ingest_platform_tests.migration.conftest import other_dsn, other_server_dsn  # noqa: F401


@pytest.fixture
def target_dsn(pg_server_dsn) -> Iterator[str]:
    database = unique_name("restore")
    ensure_database(pg_server_dsn, database)
    yield with_database(pg_server_dsn, database)
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
