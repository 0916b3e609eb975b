"""A CDC source as a component: its tracked tables become staging and merged assets."""

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ingest_platform.cdc.config import (
    DEFAULT_WAREHOUSE_SCHEMA,
    DEMO_TABLES,
    CdcConfig,
    CdcTable,
    ChangeLog,
    parse_cdc_config,
    validate_config,
)
from ingest_platform.defs.cdc import CdcTranslator, build_cdc_definitions
from ingest_platform.defs.components.settings import export, owners_field, tags_field
from ingest_platform.errors import ConfigError

SOURCE_DSN_VARIABLE = "INGEST_CDC_SOURCE_DSN"  # the variable the cdc_source resource reads


class TrackedTable(dg.Model):
    """One table of the source, named by its Django content type in the change log."""

    app_label: str
    model: str
    source_table: str = Field(default="", description="Default: <app_label>_<model>.")
    source_schema: str = "public"
    name: str = Field(default="", description="Merged table and asset name; default source_table.")


class ChangeLogTables(dg.Model):
    """Where django-models-logging's two tables live in the source."""

    source_schema: str = "public"
    change_table: str = "models_logging_change"
    content_type_table: str = "django_content_type"
    untracked_content_types: Literal["error", "ignore"] = "error"


class CdcSourceComponent(dg.Component, dg.Model, dg.Resolvable):
    """A source database with a change log: assets `cdc/<table>/staging` -> `cdc/<table>/merged`
    per tracked table, their checks, the job `cdc_sync` and the sensor on the change log."""

    config_file: str | None = Field(
        default=None,
        description="A CDC TOML file (cdc/config.py); when set it replaces tables and change_log.",
    )
    tables: list[TrackedTable] | None = Field(
        default=None, description="The tracked tables; default: the demo app's four."
    )
    change_log: ChangeLogTables = Field(default_factory=ChangeLogTables)
    warehouse_schema: str | None = Field(
        default=None,
        description=f"Schema of merged and staging tables (default {DEFAULT_WAREHOUSE_SCHEMA}).",
    )
    terminate_blockers_after: float | None = Field(
        default=60,
        description="Seconds a merged-table schema change waits for readers' locks before "
        "terminating them; null: wait.",
    )
    source_dsn_env: str = Field(
        default=SOURCE_DSN_VARIABLE,
        description="Environment variable with the source's DSN (unset: database cdc_demo on the "
        "warehouse server).",
    )
    sync_cron: str = Field(
        default="*/15 * * * *",
        description="Cron of the schedule `cdc_sync_schedule`, which runs the sync besides the "
        "sensor; empty: no schedule.",
    )
    sync_schedule_on: bool = Field(
        default=False, description="The switch for `cdc_sync_schedule` (or turn it on in the UI)."
    )
    owners: list[str] = owners_field("every CDC asset")
    tags: dict[str, str] = tags_field("every CDC asset")

    _config: CdcConfig | None = PrivateAttr(default=None)

    def config(self) -> CdcConfig:
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def _read_config(self) -> CdcConfig:
        if self.config_file:
            try:
                text = Path(self.config_file).read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigError(
                    f"CDC config_file {self.config_file}: cannot read it ({error.strerror})."
                ) from None
            return parse_cdc_config(text, self.config_file, self.warehouse_schema)
        log = self.change_log
        config = CdcConfig(
            tables=tuple(CdcTable(**table.model_dump()) for table in self.tables)
            if self.tables
            else DEMO_TABLES,
            warehouse_schema=self.warehouse_schema or DEFAULT_WAREHOUSE_SCHEMA,
            change_log=ChangeLog(
                schema=log.source_schema,
                change_table=log.change_table,
                content_type_table=log.content_type_table,
                untracked_content_types=log.untracked_content_types,
            ),
            terminate_blockers_after=self.terminate_blockers_after,
        )
        validate_config(config, "CDC component")
        return config

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if self.source_dsn_env != SOURCE_DSN_VARIABLE:  # the resource reads only its own name
            export(SOURCE_DSN_VARIABLE, os.environ.get(self.source_dsn_env))
        translator = CdcTranslator(owners=tuple(self.owners), tags=dict(self.tags))
        return build_cdc_definitions(
            self.config(),
            translator,
            sync_cron=self.sync_cron or None,
            sync_schedule_on=self.sync_schedule_on,
        )
