"""Backups of a database as a Dagster asset: `backups/<name>`, one partition per day.

Each partition is a backup (ingest_platform/backup/) into `<root>/<name>/<YYYY-MM-DD>`;
materializing it again replaces that day's backup. After writing, the asset applies retention
(`backup/retention.py`: keep the newest `keep_daily` and the newest of each of the last
`keep_weekly` weeks) and deletes older backups itself. The check `restorable` restores the newest
backup into a scratch database on the source's server and proves it (the restore's comparison
with the backup's fingerprints), then drops the scratch database. Each backup is given the
newest earlier complete one, whose files of unchanged dump versions it reuses (hard links;
`backup/reuse.py`). The schedule runs the day's partition every night; it is off until
`schedule_on` (one switch) or the UI turns it on.
The source DSN is an environment variable (`dg.EnvVar`): metadata shows `host:port/dbname` only.
"""

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql

from ingest_platform.backup import backup, restore
from ingest_platform.backup.manifest import MANIFEST, read_manifest
from ingest_platform.backup.retention import apply_retention, backups
from ingest_platform.defs.migration import where
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.defs.schedules import default_status
from ingest_platform.errors import IngestError, first_line
from ingest_platform.postgres.connection import ensure_database, with_database

GROUP = "backups"


@dataclass(frozen=True)
class BackupSettings:
    name: str  # the asset is backups/<name>
    root: str  # backups go to <root>/<name>/<day>
    start_date: str = "2026-01-01"
    file_format: str = "parquet"
    schemas: tuple[str, ...] = ()
    keep_daily: int = 7
    keep_weekly: int = 4
    jobs: int = 2
    schedule_on: bool = False
    hour_of_day: int = 2  # the nightly run, in UTC
    owners: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


def build_backup_definitions(settings: BackupSettings, source_env: str) -> dg.Definitions:
    key = dg.AssetKey([GROUP, settings.name])
    resource_key = f"backup_source_{settings.name}"
    root = Path(settings.root) / settings.name
    partitions = dg.DailyPartitionsDefinition(start_date=settings.start_date)

    @dg.asset(
        key=key,
        group_name=GROUP,
        owners=list(settings.owners),
        tags=dict(settings.tags),
        partitions_def=partitions,
        required_resource_keys={resource_key},
        description=f"Daily {settings.file_format} backup of the database in ${source_env}.",
        kinds={"postgres", settings.file_format},
        check_specs=[dg.AssetCheckSpec("restorable", asset=key)],
    )
    def backup_asset(context: dg.AssetExecutionContext):
        dsn = getattr(context.resources, resource_key).dsn
        day = context.partition_key
        target = root / day
        if (target / MANIFEST).exists():  # materialized again: that day's backup is replaced
            shutil.rmtree(target)
        previous = _previous_backup(root, target, context)
        manifest = backup(
            dsn,
            target,
            file_format=settings.file_format,
            schemas=list(settings.schemas),
            jobs=settings.jobs,
            previous=previous,
            on_table=lambda done: context.log.info(done.line),
        )
        deleted = apply_retention(root, settings.keep_daily, settings.keep_weekly)
        for path in deleted:
            context.log.info(f"retention: deleted {path}")
        yield dg.MaterializeResult(
            metadata={
                "source": where(dsn),
                "directory": str(target),
                "dagster/row_count": sum(t["rows"] for t in manifest["tables"]),
                "tables": len(manifest["tables"]),
                "bytes": sum(f["bytes"] for f in manifest["files"].values()),
                "deleted_by_retention": [str(p) for p in deleted],
                "reused_tables": sum(1 for t in manifest["tables"] if "reused_from" in t),
                "previous_backup": str(previous) if previous else "",
            }
        )
        yield restorable(dsn, context)

    def restorable(dsn: str, context) -> dg.AssetCheckResult:
        complete = backups(root)
        if not complete:
            return dg.AssetCheckResult(
                check_name="restorable", passed=False, metadata={"reason": "no complete backup"}
            )
        newest = complete[-1][1]
        scratch = f"ingest_restore_check_{uuid.uuid4().hex[:10]}"
        ensure_database(dsn, scratch)
        try:
            result = restore(newest, with_database(dsn, scratch), jobs=settings.jobs)
        except IngestError as exc:  # a damaged backup: named, not restorable
            return dg.AssetCheckResult(
                check_name="restorable",
                passed=False,
                metadata={"backup": str(newest), "reason": first_line(exc)},
            )
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(scratch)
                    )
                )
        return dg.AssetCheckResult(
            check_name="restorable",
            passed=result.passed,
            metadata={"backup": str(newest), "result": dg.MetadataValue.md(result.text())},
        )

    def _previous_backup(root: Path, target: Path, context) -> Path | None:
        """The newest complete backup before this day's: its unchanged dump versions' files are
        reused. A damaged one is passed over (this backup then writes every table)."""
        day = target.name
        for earlier_day, path in reversed(backups(root)):
            if earlier_day.isoformat() >= day:
                continue
            try:
                read_manifest(path)
            except IngestError as exc:
                context.log.warning(f"not reusing {path}: {first_line(exc)}")
                continue
            return path
        return None

    job = dg.define_asset_job(f"backup_{settings.name}", selection=[key], partitions_def=partitions)
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=f"backup_{settings.name}_nightly",
        hour_of_day=settings.hour_of_day,
        default_status=default_status(settings.schedule_on),
    )
    return dg.Definitions(
        assets=[backup_asset],
        jobs=[job],
        schedules=[schedule],
        resources={resource_key: PostgresResource(dsn=dg.EnvVar(source_env))},
    )
