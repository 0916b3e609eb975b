"""The platform's one Definitions object."""

import dagster as dg

from ingest_platform.defs.resources import resources_from_env

defs = dg.Definitions(resources=resources_from_env())
