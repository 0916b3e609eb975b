"""A CSV import directory as a component: one asset per table directory, a sensor imports files."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ingest_platform.defs.components.settings import owners_field, tags_field
from ingest_platform.defs.csv_import import build_csv_import_definitions
from ingest_platform.migration.csv_directory import ImportTable, import_tables


class CsvImportDirectoryComponent(dg.Component, dg.Model, dg.Resolvable):
    """Historical CSV files imported with foreign-key validation (`import-csv`): files dropped in
    `<directory>/<schema>.<table>/` are imported by `csv_import_directory_sensor`; each table is
    the asset `csv_import/<schema>/<table>` (a partition per file, check `no_rejects`) with
    `csv_import/<schema>/<table>_rejects`. Without `directory` it builds nothing."""

    directory: str = Field(
        default="",
        description="The watched directory (e.g. INGEST_CSV_IMPORT_DIR); empty: no assets.",
    )
    owners: list[str] = owners_field("every CSV import asset")
    tags: dict[str, str] = tags_field("every CSV import asset")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.directory:
            return dg.Definitions()
        return build_csv_import_definitions(
            Path(self.directory).resolve(), tuple(self.owners), dict(self.tags)
        )

    def import_tables(self) -> list[ImportTable]:
        """The tables it imports into (the BigQuery mirror component mirrors them whole)."""
        return import_tables(Path(self.directory).resolve()) if self.directory else []
