"""Dagster resources: PostgreSQL (postgres_resources.py) and BigQuery (real or emulator)."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Literal

import dagster as dg
import dagster_gcp
from dagster_gcp.bigquery.utils import setup_gcp_creds
from google.auth.exceptions import DefaultCredentialsError
from pydantic import Field

from ingest_platform.bigquery.calls import bound_rest_client
from ingest_platform.bigquery.clients import (
    EMULATOR_PROJECT,
    EmulatorEndpoints,
    emulator_bigquery_client,
    emulator_endpoints_from_env,
    emulator_write_client,
)
from ingest_platform.defs.postgres_resources import PostgresResource, postgres_resources_from_env
from ingest_platform.errors import ConfigError

__all__ = ["BigQueryResource", "PostgresResource", "resources_from_env"]


class BigQueryResource(dagster_gcp.BigQueryResource):
    """dagster-gcp's BigQueryResource plus the local emulator and a Storage Write API client.

    With `emulator_rest_endpoint` set, clients talk to the emulator with anonymous credentials;
    otherwise `project`, `location` and `gcp_credentials` work exactly as in dagster-gcp.
    """

    emulator_rest_endpoint: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:9050"
    )
    emulator_grpc_endpoint: str | None = Field(default=None, description="e.g. 127.0.0.1:9060")
    row_format: Literal["arrow", "proto"] = Field(
        default="arrow",
        description="How mirrors send rows to the Storage Write API: Arrow record batches, or "
        "protobuf rows for a project whose Storage Write API takes no Arrow rows.",
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    @property
    def _emulator(self) -> EmulatorEndpoints | None:
        if not self.emulator_rest_endpoint:
            return None
        return EmulatorEndpoints(self.emulator_rest_endpoint, self.emulator_grpc_endpoint or "")

    @contextmanager
    def get_client(self):
        if self._emulator:
            client = emulator_bigquery_client(self._emulator, self.project, self.location)
            try:
                yield client
            finally:
                client.close()
        else:
            with _credentials_named(), super().get_client() as client:
                yield bound_rest_client(client)

    @contextmanager
    def get_write_client(self):
        """A `BigQueryWriteClient` for the Storage Write API."""
        if self._emulator:
            yield emulator_write_client(self._emulator)
            return
        from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

        with _credentials_named():
            if self.gcp_credentials:
                with setup_gcp_creds(self.gcp_credentials):
                    yield BigQueryWriteClient()
            else:
                yield BigQueryWriteClient()


@contextmanager
def _credentials_named():
    """Google's missing-credentials error as one line saying what to set, and where (a Celery
    worker started without the project's environment is the usual case)."""
    try:
        yield
    except DefaultCredentialsError:
        raise ConfigError(
            f"BigQuery: no Google credentials on host {socket.gethostname()}: set "
            "GOOGLE_APPLICATION_CREDENTIALS and INGEST_BQ_PROJECT, or INGEST_BQ_EMULATOR_HOST "
            "for the local emulator (a worker needs the launcher's environment: README "
            "'Scale-out')."
        ) from None


def _row_format(environ) -> Literal["arrow", "proto"]:
    value = environ.get("INGEST_BQ_ROW_FORMAT") or "arrow"
    if value == "arrow":
        return "arrow"
    if value == "proto":
        return "proto"
    raise ConfigError(f"INGEST_BQ_ROW_FORMAT is {value!r}; set it to arrow or proto.")


def resources_from_env(environ=os.environ) -> dict:
    """Resources configured from the environment that `ingest-platform dev` exports (see README)."""
    emulator = emulator_endpoints_from_env(environ)
    bigquery = BigQueryResource(
        project=environ.get("INGEST_BQ_PROJECT") or (EMULATOR_PROJECT if emulator else None),
        location=environ.get("INGEST_BQ_LOCATION") or None,
        gcp_credentials=dg.EnvVar("INGEST_BQ_CREDENTIALS")
        if environ.get("INGEST_BQ_CREDENTIALS")
        else None,
        emulator_rest_endpoint=emulator.rest if emulator else None,
        emulator_grpc_endpoint=emulator.grpc if emulator else None,
        row_format=_row_format(environ),
    )
    return {**postgres_resources_from_env(environ), "bigquery": bigquery}
