"""Scheduled backups as a component: one daily-partitioned asset per backed-up database."""

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from ingest_platform.defs.backup import BackupSettings, build_backup_definitions
from ingest_platform.defs.components.settings import owners_field, tags_field
from ingest_platform.errors import ConfigError


class BackedUpDatabase(dg.Model):
    """One database backed up every night: the asset `backups/<name>`."""

    name: str = Field(description="Asset name and the backups' subdirectory.")
    source_dsn_env: str = Field(
        description="Environment variable with the database's DSN (read at run time)."
    )
    schemas: list[str] = Field(default_factory=list, description="Empty: every user schema.")


class BackupComponent(dg.Component, dg.Model, dg.Resolvable):
    """Nightly Parquet or Avro backups (`ingest-platform backup`) as assets `backups/<name>`,
    partitioned by day, each with the check `restorable` (the newest backup restored into a
    scratch database and compared) and a schedule that is off until `schedule_on` is true."""

    directory: str = Field(
        default="",
        description="Backups go to <directory>/<name>/<day>; empty: INGEST_BACKUP_DIR, else "
        "<INGEST_STATE_DIR>/backups.",
    )
    databases: list[BackedUpDatabase] = Field(default_factory=list)
    file_format: Literal["parquet", "avro"] = "parquet"
    keep_daily: int = Field(default=7, description="Newest daily backups kept.")
    keep_weekly: int = Field(default=4, description="Weeks before those that keep one backup.")
    schedule_on: bool = Field(
        default=False, description="The one switch: run the nightly schedules (or turn on in UI)."
    )
    hour_of_day: int = Field(default=2, description="Hour (UTC) of the nightly run.")
    start_date: str = Field(default="2026-01-01", description="The first daily partition.")
    jobs: int = Field(default=2, description="Tables read (and restored by the check) at once.")
    owners: list[str] = owners_field("every backup asset")
    tags: dict[str, str] = tags_field("every backup asset")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        names = [d.name for d in self.databases]
        if len(set(names)) != len(names):
            raise ConfigError(f"Backup component: database names must differ (got {names}).")
        if self.keep_daily < 1:
            raise ConfigError(
                f"Backup component: keep_daily is {self.keep_daily}; keep at least 1 backup."
            )
        root = self.root()
        return dg.Definitions.merge(
            *(
                build_backup_definitions(
                    BackupSettings(
                        name=database.name,
                        root=str(root),
                        start_date=self.start_date,
                        file_format=self.file_format,
                        schemas=tuple(database.schemas),
                        keep_daily=self.keep_daily,
                        keep_weekly=self.keep_weekly,
                        jobs=self.jobs,
                        schedule_on=self.schedule_on,
                        hour_of_day=self.hour_of_day,
                        owners=tuple(self.owners),
                        tags=dict(self.tags),
                    ),
                    database.source_dsn_env,
                )
                for database in self.databases
            )
        )

    def root(self) -> Path:
        # Resolved once, when the definitions load: Dagster's processes run from DAGSTER_HOME, so
        # a relative directory would otherwise follow them there.
        if self.directory:
            return Path(self.directory).resolve()
        if os.environ.get("INGEST_BACKUP_DIR"):
            return Path(os.environ["INGEST_BACKUP_DIR"]).resolve()
        from ingest_platform.local.services import state_dir

        return state_dir() / "backups"
