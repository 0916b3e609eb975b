"""Analytical models as a component: an asset `analytics/<name>` per SQL file of a directory."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ingest_platform.defs.analytics import build_analytics_definitions
from ingest_platform.defs.components.settings import owners_field, tags_field


class AnalyticsModelsComponent(dg.Component, dg.Model, dg.Resolvable):
    """`<directory>/<name>.sql` (PostgreSQL dialect) materialized in BigQuery, each with the check
    `matches_postgres`. The platform's worked examples are in ingest_platform/demo/analytics."""

    directory: str = Field(
        default="", description="The models' directory; empty: no models (nothing is built)."
    )
    dataset_prefix: str = Field(
        default="", description="Prefix of the BigQuery datasets (as the mirror's)."
    )
    owners: list[str] = owners_field("the models' assets (a model's header may name its own)")
    tags: dict[str, str] = tags_field("the models' assets")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.directory:
            return dg.Definitions()
        directory = Path(self.directory)
        if not directory.is_dir():
            raise dg.DagsterInvalidDefinitionError(
                f"INGEST_ANALYTICS_DIR={directory} is not a directory; point it at the folder of "
                "your model .sql files (or unset it)."
            )
        return build_analytics_definitions(directory, self.dataset_prefix, self.owners, self.tags)
