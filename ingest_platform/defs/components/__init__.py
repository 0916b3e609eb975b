"""Dagster components: the platform's parts as a user configures them, one `defs.yaml` each under
`ingest_platform/defs_yaml/` (the dg project's defs folder).

`dg scaffold defs ingest_platform.defs.components.DumpDirectoryComponent <path>` creates one;
`dg check defs` validates them; `dg list defs` lists what they make. Each component calls the
builder of its glue module (defs/dumps.py, defs/cdc.py, defs/bigquery_mirror.py).
"""

from ingest_platform.defs.components.bigquery_mirror import BigQueryMirrorComponent
from ingest_platform.defs.components.cdc import CdcSourceComponent
from ingest_platform.defs.components.dumps import DumpDirectoryComponent

__all__ = ["BigQueryMirrorComponent", "CdcSourceComponent", "DumpDirectoryComponent"]
