"""BigQuery mirrors as a component: of the dump tables and CDC merged tables of other components."""

import dagster as dg
from pydantic import Field

from ingest_platform.defs.bigquery_mirror import MirrorTranslator, build_mirror_definitions
from ingest_platform.defs.components.cdc import CdcSourceComponent
from ingest_platform.defs.components.csv_import import CsvImportDirectoryComponent
from ingest_platform.defs.components.dumps import DumpDirectoryComponent
from ingest_platform.defs.components.settings import export, owners_field, tags_field
from ingest_platform.dumps.directory import DumpCatalog
from ingest_platform.errors import ConfigError


class BigQueryMirrorComponent(dg.Component, dg.Model, dg.Resolvable):
    """A BigQuery mirror of each PostgreSQL asset of the named sources, with checks that prove
    both sides agree, and the sensor that mirrors each new version or merge."""

    dataset_prefix: str = Field(
        default="", description="BigQuery dataset of a mirror = prefix + app name (or `cdc`)."
    )
    sources: list[str] = Field(
        default_factory=lambda: ["dumps", "cdc", "csv_import"],
        description="Paths (in the defs folder) of the dump-directory, CSV-import and CDC "
        "components to mirror.",
    )
    reverify_schedules_on: bool = Field(
        default=False,
        description="The switch for the nightly re-verify schedules (or turn them on in the UI).",
    )
    owners: list[str] = owners_field("every mirror")
    tags: dict[str, str] = tags_field("every mirror")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        export("INGEST_BQ_DATASET_PREFIX", self.dataset_prefix)
        catalog, cdc, csv_tables = DumpCatalog(), None, []
        for path in self.sources:
            source = context.load_component(path)
            if isinstance(source, DumpDirectoryComponent):
                catalog.dumps += source.catalog().dumps
            elif isinstance(source, CdcSourceComponent) and cdc is None:
                cdc = source.config()
            elif isinstance(source, CsvImportDirectoryComponent):
                csv_tables += source.import_tables()
            else:
                raise ConfigError(
                    f"Mirror source {path!r} is a {type(source).__name__}: name dump "
                    "directory, CSV import or CDC components (at most one CDC source)."
                )
        translator = MirrorTranslator(owners=tuple(self.owners), tags=dict(self.tags))
        return build_mirror_definitions(
            catalog,
            translator,
            cdc_tables=cdc.tables if cdc else (),
            cdc_schema=cdc.warehouse_schema if cdc else "cdc",
            # Both CDC kinds write change histories (the logical kind since its merges record
            # every decoded change).
            cdc_histories=cdc is not None,
            csv_tables=csv_tables,
            reverify_schedules_on=self.reverify_schedules_on,
        )
