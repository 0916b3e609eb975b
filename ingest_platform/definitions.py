"""The platform's one Definitions object."""

import dagster as dg

from ingest_platform.cdc.config import cdc_config_from_env
from ingest_platform.defs.bigquery_mirror import build_mirror_definitions
from ingest_platform.defs.cdc import build_cdc_definitions
from ingest_platform.defs.dumps import build_dump_definitions
from ingest_platform.defs.resources import resources_from_env
from ingest_platform.dumps.directory import dump_dir, scan_dump_dir
from ingest_platform.local.environment import require_platform_environment

require_platform_environment()

catalog = scan_dump_dir(dump_dir())
cdc_config = cdc_config_from_env()

defs = dg.Definitions.merge(
    build_dump_definitions(catalog),
    build_cdc_definitions(cdc_config),
    build_mirror_definitions(
        catalog, cdc_tables=cdc_config.tables, cdc_schema=cdc_config.warehouse_schema
    ),
    dg.Definitions(resources=resources_from_env()),
)
