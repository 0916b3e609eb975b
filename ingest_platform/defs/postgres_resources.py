"""The PostgreSQL resources: `postgres` (DSN -> psycopg connections) and the dump loader's
`dump_copy_io_manager`, configured from the environment.

Apart from resources.py (BigQuery, which imports dagster-gcp and the Google clients: over a second
of imports) so that what loads only dumps, `ingest-platform ingest`, does not import them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from pydantic import Field

from ingest_platform.defs.etl_run import EtlRunScoped
from ingest_platform.io_managers.multiprocess_copy import MultiprocessCopyIOManager
from ingest_platform.postgres.connection import connect


class PostgresResource(EtlRunScoped, dg.ConfigurableResource):
    """A PostgreSQL server, by DSN. Give the DSN as `EnvVar("INGEST_PG_DSN")` so it stays out of
    the UI."""

    dsn: str = Field(description="libpq connection string or postgresql:// URL.")

    @contextmanager
    def get_connection(self, **kwargs) -> Iterator[psycopg.Connection]:
        """A psycopg connection; committed on success, rolled back on error, then closed."""
        with connect(self.dsn, **kwargs) as conn:
            yield conn


def postgres_resources_from_env(environ=os.environ) -> dict:
    """The resources the dump jobs need, from the environment `ingest-platform dev` exports."""
    return {
        "postgres": PostgresResource(dsn=dg.EnvVar("INGEST_PG_DSN")),
        "dump_copy_io_manager": MultiprocessCopyIOManager(
            dsn=dg.EnvVar("INGEST_PG_DSN"), processes=int(environ.get("INGEST_LOAD_PROCESSES") or 2)
        ),
    }
