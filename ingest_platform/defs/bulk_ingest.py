"""Dagster glue for ``ingest()``: a resource, an asset factory, and a schedule and a sensor to run
it.

Not wired into ``definitions.py`` by this module; wire what you build with it there. Example::

    import dagster as dg
    import sqlalchemy as sa
    from ingest_platform import Mode
    from ingest_platform.defs.bulk_ingest import (
        BulkIngestResource, bulk_ingest_asset, bulk_ingest_schedule, bulk_ingest_sensor)

    metadata = sa.MetaData()
    orders = sa.Table("orders", metadata,
                      sa.Column("id", sa.BigInteger, primary_key=True),
                      sa.Column("amount", sa.Numeric(12, 2)),
                      sa.Column("updated_at", sa.DateTime(timezone=True)), schema="shop")

    def order_batches(high_watermark):        # rows changed after the watermark, oldest first
        for page in fetch_pages(since=high_watermark):
            yield page.max_updated_at, ((orders, (r.id, r.amount, r.updated_at)) for r in page.rows)

    orders_asset = bulk_ingest_asset("shop/orders", metadata, order_batches, group_name="shop")
    defs = dg.Definitions(
        assets=[orders_asset],
        schedules=[bulk_ingest_schedule(orders_asset, "*/15 * * * *")],
        # or: sensors=[bulk_ingest_sensor(orders_asset, probe=lambda: latest_change_marker())],
        resources={"bulk_ingest": BulkIngestResource(dsn=dg.EnvVar("INGEST_PG_DSN"))},
    )

Each materialization calls ``ingest(conn, metadata, batches, high_watermark, ingest_mode)``; its
metadata: ``high_watermark`` (as stored), ``batches``, ``mode``, ``rows`` (total) and
``rows/<schema.table>`` per table, and ``migrations`` when a table was created or changed.
The watermark lives in PostgreSQL (``_ingest_watermarks``), not in Dagster: a run that fails
half-way resumes after the last committed batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from ingest_platform.bulk_ingest import HighWatermark, IngestResult, Mode, ingest
from ingest_platform.defs.etl_run import EtlRunScoped
from ingest_platform.postgres.connection import to_url


class BulkIngestResource(EtlRunScoped, dg.ConfigurableResource):
    """A PostgreSQL warehouse to ``ingest()`` into. Give the DSN as ``EnvVar("INGEST_PG_DSN")``."""

    dsn: str = Field(description="libpq connection string or postgresql:// URL.")
    terminate_blockers_after: float | None = Field(
        default=60.0,
        description="Seconds a migration waits for a lock before terminating the backends that "
        "hold it (logged); null waits forever.",
    )

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A SQLAlchemy connection (psycopg 3), not in a transaction; closed afterwards."""
        engine = sa.create_engine(_psycopg_url(self.dsn), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def ingest(
        self,
        metadata: sa.MetaData,
        batches: Callable,
        high_watermark: Any = HighWatermark.LATEST,
        ingest_mode: Mode = Mode.UPSERT_COMMITTING_EACH_BATCH,
        **kwargs,
    ) -> IngestResult:
        kwargs.setdefault("terminate_blockers_after", self.terminate_blockers_after)
        with self.connect() as conn:
            return ingest(conn, metadata, batches, high_watermark, ingest_mode, **kwargs)


def _psycopg_url(dsn: str) -> str:
    return to_url(dsn).replace("+psycopg2://", "+psycopg://")


def materialization_metadata(result: IngestResult) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "high_watermark": dg.MetadataValue.text(repr(result.high_watermark)),
        "batches": dg.MetadataValue.int(result.batches),
        "mode": dg.MetadataValue.text(result.mode.name),
        "rows": dg.MetadataValue.int(sum(result.rows.values())),
        "watermark_key": dg.MetadataValue.text(result.watermark_key),
    }
    for table, rows in result.rows.items():
        metadata[f"rows/{table}"] = dg.MetadataValue.int(rows)
    if result.migrations:
        metadata["migrations"] = dg.MetadataValue.json(result.migrations)
    return metadata


def bulk_ingest_asset(
    key: str | Sequence[str] | dg.AssetKey,
    metadata: sa.MetaData,
    batches: Callable,
    *,
    ingest_mode: Mode = Mode.UPSERT_COMMITTING_EACH_BATCH,
    high_watermark: Any = HighWatermark.LATEST,
    watermark_key: str | None = None,
    resource_key: str = "bulk_ingest",
    **asset_kwargs,
) -> dg.AssetsDefinition:
    """An asset whose materialization is one ``ingest()`` of `batches` into the tables of
    `metadata`.

    `key`: "a/b" or a sequence or AssetKey. `asset_kwargs` go to ``dg.asset`` (group_name, deps,
    description, owners, tags, ...). The resource under `resource_key` is a BulkIngestResource.
    """
    asset_key = (
        key
        if isinstance(key, dg.AssetKey)
        else dg.AssetKey(key.split("/") if isinstance(key, str) else key)
    )
    tables = ", ".join(sorted(t.key for t in metadata.tables.values()))
    asset_kwargs.setdefault("description", f"ingest() into {tables} ({Mode(ingest_mode).name}).")
    asset_kwargs.setdefault("kinds", {"postgres"})

    @dg.asset(key=asset_key, required_resource_keys={resource_key}, **asset_kwargs)
    def _bulk_ingest(context) -> dg.MaterializeResult:  # an AssetExecutionContext
        resource: BulkIngestResource = getattr(context.resources, resource_key)
        result = resource.ingest(
            metadata,
            batches,
            high_watermark,
            ingest_mode,
            watermark_key=watermark_key,
            logger=context.log,
        )
        context.log.info(
            f"Ingested {result.batches} batches up to high watermark {result.high_watermark!r}: "
            f"{result.rows}"
        )
        return dg.MaterializeResult(metadata=materialization_metadata(result))

    return _bulk_ingest


_JOBS: dict[tuple[dg.AssetKey, str], dg.UnresolvedAssetJobDefinition] = {}


def bulk_ingest_job(
    asset: dg.AssetsDefinition, name: str | None = None
) -> dg.UnresolvedAssetJobDefinition:
    """The job `<name or asset key>_job` materializing `asset`; one object per name, so a schedule
    and a sensor of the same asset share it."""
    base = name or asset.key.to_python_identifier()
    return _JOBS.setdefault(
        (asset.key, base), dg.define_asset_job(f"{base}_job", selection=[asset.key])
    )


def bulk_ingest_schedule(
    asset: dg.AssetsDefinition,
    cron_schedule: str,
    *,
    name: str | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    **schedule_kwargs,
) -> dg.ScheduleDefinition:
    """Materialize `asset` on a cron schedule (each run resumes from the stored watermark)."""
    job = bulk_ingest_job(asset, name)
    return dg.ScheduleDefinition(
        name=f"{job.name[:-4]}_schedule",
        job=job,
        cron_schedule=cron_schedule,
        default_status=default_status,
        **schedule_kwargs,
    )


def bulk_ingest_sensor(
    asset: dg.AssetsDefinition,
    probe: Callable[[], Any],
    *,
    name: str | None = None,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """Materialize `asset` when ``probe()`` (a cheap look at the source, e.g. its newest change
    time) returns something new; None means the source cannot tell, so nothing runs."""
    job = bulk_ingest_job(asset, name)

    @dg.sensor(
        name=f"{job.name[:-4]}_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
    def _sensor(context):  # a SensorEvaluationContext
        marker = probe()
        if marker is None or str(marker) == context.cursor:
            return dg.SkipReason(f"No new data at the source (marker {marker!r}).")
        context.update_cursor(str(marker))
        return dg.RunRequest(run_key=f"{asset.key.to_user_string()}:{marker}")

    return _sensor
