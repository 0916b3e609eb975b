"""BigQuery clients for real BigQuery and for the local emulator.

The emulator speaks REST (google.cloud.bigquery.Client) and gRPC (the Storage Write API's
BigQueryWriteClient) on two loopback ports and accepts anonymous credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    endpoints: EmulatorEndpoints, project: str | None = None, location: str | None = None
):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project or EMULATOR_PROJECT,
        location=location,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoints.rest),
    )


def emulator_write_client(endpoints: EmulatorEndpoints):
    """A Storage Write API client on a plain-text gRPC channel (the emulator has no TLS)."""
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
        BigQueryWriteGrpcTransport,
    )

    channel = grpc.insecure_channel(endpoints.grpc)
    return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))
