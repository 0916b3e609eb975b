"""BigQuery clients for real BigQuery and for the local emulator.

The emulator speaks REST (google.cloud.bigquery.Client) and gRPC (the Storage Write API's
BigQueryWriteClient) on two loopback ports and accepts anonymous credentials. REST clients come
with every request bounded (calls.py); write calls are bounded where the writer makes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ingest_platform.bigquery.calls import RetryPolicy, bound_rest_client

# The project id used against the emulator, which accepts any id.
EMULATOR_PROJECT = "ingest-local"


@dataclass(frozen=True)
class EmulatorEndpoints:
    rest: str  # http://127.0.0.1:9050
    grpc: str  # 127.0.0.1:9060


def emulator_endpoints_from_env(environ=os.environ) -> EmulatorEndpoints | None:
    rest = environ.get("INGEST_BQ_EMULATOR_HOST")
    if not rest:
        return None
    grpc = environ.get("INGEST_BQ_EMULATOR_GRPC_HOST", "")
    return EmulatorEndpoints(rest if "://" in rest else f"http://{rest}", grpc)


def has_credentials(environ=os.environ) -> bool:
    adc = (
        Path(environ.get("CLOUDSDK_CONFIG", Path.home() / ".config" / "gcloud"))
        / "application_default_credentials.json"
    )
    return (
        bool(environ.get("INGEST_BQ_CREDENTIALS") or environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
        or adc.exists()
    )


def emulator_bigquery_client(
    endpoints: EmulatorEndpoints,
    project: str | None = None,
    location: str | None = None,
    retry: RetryPolicy | None = None,
):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=project or EMULATOR_PROJECT,
        location=location,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoints.rest),
    )
    return bound_rest_client(client, retry)


def emulator_write_client(endpoints: EmulatorEndpoints):
    """A Storage Write API client on a plain-text gRPC channel (the emulator has no TLS)."""
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
        BigQueryWriteGrpcTransport,
    )

    channel = grpc.insecure_channel(endpoints.grpc)
    # `host` only names the endpoint (in retry logs and errors); the channel is what connects.
    transport = BigQueryWriteGrpcTransport(host=endpoints.grpc, channel=channel)
    return BigQueryWriteClient(transport=transport)
