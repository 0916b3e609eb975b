"""A demo source database beside each test's warehouse database, on the same test server."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ingest_platform.cdc.config import DEMO_TABLES, CdcConfig
from ingest_platform.demo import cdc_app
from ingest_platform.postgres.connection import ensure_database, scalar, with_database
from ingest_platform_tests.conftest import unique_name


@dataclass
class CdcEnv:
    source_dsn: str
    warehouse_dsn: str
    config: CdcConfig

    def source(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.source_dsn, autocommit=True, **kwargs)

    def warehouse(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.warehouse_dsn, autocommit=True, **kwargs)

    def table(self, name: str):
        return self.config.table(name)

    def merged(self, table: str, where: str = "true") -> dict:
        """{id: row dict} of the merged table."""
        with self.warehouse(row_factory=psycopg.rows.dict_row) as conn:
            return {
                r["id"]: r
                for r in conn.execute(
                    sql.SQL("SELECT * FROM cdc.{} WHERE " + where).format(sql.Identifier(table))
                )
            }

    def watermark(self, table: str) -> int:
        with self.warehouse() as conn:
            return scalar(
                conn, "SELECT horizon_id FROM cdc._cdc_watermark WHERE table_name = %s", (table,)
            )


@pytest.fixture
def cdc_env(pg_server_dsn, pg_dsn) -> Iterator[CdcEnv]:
    database = unique_name("cdcsrc")
    ensure_database(pg_server_dsn, database)
    source = with_database(pg_server_dsn, database)
    cdc_app.create_demo_source(source)
    cdc_app.seed(source, projects=4, rng=random.Random(7))
    yield CdcEnv(source, pg_dsn, CdcConfig(tables=DEMO_TABLES))
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
