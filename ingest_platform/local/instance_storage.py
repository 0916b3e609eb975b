"""Dagster's PostgreSQL storage (dagster-postgres) that keeps its connections open.

dagster-postgres opens a new connection for every statement (SQLAlchemy's NullPool), except in the
webserver, which calls `optimize_for_webserver`: a pool of one connection per storage, more while
busy, recycled hourly. A run writes every event that way: one 3-table dump's run wrote 60 events
through 174 new connections, each a new server process. This storage (dagster.yaml `storage:
custom:`) applies the webserver's pooling in every process that opens the instance: the CLI, each
run worker, the daemon and the code server. It is the same PostgresRunStorage,
PostgresEventLogStorage and PostgresScheduleStorage, only their engines keep a connection.

What it costs: each of those processes holds up to three idle connections while it lives (the
webserver already did); a `dagster dev` session with a run in flight held 11 instead of 1. The
switch also sets a statement timeout on each connection: 0, none, as these processes had unless
the server sets a default; the webserver still sets its own 15 s.

Processes that open a new (empty) storage at the same moment, such as two `ingest-platform
ingest` commands and Celery workers started together, would each create Dagster's tables, and
dagster-postgres retries only a duplicate table, not the duplicate type PostgreSQL reports for a
table created concurrently ("type snapshots already exists"). Opening the storage therefore holds
an advisory lock of this database: one process creates or migrates the tables, the others then
find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# dagster-webserver's defaults (--db-pool-recycle, --db-pool-max-overflow).
POOL_RECYCLE_SECONDS = 3600
POOL_MAX_OVERFLOW = 20

# pg_advisory_lock's key while a process opens (and maybe creates) the storage: any number that
# nothing else on the database locks.
STORAGE_SETUP_LOCK = 0x1D6E57_DA65


def psycopg2_url(url: str) -> str:
    """dagster-postgres needs the psycopg2 driver: SQLAlchemy 2.1 picks psycopg 3 for a plain
    postgresql:// URL, whose connections dagster-postgres's statement-timeout hook closes (`with
    conn:` closes a psycopg 3 connection) and on which its NOTIFY statements fail. A URL from
    `ingest-platform dev` or one a user sets for a worker works alike."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else url


class PooledPostgresStorage(DagsterPostgresStorage):
    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ):
        url = psycopg2_url(postgres_url)
        engine = create_pg_engine(url, token_provider, poolclass=sqlalchemy.NullPool)
        try:
            with engine.connect() as setup:
                # A session lock, held until released: the tables are created on other connections.
                setup.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({STORAGE_SETUP_LOCK})"))
                try:
                    super().__init__(url, should_autocreate_tables, inst_data, token_provider)
                finally:
                    setup.execute(
                        sqlalchemy.text(f"SELECT pg_advisory_unlock({STORAGE_SETUP_LOCK})")
                    )
        finally:
            engine.dispose()
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            # dagster-postgres's one switch to a pooled engine.
            storage.optimize_for_webserver(
                statement_timeout=0,
                pool_recycle=POOL_RECYCLE_SECONDS,
                max_overflow=POOL_MAX_OVERFLOW,
            )

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        # The inherited one builds a DagsterPostgresStorage by name, not `cls`.
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
