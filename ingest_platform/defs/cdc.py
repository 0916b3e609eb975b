"""Dagster glue for CDC: per tracked table, assets `cdc/<table>/staging` -> `cdc/<table>/merged`,
three asset checks on the merged table, the job `cdc_sync` and the sensor `cdc_change_log_sensor`.

The pipeline itself is `ingest_platform.cdc` (pure Python); this module maps it to assets. The
warehouse is the `postgres` resource (INGEST_PG_DSN), the source the `cdc_source` resource
(INGEST_CDC_SOURCE_DSN, default database `cdc_demo` on the warehouse server).
"""

import json
import os
import time
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from ingest_platform.cdc import checks
from ingest_platform.cdc.config import CdcConfig, CdcTable, cdc_config_from_env, source_dsn_from_env
from ingest_platform.cdc.pipeline import (
    DEFAULT_WAIT_SECONDS,
    merge_staged,
    pending_tables,
    stage_changes,
)
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.errors import IngestError

JOB_NAME = "cdc_sync"
SENSOR_NAME = "cdc_change_log_sensor"
MATCHES_SOURCE_CHECK = "matches_source"
DELETED_CHECK = "deleted_objects_soft_deleted"
STAGING_EMPTY_CHECK = "staging_empty"
GROUP = "cdc"
RETRY_SECONDS = 60  # a table still pending with the same watermark is requested again after this


class CdcSourceResource(dg.ConfigurableResource):
    """The application database with the change log. Unset: INGEST_CDC_SOURCE_DSN, else `cdc_demo`
    on the warehouse server (INGEST_PG_DSN)."""

    dsn: str | None = Field(
        default=None, description="libpq DSN or postgresql:// URL of the source."
    )

    def resolved_dsn(self) -> str:
        return self.dsn or source_dsn_from_env()


@dataclass(frozen=True)
class CdcTranslator:
    """The one place where tracked tables become asset keys, groups and descriptions."""

    def staging_key(self, table: CdcTable) -> dg.AssetKey:
        return dg.AssetKey(["cdc", table.name, "staging"])

    def merged_key(self, table: CdcTable) -> dg.AssetKey:
        return dg.AssetKey(["cdc", table.name, "merged"])

    def get_asset_spec(self, config: CdcConfig, table: CdcTable, stage: str) -> dg.AssetSpec:
        schema = config.warehouse_schema
        source = f"{table.source_schema}.{table.source_table} ({table.app_label}.{table.model})"
        if stage == "staging":
            return dg.AssetSpec(
                key=self.staging_key(table),
                group_name=GROUP,
                kinds={"postgres"},
                description=(
                    f"Staging table `{schema}.{table.staging_table}`: the current source rows of "
                    f"{source} for "
                    "the objects changed past the watermark, last action per object. Empty between "
                    "runs."
                ),
                metadata={"dagster/table_name": f"{schema}.{table.staging_table}"},
            )
        return dg.AssetSpec(
            key=self.merged_key(table),
            group_name=GROUP,
            kinds={"postgres"},
            deps=[self.staging_key(table)],
            description=(
                f"Merged table `{schema}.{table.merged_table}`: {source} with `is_deleted` (soft "
                f"deletes), "
                "`_last_change_id` and `_applied_at`; merged with its watermark in one transaction."
            ),
            metadata={"dagster/table_name": f"{schema}.{table.merged_table}"},
        )


def build_cdc_definitions(
    config: CdcConfig | None = None,
    translator: CdcTranslator = CdcTranslator(),
    source: CdcSourceResource | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> dg.Definitions:
    """Assets, checks, job and sensor for every tracked table (`cdc_config_from_env()` by default),
    plus the `cdc_source` resource. The warehouse `postgres` resource comes from the caller."""
    config = config or cdc_config_from_env()
    if source is None:
        source = CdcSourceResource(
            dsn=dg.EnvVar("INGEST_CDC_SOURCE_DSN")
            if os.environ.get("INGEST_CDC_SOURCE_DSN")
            else None
        )
    assets = []
    for table in config.tables:
        assets.append(
            _staging_asset(
                config, table, translator.get_asset_spec(config, table, "staging"), wait_seconds
            )
        )
        assets.append(
            _merged_asset(config, table, translator.get_asset_spec(config, table, "merged"))
        )
    job = dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=dg.in_process_executor,
        description="Stage and merge the change log of the tracked tables.",
    )
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        sensors=[_sensor(config, translator)],
        resources={"cdc_source": source},
    )


def _staging_asset(
    config: CdcConfig, table: CdcTable, spec: dg.AssetSpec, wait_seconds: float
) -> dg.AssetsDefinition:
    @dg.asset(
        key=spec.key,
        group_name=spec.group_name,
        kinds=spec.kinds,
        description=spec.description,
        metadata=spec.metadata,
    )
    def staging(
        context: dg.AssetExecutionContext, postgres: PostgresResource, cdc_source: CdcSourceResource
    ):
        result = stage_changes(cdc_source.resolved_dsn(), postgres.dsn, config, table, wait_seconds)
        if result.blocked_by_pids:
            context.log.warning(
                f"{table.name}: changes past id {result.staged_to} wait for source transactions "
                f"(pids {', '.join(map(str, result.blocked_by_pids))}) that wrote to the change "
                f"log."
            )
        return dg.MaterializeResult(
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
            }
        )

    return staging


def _merged_asset(config: CdcConfig, table: CdcTable, spec: dg.AssetSpec) -> dg.AssetsDefinition:
    key = spec.key

    @dg.asset(
        key=key,
        group_name=spec.group_name,
        kinds=spec.kinds,
        description=spec.description,
        metadata=spec.metadata,
        deps=[dep.asset_key for dep in spec.deps],
        check_specs=[
            dg.AssetCheckSpec(
                MATCHES_SOURCE_CHECK,
                asset=key,
                description=(
                    "Live merged rows == source rows: count and per-row hash; names up to 20 "
                    "differing keys."
                ),
            ),
            dg.AssetCheckSpec(
                DELETED_CHECK,
                asset=key,
                description=(
                    "Every object whose last change is 'deleted' is soft-deleted (not live)."
                ),
            ),
            dg.AssetCheckSpec(
                STAGING_EMPTY_CHECK, asset=key, description="Staging is empty after the run."
            ),
        ],
    )
    def merged(
        context: dg.AssetExecutionContext, postgres: PostgresResource, cdc_source: CdcSourceResource
    ):
        result = merge_staged(postgres.dsn, config, table)
        lag = result.lag_seconds
        yield dg.MaterializeResult(
            metadata={
                "watermark": result.watermark,
                "merged": result.merged,
                "rows_merged": result.counts.rows_merged,
                "rows_inserted": result.counts.inserted,
                "rows_updated": result.counts.updated,
                "rows_soft_deleted": result.counts.soft_deleted,
                "lag_seconds": round(lag, 3) if lag is not None else 0.0,
                "last_change_at": str(result.last_change_at) if result.last_change_at else "none",
                "seconds": round(result.seconds, 3),
            }
        )
        source_dsn = cdc_source.resolved_dsn()
        match = checks.compare_with_source(source_dsn, postgres.dsn, config, table)
        yield dg.AssetCheckResult(
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
        deleted = checks.live_deleted_objects(source_dsn, postgres.dsn, config, table)
        yield dg.AssetCheckResult(
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
        staged = checks.staging_row_count(postgres.dsn, config, table)
        yield dg.AssetCheckResult(
            check_name=STAGING_EMPTY_CHECK,
            passed=staged == 0,
            description=None if staged == 0 else f"staging still holds {staged} rows",
            metadata={"staging_rows": staged},
        )

    return merged


def _sensor(config: CdcConfig, translator: CdcTranslator) -> dg.SensorDefinition:
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
        return evaluate_cdc_sensor(context.cursor, pending, config, translator)

    return cdc_change_log_sensor


def evaluate_cdc_sensor(
    cursor: str | None,
    pending: dict[str, int],
    config: CdcConfig,
    translator: CdcTranslator = CdcTranslator(),
    now: float | None = None,
) -> dg.SensorResult:
    """One run for the pending tables. Cursor {table: [watermark, requested at]}: a table is not
    requested again for the same watermark (its run is queued or running) until RETRY_SECONDS
    passed."""
    now = time.time() if now is None else now
    state = json.loads(cursor) if cursor else {}
    due = [
        name
        for name, mark in pending.items()
        if name not in state or state[name][0] != mark or now - state[name][1] >= RETRY_SECONDS
    ]
    if not due:
        reason = (
            "No changes past the watermarks."
            if not pending
            else "Runs for the pending tables are already requested."
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(state))
    for name in due:
        state[name] = [pending[name], now]
    tables = [config.table(name) for name in due]
    keys = [k for t in tables for k in (translator.staging_key(t), translator.merged_key(t))]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(asset_selection=keys, tags={"ingest/cdc_tables": ",".join(due)})
        ],
        cursor=json.dumps(state, sort_keys=True),
    )
