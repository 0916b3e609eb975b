"""Dagster glue for the BigQuery mirror: one asset per mirrored PostgreSQL table, with checks.

- Dump parents: asset ``bigquery/<app>/<table>`` downstream of ``dumps/<app>/<table>``, with the
  same dynamic partitions (``<app>_versions``); materializing partition V replaces version V's
  rows in ``<dataset prefix><app>.<table>``.
- CDC merged tables: asset ``bigquery/cdc/<name>`` downstream of ``cdc/<name>/merged``
  (``build_cdc_mirror_definitions``), mode ``merge``; soft deletes mirror as ``is_deleted``.

Checks on every mirror (run with each materialization): ``row_counts`` (all rows and rows not
deleted; per version for dumps) and ``row_hashes`` (bucketed md5 comparison naming up to 20
differing keys; for a dump partition, that version). BigQuery dataset names:
``INGEST_BQ_DATASET_PREFIX`` (default empty) + app, or + ``cdc``.
"""

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from ingest_platform.bigquery.mirror import (
    IS_DELETED,
    VERSION_COLUMN,
    MirrorTarget,
    dump_source,
    ensure_dataset,
    ensure_mirror_table,
    mirror_changes,
    mirror_dump_version,
    supports_bignumeric,
)
from ingest_platform.bigquery.source import source_for_table
from ingest_platform.bigquery.types import bq_name
from ingest_platform.consistency.compare import (
    BigQuerySide,
    PostgresSide,
    compare_counts,
    compare_hashes,
)
from ingest_platform.defs.dumps import DumpTranslator, pg_schema_for
from ingest_platform.defs.resources import BigQueryResource, PostgresResource
from ingest_platform.dumps.directory import DumpCatalog

DEFAULT_DUMP_TRANSLATOR = DumpTranslator()
COUNTS_CHECK = "row_counts"
HASHES_CHECK = "row_hashes"


def dataset_prefix(environ=os.environ) -> str:
    return environ.get("INGEST_BQ_DATASET_PREFIX") or ""


@dataclass(frozen=True)
class MirrorTranslator:
    """Asset keys, datasets and tables of mirrors: the one place that names them."""

    prefix: str | None = None

    def dataset(self, app: str) -> str:
        return bq_name((dataset_prefix() if self.prefix is None else self.prefix) + app)

    def dump_asset_key(self, app: str, table: str) -> dg.AssetKey:
        return dg.AssetKey(["bigquery", app, table])

    def cdc_asset_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["bigquery", "cdc", name])

    def cdc_upstream_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["cdc", name, "merged"])


def _checks(key: dg.AssetKey, per_version: bool) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            COUNTS_CHECK,
            asset=key,
            description=(
                "Rows in PostgreSQL == rows in BigQuery, all and not deleted"
                + (", for this partition's version." if per_version else ".")
            ),
        ),
        dg.AssetCheckSpec(
            HASHES_CHECK,
            asset=key,
            description=(
                "Per-row md5 of a canonical text form, compared in key buckets; lists up to 20 "
                "differing keys."
            ),
        ),
    ]


def _check_results(
    conn, client, source, target: MirrorTarget, *, group: str | None, hash_source=None, what: str
) -> list[dg.AssetCheckResult]:
    deleted = IS_DELETED if IS_DELETED in {c.name for c in source.columns} else None
    counts = compare_counts(
        PostgresSide(conn, source),
        BigQuerySide(client, target.ref, source),
        group=group,
        deleted=deleted,
        what=what,
    )
    hash_source = hash_source or source
    hashes = compare_hashes(
        PostgresSide(conn, hash_source), BigQuerySide(client, target.ref, hash_source), what=what
    )
    totals = counts.totals()
    differing = [{**d.key, "status": d.status, "detail": d.detail} for d in hashes.differences]
    return [
        dg.AssetCheckResult(
            check_name=COUNTS_CHECK,
            passed=counts.passed,
            description=None
            if counts.passed
            else "Row counts differ between PostgreSQL and BigQuery.",
            metadata={
                **totals,
                "seconds": round(counts.seconds, 3),
                "counts": dg.MetadataValue.md(counts.markdown(group or "table")),
            },
        ),
        dg.AssetCheckResult(
            check_name=HASHES_CHECK,
            passed=hashes.passed,
            description=None
            if hashes.passed
            else f"{hashes.differing_buckets} of {hashes.buckets} buckets differ; "
            f"{len(hashes.differences)} keys listed.",
            metadata={
                "compared": hashes.what,
                "pg_rows": hashes.left_rows,
                "bq_rows": hashes.right_rows,
                "buckets": hashes.buckets,
                "differing_buckets": hashes.differing_buckets,
                "differing_keys": len(hashes.differences),
                "seconds": round(hashes.seconds, 3),
                "report": dg.MetadataValue.md(hashes.markdown()),
                **({"differences": dg.MetadataValue.json(differing)} if differing else {}),
            },
        ),
    ]


# ----------------------------------------------------------------------------- dump parents


def build_mirror_definitions(
    catalog: DumpCatalog,
    translator: MirrorTranslator = MirrorTranslator(),
    dump_translator: DumpTranslator = DEFAULT_DUMP_TRANSLATOR,
    *,
    cdc_tables: Iterable = (),
    cdc_schema: str = "cdc",
) -> dg.Definitions:
    """Mirror assets for every dump table of the catalog (and, if given, CDC merged tables)."""
    assets = [
        _dump_mirror_asset(app, table, translator, dump_translator)
        for app, tables in catalog.tables_by_app().items()
        for table in tables
    ]
    assets += _cdc_mirror_assets(cdc_tables, cdc_schema, "soft", translator)
    defs = dg.Definitions(assets=assets)
    mirrors = [key for assets_def in assets for key in assets_def.keys]
    if not mirrors:
        return defs
    # Mirrors follow their PostgreSQL assets: a new version or merge is mirrored without a click.
    follow = dg.AutomationConditionSensorDefinition(
        "bigquery_mirror_sensor",
        target=dg.AssetSelection.assets(*mirrors),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes each BigQuery mirror (and its checks) after its PostgreSQL asset "
        "updates.",
    )
    return dg.Definitions.merge(defs, dg.Definitions(sensors=[follow]))


def _dump_mirror_asset(
    app: str, table: str, translator: MirrorTranslator, dump_translator: DumpTranslator
) -> dg.AssetsDefinition:
    key = translator.dump_asset_key(app, table)
    dataset, bq_table = translator.dataset(app), bq_name(table)

    @dg.asset(
        key=key,
        deps=[dump_translator.asset_key(app, table)],
        partitions_def=dump_translator.partitions_def(app),
        automation_condition=dg.AutomationCondition.eager(),
        group_name=re.sub(r"[^A-Za-z0-9_]", "_", app),
        kinds={"bigquery"},
        check_specs=_checks(key, True),
        description=(
            f"BigQuery mirror `{dataset}.{bq_table}` of PostgreSQL `{pg_schema_for(app)}.{table}`; "
            f"partition "
            "V replaces version V's rows (Storage Write API, pending streams, one batch commit)."
        ),
    )
    def mirror(
        context: dg.AssetExecutionContext, postgres: PostgresResource, bigquery: BigQueryResource
    ):
        version = context.partition_key
        schema = pg_schema_for(app)
        with (
            postgres.get_connection() as conn,
            bigquery.get_client() as client,
            bigquery.get_write_client() as writer,
        ):
            target = MirrorTarget(client.project, dataset, bq_table)
            result = mirror_dump_version(
                conn, client, writer, schema, table, version, target, location=bigquery.location
            )
            # This partition's checks judge this version: other versions may still be on their way.
            this_version = dump_source(
                conn, schema, table, version, bignumeric=supports_bignumeric(client)
            )
            checks = _check_results(
                conn,
                client,
                this_version,
                target,
                group=VERSION_COLUMN,
                what=f"{schema}.{table} version {version} vs {target.table_id}",
            )
        context.log.info(
            f"Mirrored {result.rows} rows of {schema}.{table} version {version} to "
            f"{target.table_id}."
        )
        return dg.MaterializeResult(
            metadata={**result.metadata(), "version": version}, check_results=checks
        )

    return mirror


# ----------------------------------------------------------------------------- CDC merged tables


def build_cdc_mirror_definitions(
    merged_tables: Iterable,
    *,
    pg_schema: str = "cdc",
    delete_mode: str = "soft",
    translator: MirrorTranslator = MirrorTranslator(),
) -> dg.Definitions:
    """Mirror assets for CDC merged tables (mode ``merge``). Each item is a table name, or an object
    with ``merged_table`` or ``name`` (e.g. ``CdcTable``)."""
    return dg.Definitions(
        assets=_cdc_mirror_assets(merged_tables, pg_schema, delete_mode, translator)
    )


def _cdc_mirror_assets(
    merged_tables: Iterable, pg_schema: str, delete_mode: str, translator: MirrorTranslator
) -> list[dg.AssetsDefinition]:
    names = [
        t if isinstance(t, str) else getattr(t, "merged_table", None) or t.name
        for t in merged_tables
    ]
    return [_cdc_mirror_asset(n, pg_schema, delete_mode, translator) for n in names]


def _cdc_mirror_asset(
    name: str, pg_schema: str, delete_mode: str, translator: MirrorTranslator
) -> dg.AssetsDefinition:
    key = translator.cdc_asset_key(name)
    dataset, bq_table = translator.dataset("cdc"), bq_name(name)

    @dg.asset(
        key=key,
        deps=[translator.cdc_upstream_key(name)],
        group_name="cdc",
        kinds={"bigquery"},
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=_checks(key, False),
        description=(
            f"BigQuery mirror `{dataset}.{bq_table}` of PostgreSQL `{pg_schema}.{name}`: changes "
            f"since the "
            f"mirror's max(_last_change_id) staged and applied with one MERGE ({delete_mode} "
            f"deletes)."
        ),
    )
    def mirror(
        context: dg.AssetExecutionContext, postgres: PostgresResource, bigquery: BigQueryResource
    ):
        with (
            postgres.get_connection() as conn,
            bigquery.get_client() as client,
            bigquery.get_write_client() as writer,
        ):
            target = MirrorTarget(client.project, dataset, bq_table)
            source = source_for_table(conn, pg_schema, name, bignumeric=supports_bignumeric(client))
            ensure_dataset(client, target.project, target.dataset, bigquery.location)
            ensure_mirror_table(
                client,
                target,
                source.columns,
                description=f"Mirror of PostgreSQL {pg_schema}.{name}",
            )
            result = mirror_changes(conn, client, writer, source, target, delete_mode=delete_mode)
            checks = _check_results(
                conn,
                client,
                source,
                target,
                group=None,
                what=f"{pg_schema}.{name} vs {target.table_id}",
            )
        context.log.info(
            f"Applied {result.rows} changed rows of {pg_schema}.{name} to {target.table_id}."
        )
        return dg.MaterializeResult(metadata=result.metadata(), check_results=checks)

    return mirror
