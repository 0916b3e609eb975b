"""Dagster glue for CDC: per tracked table, the external source table and change log
(`cdc_source/...`) -> `cdc/<table>__staging` -> `cdc/<table>` (merged), three asset checks on the
merged table, the job `cdc_sync` and the sensor `cdc_change_log_sensor`.

The pipeline itself is `ingest_platform.cdc` (pure Python); this module maps it to assets. The
warehouse is the `postgres` resource (INGEST_PG_DSN), the source the `cdc_source` resource
(INGEST_CDC_SOURCE_DSN, default database `cdc_demo` on the warehouse server).
"""

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg
from pydantic import Field

from ingest_platform.cdc import checks
from ingest_platform.cdc.config import (
    CdcConfig,
    CdcTable,
    ChangeLog,
    LogicalSource,
    cdc_config_from_env,
    source_dsn_from_env,
)
from ingest_platform.cdc.logical import confirm_slot, slot_health, stage_logical_tables
from ingest_platform.cdc.pipeline import (
    DEFAULT_WAIT_SECONDS,
    StageResult,
    full_resync,
    merge_staged,
    pending_tables,
    stage_changes,
)
from ingest_platform.cdc.source import table_activity
from ingest_platform.defs.executor import POSTGRES_WRITERS, platform_executor
from ingest_platform.defs.metadata import pg_row_count, pg_table_metadata
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.defs.schedules import default_status
from ingest_platform.errors import IngestError
from ingest_platform.postgres.connection import connect

JOB_NAME = "cdc_sync"
RESYNC_JOB_NAME = "cdc_full_resync"
SENSOR_NAME = "cdc_change_log_sensor"
SCHEDULE_NAME = "cdc_sync_schedule"
MATCHES_SOURCE_CHECK = "matches_source"
DELETED_CHECK = "deleted_objects_soft_deleted"
STAGING_EMPTY_CHECK = "staging_empty"
SLOT_WAL_CHECK = "slot_wal_retained"  # kind = "logical": WAL the slot holds on the source
GROUP = "cdc"
SOURCE_GROUP = "cdc_source"
# An observation's data version is this tag (what ObserveResult(data_version=...) writes).
DATA_VERSION_TAG = "dagster/data_version"
RETRY_SECONDS = 60  # a table still pending with the same watermark is requested again after this


class CdcSourceResource(dg.ConfigurableResource):
    """The application database with the change log. Unset: INGEST_CDC_SOURCE_DSN, else `cdc_demo`
    on the warehouse server (INGEST_PG_DSN)."""

    dsn: str | None = Field(
        default=None, description="libpq DSN or postgresql:// URL of the source."
    )

    def resolved_dsn(self) -> str:
        return self.dsn or source_dsn_from_env()


DEFAULT_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
)
# With no change at the source the sensor still merges every table this often, so a merged
# table's freshness says "the sensor is alive", not "the source changed" (under the warn window).
HEARTBEAT_SECONDS = 300


@dataclass(frozen=True)
class CdcTableRecord:
    """One CDC asset: a tracked table at one `stage` ("source": its table in the application
    database, "staging", "merged"), or the change log itself (`table` None, stage "change_log")."""

    table: CdcTable | None
    stage: str
    warehouse_schema: str
    change_log: ChangeLog
    logical: LogicalSource | None = None  # kind = "logical": the slot replaces the change log


@dataclass(frozen=True)
class CdcTranslator:
    """The one place where tracked tables become asset specs. Keys: `cdc/<table>` (merged),
    `cdc/<table>__staging`, and the external `cdc_source/<schema>.<table>` and change log.
    `freshness_policy` goes on merged tables (None: none); `owners` and `tags` on every spec."""

    freshness_policy: dg.FreshnessPolicy | None = DEFAULT_FRESHNESS
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)

    def get_asset_spec(self, record: CdcTableRecord) -> dg.AssetSpec:
        log, schema, table = record.change_log, record.warehouse_schema, record.table
        change_log_key = dg.AssetKey([SOURCE_GROUP, f"{log.schema}.{log.change_table}"])
        tags, owners = {"ingest/source": "cdc", **self.tags}, list(self.owners)
        if record.logical is not None:
            change_log_key = dg.AssetKey([SOURCE_GROUP, f"slot.{record.logical.slot}"])
        if table is None:
            source = (
                f"The source's logical replication slot `{record.logical.slot}` (pgoutput, "
                f"publication `{record.logical.publication}`; external). "
                "`cdc_change_log_sensor` decodes it"
                if record.logical is not None
                else f"The application's change log `{log.schema}.{log.change_table}` (external: "
                "written by the application). `cdc_change_log_sensor` reads it"
            )
            return dg.AssetSpec(
                key=change_log_key,
                group_name=SOURCE_GROUP,
                kinds={"postgres"},
                tags=tags,
                owners=owners,
                description=f"{source} every 15 s and runs `cdc_sync` for the tables with changes.",
            )
        source_key = dg.AssetKey([SOURCE_GROUP, f"{table.source_schema}.{table.source_table}"])
        source = f"`{table.source_schema}.{table.source_table}` ({table.app_label}.{table.model})"
        if record.stage == "source":
            return dg.AssetSpec(
                key=source_key,
                group_name=SOURCE_GROUP,
                kinds={"postgres"},
                tags=tags,
                owners=owners,
                description=f"Source table {source} in the application database (external).",
            )
        if record.stage == "staging":
            return dg.AssetSpec(
                key=dg.AssetKey([GROUP, table.staging_table]),
                group_name=GROUP,
                kinds={"postgres"},
                deps=[source_key, change_log_key],
                tags=tags,
                owners=owners,
                description=(
                    f"Staging table `{schema}.{table.staging_table}`: the current source rows of "
                    f"{source} for the objects changed past the watermark, last action per "
                    "object. Empty between runs."
                ),
                metadata={"dagster/table_name": f"{schema}.{table.staging_table}"},
            )
        return dg.AssetSpec(
            key=dg.AssetKey([GROUP, table.merged_table]),
            group_name=GROUP,
            kinds={"postgres"},
            deps=[dg.AssetKey([GROUP, table.staging_table])],
            tags=tags,
            owners=owners,
            freshness_policy=self.freshness_policy,
            description=(
                f"Merged table `{schema}.{table.merged_table}`: {source} with `is_deleted` (soft "
                "deletes), `_last_change_id` and `_applied_at`; merged with its watermark in one "
                "transaction. Kept current by `cdc_change_log_sensor`."
            ),
            metadata={"dagster/table_name": f"{schema}.{table.merged_table}"},
        )

    def asset_key(self, config: CdcConfig, table: CdcTable, stage: str) -> dg.AssetKey:
        record = CdcTableRecord(
            table, stage, config.warehouse_schema, config.change_log, config.logical
        )
        return self.get_asset_spec(record).key


def build_cdc_definitions(
    config: CdcConfig | None = None,
    translator: CdcTranslator | None = None,
    source: CdcSourceResource | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    heartbeat_seconds: float | None = HEARTBEAT_SECONDS,
    sync_cron: str | None = None,
    sync_schedule_on: bool = False,
) -> dg.Definitions:
    """Assets, checks, job and sensor for every tracked table (`cdc_config_from_env()` by default),
    plus the `cdc_source` resource. The warehouse `postgres` resource comes from the caller.
    `heartbeat_seconds`: the sensor merges every table at least this often (None: only on
    changes); keep it under the freshness policy's windows. `sync_cron`: also run `cdc_sync` on
    this schedule (besides the sensor; concurrent syncs of a table wait for its watermark row),
    stopped unless `sync_schedule_on`."""
    config = config or cdc_config_from_env()
    translator = translator or CdcTranslator()
    if source is None:
        source = CdcSourceResource(
            dsn=dg.EnvVar("INGEST_CDC_SOURCE_DSN")
            if os.environ.get("INGEST_CDC_SOURCE_DSN")
            else None
        )

    def spec(table: CdcTable | None, stage: str) -> dg.AssetSpec:
        record = CdcTableRecord(
            table, stage, config.warehouse_schema, config.change_log, config.logical
        )
        return translator.get_asset_spec(record)

    external: list[dg.AssetSpec] = [spec(None, "change_log")] if config.tables else []
    assets, merged_assets, checks = [], [], []
    change_log_key = spec(None, "change_log").key
    staged = [
        StagedTable(table, spec(table, "staging"), spec(table, "source").key, change_log_key)
        for table in config.tables
    ]
    if config.logical is None:
        assets += [_staging_asset(config, one, wait_seconds) for one in staged]
    elif staged:
        assets.append(_logical_staging_asset(config, staged))
    for table in config.tables:
        external.append(spec(table, "source"))
        merged = spec(table, "merged")
        merged_assets.append(_merged_asset(config, table, merged))
        checks.append(_merged_checks(config, table, merged))
    assets += merged_assets
    # The `dagster/column_schema` of the last two merges compared (warns on a change).
    checks += dg.build_column_schema_change_checks(assets=merged_assets) if merged_assets else []
    job = dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=platform_executor(),
        description="Stage and merge the change log of the tracked tables.",
    )
    schedules = []
    if sync_cron and config.tables:
        schedules.append(
            dg.ScheduleDefinition(
                name=SCHEDULE_NAME,
                job=job,
                cron_schedule=sync_cron,
                default_status=default_status(sync_schedule_on),
                description="Runs cdc_sync for every tracked table on a schedule (besides the "
                "sensor).",
            )
        )
    return dg.Definitions(
        assets=[*external, *assets],
        asset_checks=checks,
        jobs=[job, _resync_job(config, translator)] if config.tables else [job],
        sensors=[_sensor(config, translator, heartbeat_seconds)],
        schedules=schedules,
        resources={"cdc_source": source},
    )


@dataclass(frozen=True)
class StagedTable:
    """A tracked table's staging asset and the external assets each run observes: the source
    table and the change log (or the slot)."""

    table: CdcTable
    spec: dg.AssetSpec
    source_key: dg.AssetKey
    change_log_key: dg.AssetKey


def _staging_asset(
    config: CdcConfig, staged: StagedTable, wait_seconds: float
) -> dg.AssetsDefinition:
    """The change-log kind: a step per table."""

    @dg.multi_asset(
        name=f"stage_{staged.spec.key.to_python_identifier()}",
        specs=[staged.spec],
        pool=POSTGRES_WRITERS,
    )
    def staging(
        context: dg.AssetExecutionContext, postgres: PostgresResource, cdc_source: CdcSourceResource
    ):
        source_dsn = cdc_source.resolved_dsn()
        result = stage_changes(source_dsn, postgres.dsn, config, staged.table, wait_seconds)
        return _staging_result(context, source_dsn, staged, result)

    return staging


def _logical_staging_asset(config: CdcConfig, staged: list[StagedTable]) -> dg.AssetsDefinition:
    """The logical kind: one step stages every selected table from one decoding of the slot (a
    step per table would decode the same WAL once per table, and wait for the slot, which
    serves one backend at a time)."""
    by_key = {one.spec.key: one for one in staged}
    slot = config.logical.slot if config.logical else ""

    @dg.multi_asset(
        name=f"stage_slot_{slot}",  # a slot name is lower-case letters, digits and underscores
        specs=[one.spec for one in staged],
        can_subset=True,
        pool=POSTGRES_WRITERS,
    )
    def staging(
        context: dg.AssetExecutionContext, postgres: PostgresResource, cdc_source: CdcSourceResource
    ):
        source_dsn = cdc_source.resolved_dsn()
        selected = [one for key, one in by_key.items() if key in context.selected_asset_keys]
        tables = [one.table for one in selected]
        results = stage_logical_tables(source_dsn, postgres.dsn, config, tables)
        for one in selected:
            yield _staging_result(context, source_dsn, one, results[one.table.name])

    return staging


def _staging_result(
    context: dg.AssetExecutionContext, source_dsn: str, staged: StagedTable, result: StageResult
) -> dg.MaterializeResult:
    """A staged table's materialization; the run's observations of its external upstreams are
    logged, and source transactions that hold changes back are a warning."""
    table = staged.table
    for observation in _source_observations(source_dsn, staged, result):
        context.log_event(observation)
    if result.blocked_by_pids:
        context.log.warning(
            f"{table.name}: changes past id {result.staged_to} wait for source transactions "
            f"(pids {', '.join(map(str, result.blocked_by_pids))}) that wrote to the change "
            f"log."
        )
    return dg.MaterializeResult(
        asset_key=staged.spec.key,
        metadata={
            "watermark": result.watermark,
            "staged_to": result.staged_to,
            "max_change_id": result.max_change_id,
            "changes_added": result.changes.get("added", 0),
            "changes_changed": result.changes.get("changed", 0),
            "changes_deleted": result.changes.get("deleted", 0),
            "staged_rows": result.staged_rows,
            "objects_gone_from_source": result.staged.get("gone", 0),
            "schema_changes": dg.MetadataValue.md(
                "\n".join(f"- {c}" for c in result.schema_changes) or "none"
            ),
            "blocked_by_pids": ", ".join(map(str, result.blocked_by_pids)) or "none",
            "seconds": round(result.seconds, 3),
            "dagster/row_count": result.staged_rows,
        },
    )


def _source_observations(
    source_dsn: str, staged: StagedTable, result: StageResult
) -> list[dg.AssetObservation]:
    """What each run saw of its external upstreams: the change log's head, and the source table's
    live rows and write counter from PostgreSQL's statistics (an estimate, read without scanning
    the table)."""
    observations = [
        dg.AssetObservation(
            asset_key=staged.change_log_key,
            tags={DATA_VERSION_TAG: str(result.max_change_id)},
            metadata={"max_change_id": result.max_change_id},
        )
    ]
    table = staged.table
    with connect(source_dsn, autocommit=True) as conn:
        activity = table_activity(conn, table.source_schema, table.source_table)
    if activity is not None:
        live_rows, writes = activity
        observations.append(
            dg.AssetObservation(
                asset_key=staged.source_key,
                tags={DATA_VERSION_TAG: str(writes)},
                metadata={"estimated_rows": live_rows, "writes_since_stats_reset": writes},
            )
        )
    return observations


def _merged_asset(config: CdcConfig, table: CdcTable, spec: dg.AssetSpec) -> dg.AssetsDefinition:
    schema = config.warehouse_schema

    @dg.multi_asset(
        name=f"merge_{spec.key.to_python_identifier()}", specs=[spec], pool=POSTGRES_WRITERS
    )
    def merged(
        context: dg.AssetExecutionContext, postgres: PostgresResource, cdc_source: CdcSourceResource
    ):
        result = merge_staged(postgres.dsn, config, table)
        if config.logical is not None:  # the merge committed: now the slot may move
            confirm_slot(cdc_source.resolved_dsn(), postgres.dsn, config)
        lag = result.lag_seconds
        with postgres.get_connection() as conn:
            count = pg_row_count(conn, schema, table.merged_table)
            standard = pg_table_metadata(conn, postgres.dsn, schema, table.merged_table, count)
        return dg.MaterializeResult(
            metadata={
                "watermark": result.watermark,
                "merged": result.merged,
                "rows_merged": result.counts.rows_merged,
                "rows_inserted": result.counts.inserted,
                "rows_updated": result.counts.updated,
                "rows_soft_deleted": result.counts.soft_deleted,
                "lag_seconds": round(lag, 3) if lag is not None else 0.0,
                "last_change_at": dg.MetadataValue.timestamp(result.last_change_at)
                if result.last_change_at
                else "none",
                "seconds": round(result.seconds, 3),
                **standard,
            }
        )

    return merged


def _merged_checks(
    config: CdcConfig, table: CdcTable, spec: dg.AssetSpec
) -> dg.AssetChecksDefinition:
    """Run after each merge and on their own (Execute, or the nightly re-verify schedule).
    `matches_source` is blocking: a merged table that differs from its source is not mirrored."""
    key = spec.key
    # The change-log kind checks deletes against the change log; the logical kind, which has no
    # log to read them from, checks instead that its slot does not hold the source's WAL.
    kind_check = (
        dg.AssetCheckSpec(
            DELETED_CHECK,
            asset=key,
            description="Every object whose last change is 'deleted' is soft-deleted (not live).",
        )
        if config.logical is None
        else dg.AssetCheckSpec(
            SLOT_WAL_CHECK,
            asset=key,
            description=(
                "WAL the replication slot retains on the source (pg_current_wal_lsn() - "
                "restart_lsn) is under [logical] max_retained_wal_mb: a stalled CDC does not "
                "fill the source's disk unnoticed."
            ),
        )
    )

    @dg.multi_asset_check(
        name=f"check_{key.to_python_identifier()}",
        specs=[
            dg.AssetCheckSpec(
                MATCHES_SOURCE_CHECK,
                asset=key,
                blocking=True,
                description=(
                    "Live merged rows == source rows: count and per-row hash; names up to 20 "
                    "differing keys."
                ),
            ),
            kind_check,
            dg.AssetCheckSpec(
                STAGING_EMPTY_CHECK, asset=key, description="Staging is empty after the run."
            ),
        ],
    )
    def merged_checks(postgres: PostgresResource, cdc_source: CdcSourceResource):
        source_dsn = cdc_source.resolved_dsn()
        match = checks.compare_with_source(source_dsn, postgres.dsn, config, table)
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=MATCHES_SOURCE_CHECK,
            passed=match.passed,
            description=match.describe(),
            metadata={
                "source_rows": match.source_rows,
                "merged_live_rows": match.merged_rows,
                "mismatched_buckets": match.mismatched_buckets,
                "excluded_pending_keys": match.excluded_keys,
                "differing_keys": ", ".join(match.differing_keys) or "none",
            },
        )
        if config.logical is not None:
            health = slot_health(source_dsn, config.logical)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=SLOT_WAL_CHECK,
                passed=health.passed,
                description=health.describe(),
                metadata={
                    "retained_wal_mb": round(health.retained_bytes / 1024 / 1024, 3),
                    "limit_mb": round(health.limit_bytes / 1024 / 1024, 3),
                    "slot_active": health.active,
                    "wal_status": health.wal_status or "unknown",
                },
            )
        else:
            yield _deleted_check_result(source_dsn, postgres.dsn, config, table, key)
        staged = checks.staging_row_count(postgres.dsn, config, table)
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=STAGING_EMPTY_CHECK,
            passed=staged == 0,
            description=None if staged == 0 else f"staging still holds {staged} rows",
            metadata={"staging_rows": staged},
        )

    return merged_checks


def _deleted_check_result(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable, key: dg.AssetKey
) -> dg.AssetCheckResult:
    deleted = checks.live_deleted_objects(source_dsn, warehouse_dsn, config, table)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=DELETED_CHECK,
        passed=deleted.passed,
        description=None
        if deleted.passed
        else f"{deleted.live_count} deleted objects are live: {', '.join(deleted.live_keys)}",
        metadata={
            "deleted_objects": deleted.deleted_objects,
            "live_deleted_objects": deleted.live_count,
        },
    )


class ResyncConfig(dg.Config):
    table: str = Field(description="The tracked table to resync, e.g. pm_item.")


def _resync_job(cdc: CdcConfig, translator: CdcTranslator) -> dg.JobDefinition:
    """`cdc_full_resync`: repairs a merged table that drifted from its source (a failed
    `matches_source`): every source row restaged and merged, missing keys soft-deleted."""

    @dg.op(name="full_resync")
    def resync(
        context: dg.OpExecutionContext,
        config: ResyncConfig,
        postgres: PostgresResource,
        cdc_source: CdcSourceResource,
    ):
        table = cdc.table(config.table)
        counts = full_resync(cdc_source.resolved_dsn(), postgres.dsn, cdc, table)
        context.log.info(
            f"Resynced {table.name}: {counts.inserted} inserted, {counts.updated} updated, "
            f"{counts.soft_deleted} soft-deleted."
        )
        yield dg.AssetMaterialization(
            asset_key=translator.asset_key(cdc, table, "merged"),
            metadata={
                "full_resync": True,
                "rows_inserted": counts.inserted,
                "rows_updated": counts.updated,
                "rows_soft_deleted": counts.soft_deleted,
            },
        )
        yield dg.Output(None)

    @dg.job(
        name=RESYNC_JOB_NAME,
        executor_def=platform_executor(),
        description="Full resync of one CDC merged table from its source (run config: "
        "`ops: {full_resync: {config: {table: <name>}}}`); then run its checks.",
    )
    def resync_job():
        resync()

    return resync_job


def _sensor(
    config: CdcConfig, translator: CdcTranslator, heartbeat_seconds: float | None
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job_name=JOB_NAME,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Runs cdc_sync for the tracked tables whose change log has rows past their watermark."
        ),
    )
    def cdc_change_log_sensor(
        context: dg.SensorEvaluationContext,
        postgres: PostgresResource,
        cdc_source: CdcSourceResource,
    ):
        try:
            pending = pending_tables(cdc_source.resolved_dsn(), postgres.dsn, config)
        except (
            IngestError
        ) as error:  # no source or change log yet: say so on the tick, do not fail it
            hint = (
                " Create the demo source with `ingest-platform demo-app`, or set "
                "INGEST_CDC_SOURCE_DSN "
                "to your application database."
            )
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"CDC source not ready: {error}{hint}"),
                cursor=context.cursor,
            )
        return evaluate_cdc_sensor(
            context.cursor, pending, config, translator, heartbeat_seconds=heartbeat_seconds
        )

    return cdc_change_log_sensor


def evaluate_cdc_sensor(
    cursor: str | None,
    pending: dict[str, int],
    config: CdcConfig,
    translator: CdcTranslator | None = None,
    now: float | None = None,
    heartbeat_seconds: float | None = None,
) -> dg.SensorResult:
    """One run for the pending tables. Cursor {table: [watermark, requested at]}: a table is not
    requested again for the same watermark (its run is queued or running) until RETRY_SECONDS
    passed. With `heartbeat_seconds`, a table not requested for that long is requested even
    without changes: its merged table's materialization then shows the sensor is alive (a stalled
    sensor makes the freshness policies fail)."""
    translator = translator or CdcTranslator()
    now = time.time() if now is None else now
    state = json.loads(cursor) if cursor else {}
    due = [
        name
        for name, mark in pending.items()
        if name not in state or state[name][0] != mark or now - state[name][1] >= RETRY_SECONDS
    ]
    if heartbeat_seconds is not None:
        due += [
            t.name
            for t in config.tables
            if t.name not in pending
            and (t.name not in state or now - state[t.name][1] >= heartbeat_seconds)
        ]
    if not due:
        reason = (
            "No changes past the watermarks."
            if not pending
            else "Runs for the pending tables are already requested."
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(state))
    for name in due:
        state[name] = [pending.get(name, state.get(name, [None])[0]), now]
    tables = [config.table(name) for name in due]
    keys = [
        translator.asset_key(config, t, stage) for t in tables for stage in ("staging", "merged")
    ]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(asset_selection=keys, tags={"ingest/cdc_tables": ",".join(due)})
        ],
        cursor=json.dumps(state, sort_keys=True),
    )
