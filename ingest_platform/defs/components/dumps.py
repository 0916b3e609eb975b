"""A dump directory as a component: its applications' tables become assets, its sensor loads new
dumps."""

from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from ingest_platform.defs.components.settings import export, owners_field, tags_field
from ingest_platform.defs.dumps import DumpTranslator, build_dump_definitions
from ingest_platform.dumps.directory import DumpCatalog, scan_dump_dir


class DumpDirectoryComponent(dg.Component, dg.Model, dg.Resolvable):
    """Versioned dumps of applications: one asset `dumps/<app>/<table>` per table found in the
    directory (partitioned by version) and the sensor `dump_directory_sensor` that loads each new
    dump. A dump with a table the definitions do not know yet makes the sensor reload the code
    location (defs/reload.py)."""

    directory: str = Field(
        default="dumps",
        description="The watched directory (relative: to the working directory).",
    )
    dialect: str | None = Field(
        default=None,
        description="Dialect of dumps whose manifest names none: mssql, mysql, csv, or a .toml.",
    )
    schema_prefix: str = Field(
        default="", description="PostgreSQL schema of an application = prefix + app name."
    )
    load_processes: int = Field(default=2, description="COPY worker processes per table (>= 1).")
    owners: list[str] = owners_field("every dump table")
    tags: dict[str, str] = tags_field("every dump table (each also gets `ingest/dialect`)")

    _catalog: DumpCatalog | None = PrivateAttr(default=None)

    def catalog(self) -> DumpCatalog:
        """The directory's dumps, read once per load (the mirror component mirrors the same)."""
        if self._catalog is None:
            self.export_settings()
            self._catalog = scan_dump_dir(Path(self.directory).resolve())
        return self._catalog

    def export_settings(self) -> None:
        export("INGEST_DUMP_DIR", str(Path(self.directory).resolve()))
        export("INGEST_DUMP_DIALECT", self.dialect or None)
        export("INGEST_DUMP_SCHEMA_PREFIX", self.schema_prefix)
        export("INGEST_LOAD_PROCESSES", self.load_processes)

    def translator(self) -> DumpTranslator:
        catalog = self.catalog()
        return DumpTranslator(
            owners=tuple(self.owners),
            tags=dict(self.tags),
            dialects=DumpTranslator.dialects_of(catalog),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_dump_definitions(self.catalog(), self.translator())
