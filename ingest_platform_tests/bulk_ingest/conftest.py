"""Fixtures of the bulk-ingest tests: a SQLAlchemy engine (psycopg 3) on the test's fresh
database."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from ingest_platform.postgres.connection import scalar, to_url


def engine_for(dsn: str) -> sa.Engine:
    return sa.create_engine(
        to_url(dsn).replace("+psycopg2://", "+psycopg://"), poolclass=sa.pool.NullPool
    )


@pytest.fixture
def engine(pg_dsn):
    engine = engine_for(pg_dsn)
    yield engine
    engine.dispose()


@pytest.fixture
def pg(pg_dsn):
    """A psycopg connection (autocommit) for looking at what ingest() did."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def rows_of(pg: psycopg.Connection, table: str, order: str = "1") -> list[tuple]:
    return pg.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def stored_watermark(pg: psycopg.Connection, schema: str = "public"):
    from ingest_platform.bulk_ingest import watermarks

    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("_ingest_watermarks"))
    if scalar(pg, "SELECT to_regclass(%s)", (table.as_string(pg),)) is None:
        return None
    rows = pg.execute(sql.SQL("SELECT key, watermark FROM {}").format(table)).fetchall()
    return {key: watermarks.decode(value) for key, value in rows}
