"""Direct fetch sources as a component: an asset per source table (defs/fetch.py)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ingest_platform.defs.components.settings import owners_field, tags_field
from ingest_platform.defs.fetch import build_fetch_definitions


class FetchSourcesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Tables pulled straight from PostgreSQL and MySQL/MariaDB databases (`ingest-platform
    fetch`): each source of `config_file` is one multi-asset whose tables are the assets
    `dumps/<app>/<table>`, with jobs `fetch_<source>_job` and `fetch_<source>_incremental_job`.
    Without `config_file` it builds nothing."""

    config_file: str = Field(
        default="", description="The sources' TOML (e.g. INGEST_FETCH_CONFIG); empty: no assets."
    )
    owners: list[str] = owners_field("every fetched table's asset")
    tags: dict[str, str] = tags_field("every fetched table's asset")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.config_file:
            return dg.Definitions()
        return build_fetch_definitions(
            Path(self.config_file).resolve(), tuple(self.owners), dict(self.tags)
        )
