"""The platform's one Definitions object."""

import dagster as dg

from ingest_platform.defs.cdc import build_cdc_definitions
from ingest_platform.defs.dumps import build_dump_definitions
from ingest_platform.defs.resources import resources_from_env
from ingest_platform.dumps.catalog import dump_dir, scan_dump_dir

defs = dg.Definitions.merge(
    build_dump_definitions(scan_dump_dir(dump_dir())),
    build_cdc_definitions(),
    dg.Definitions(resources=resources_from_env()),
)
