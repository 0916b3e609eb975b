"""Dagster components: the platform's parts as a user configures them, one `defs.yaml` each under
`ingest_platform/defs_yaml/` (the dg project's defs folder).

`dg scaffold defs ingest_platform.defs.components.DumpDirectoryComponent <path>` creates one;
`dg check defs` validates them; `dg list defs` lists what they make. Each component calls the
builder of its glue module (defs/dumps.py, defs/cdc.py, defs/bigquery_mirror.py).
"""

from ingest_platform.local.environment import require_platform_environment

# `dg dev` and `dg launch` import this package (the registry module) in their own process before
# they start Dagster: without the platform's environment they stop here, in one line.
require_platform_environment()

from ingest_platform.defs.components.analytics import AnalyticsModelsComponent  # noqa: E402
from ingest_platform.defs.components.api import ApiRejectsComponent  # noqa: E402
from ingest_platform.defs.components.backup import BackupComponent  # noqa: E402
from ingest_platform.defs.components.bigquery_mirror import BigQueryMirrorComponent  # noqa: E402
from ingest_platform.defs.components.cdc import CdcSourceComponent  # noqa: E402
from ingest_platform.defs.components.csv_import import CsvImportDirectoryComponent  # noqa: E402
from ingest_platform.defs.components.dumps import DumpDirectoryComponent  # noqa: E402
from ingest_platform.defs.components.fetch import FetchSourcesComponent  # noqa: E402
from ingest_platform.defs.components.migration import MigrationComponent  # noqa: E402

__all__ = [
    "AnalyticsModelsComponent",
    "ApiRejectsComponent",
    "BackupComponent",
    "BigQueryMirrorComponent",
    "CdcSourceComponent",
    "CsvImportDirectoryComponent",
    "DumpDirectoryComponent",
    "FetchSourcesComponent",
    "MigrationComponent",
]
