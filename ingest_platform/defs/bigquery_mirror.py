"""Dagster glue for the BigQuery mirror: one asset per mirrored PostgreSQL table, with checks.

- Dump parents: asset ``bigquery/<app>/<table>`` (group ``<app>_bigquery``) downstream of
  ``dumps/<app>/<table>``, with the same dynamic partitions (``<app>_versions``); materializing
  partition V replaces version V's rows in ``<dataset prefix><app>.<table>``.
- CDC merged tables: asset ``bigquery/cdc/<name>`` (group ``cdc_bigquery``) downstream of
  ``cdc/<name>``, mode ``merge``; soft deletes mirror as ``is_deleted``; a freshness policy.
- CDC change histories (``histories=True``; the change-log kind writes them):
  ``bigquery/cdc/<name>__changes`` downstream of ``cdc/<name>``, appended by change id; the MERGE
  stamps ``_mirrored_at`` (BigQuery's time of arrival, NULL in PostgreSQL, left out of the checks).

`MirrorTranslator.get_asset_spec(MirrorRecord)` makes each whole spec; the upstream's spec comes in
the record. Checks on every mirror, after each run and on their own (partitioned by version for
dumps): ``row_counts`` (all rows and rows not deleted) and ``row_hashes`` (bucketed md5 comparison
naming up to 20 differing keys). A mirror runs only after its PostgreSQL asset's blocking checks
passed. BigQuery dataset names: ``INGEST_BQ_DATASET_PREFIX`` (default empty) + app, or + ``cdc``.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

import dagster as dg
from pydantic import Field

from ingest_platform.bigquery.mirror import (
    IS_DELETED,
    LAST_CHANGE_ID,
    VERSION_COLUMN,
    MirrorTarget,
    dump_source,
    ensure_dataset,
    ensure_mirror_table,
    mirror_changes,
    mirror_dump_version,
    mirror_slice,
    supports_bignumeric,
)
from ingest_platform.bigquery.source import source_for_table
from ingest_platform.bigquery.types import bq_name, bq_table_names
from ingest_platform.cdc.config import CdcTable, ChangeLog
from ingest_platform.cdc.warehouse import CHANGES_COLUMNS, MIRRORED_AT
from ingest_platform.consistency.compare import (
    BigQuerySide,
    PostgresSide,
    compare_counts,
    compare_hashes,
)
from ingest_platform.defs.cdc import CdcTableRecord, CdcTranslator
from ingest_platform.defs.csv_import import partitions_def as csv_partitions
from ingest_platform.defs.csv_import import table_key as csv_table_key
from ingest_platform.defs.dumps import DumpTranslator
from ingest_platform.defs.executor import BIGQUERY_WRITERS
from ingest_platform.defs.metadata import bq_table_metadata
from ingest_platform.defs.names import dagster_name, distinct, key_part, node_name
from ingest_platform.defs.resources import BigQueryResource, PostgresResource
from ingest_platform.defs.schedules import default_status
from ingest_platform.dumps.directory import DumpCatalog
from ingest_platform.migration.csv_directory import ImportTable

COUNTS_CHECK = "row_counts"
HASHES_CHECK = "row_hashes"
REVERIFY_SCHEDULE = "reverify_cdc_mirrors_nightly"
CHANGE_ID = CHANGES_COLUMNS[0][0]  # a change history's key and high-water mark
DEFAULT_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=45), warn_window=timedelta(minutes=20)
)


def dataset_prefix(environ=os.environ) -> str:
    return environ.get("INGEST_BQ_DATASET_PREFIX") or ""


@dataclass(frozen=True)
class MirrorRecord:
    """One mirrored PostgreSQL table: its asset (`upstream`, with its partitions for a dump), and
    the BigQuery table it goes to. Prefixes are resolved when the definitions are built."""

    upstream: dg.AssetSpec
    pg_schema: str
    pg_table: str
    dataset: str
    bq_table: str
    domain: str  # the dump's app, or "cdc"
    history: bool = False  # a CDC change history (<name>__changes), not a merged table
    whole: bool = False  # a warehouse table (CSV imports) mirrored whole on every run

    @property
    def by_version(self) -> bool:
        """A dump table: partitioned by version, each partition mirrored on its own."""
        return self.upstream.partitions_def is not None and not self.whole


@dataclass(frozen=True)
class MirrorTranslator:
    """Asset specs, datasets and tables of mirrors: the one place that names them.

    `prefix`: BigQuery dataset of app A is `prefix + A` (CDC: `prefix + "cdc"`); by default
    INGEST_BQ_DATASET_PREFIX, read when the translator is made. `freshness_policy` goes on the
    mirrors of CDC merged tables (dump mirrors follow dumps, which come when they come); `owners`
    and `tags` on every spec."""

    prefix: str = field(default_factory=dataset_prefix)
    freshness_policy: dg.FreshnessPolicy | None = DEFAULT_FRESHNESS
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)

    def dataset(self, domain: str) -> str:
        return distinct(self.prefix + domain, bq_name(self.prefix + domain))

    def record(
        self,
        upstream: dg.AssetSpec,
        pg_schema: str,
        pg_table: str,
        domain: str,
        history: bool = False,
        whole: bool = False,
    ):
        """The record of one table alone; `_definitions` names the tables of a dataset apart."""
        bq_table = bq_table_names([pg_table])[pg_table]
        return MirrorRecord(
            upstream, pg_schema, pg_table, self.dataset(domain), bq_table, domain, history, whole
        )

    def get_asset_spec(self, record: MirrorRecord) -> dg.AssetSpec:
        upstream = record.upstream
        dump = record.by_version
        how = (
            "partition V replaces version V's rows (Storage Write API, pending streams, one batch "
            "commit)"
            if dump
            else "every run replaces all its rows (pending streams, one batch commit)"
            if record.whole
            else "changes since the mirror's max(_change_id) staged and inserted with one MERGE, "
            "which stamps _mirrored_at (the time the change reached BigQuery)"
            if record.history
            else "changes since the mirror's max(_last_change_id) staged and applied with one "
            "MERGE (soft deletes)"
        )
        return dg.AssetSpec(
            key=dg.AssetKey(["bigquery", key_part(record.domain), key_part(record.pg_table)]),
            deps=[upstream.key],
            partitions_def=upstream.partitions_def if dump else None,
            group_name=f"{dagster_name(record.domain)}_bigquery",
            kinds={"bigquery"},
            automation_condition=dg.AutomationCondition.eager()
            & dg.AutomationCondition.all_deps_blocking_checks_passed(),
            # Dumps and CSV files come when they come; CDC merges run all the time.
            freshness_policy=None if dump or record.whole else self.freshness_policy,
            owners=list(self.owners),
            tags={
                "ingest/source": "dump" if dump else "csv_import" if record.whole else "cdc",
                **self.tags,
            },
            description=(
                f"BigQuery mirror `{record.dataset}.{record.bq_table}` of PostgreSQL "
                f"`{record.pg_schema}.{record.pg_table}` ({upstream.key.to_user_string()}); "
                f"{how}. Follows its PostgreSQL asset through `bigquery_mirror_sensor`."
            ),
            metadata={"dagster/table_name": f"{record.dataset}.{record.bq_table}"},
        )


def _checks(record: MirrorRecord, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    partitions_def = record.upstream.partitions_def if record.by_version else None
    return [
        dg.AssetCheckSpec(
            COUNTS_CHECK,
            asset=key,
            partitions_def=partitions_def,
            description=(
                "Rows in PostgreSQL == rows in BigQuery, all and not deleted"
                + (", for this partition's version." if partitions_def else ".")
            ),
        ),
        dg.AssetCheckSpec(
            HASHES_CHECK,
            asset=key,
            partitions_def=partitions_def,
            description=(
                "Per-row md5 of a canonical text form, compared in key buckets; lists up to 20 "
                "differing keys."
            ),
        ),
    ]


def _mirror_checks(record: MirrorRecord, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The mirror's checks: after each mirror run, and on their own (Execute; the CDC mirrors'
    also nightly). A dump mirror's partition is judged on its version alone."""

    @dg.multi_asset_check(name=node_name("check", key.path), specs=_checks(record, key))
    def mirror_checks(
        context: dg.AssetCheckExecutionContext,
        postgres: PostgresResource,
        bigquery: BigQueryResource,
    ):
        version = context.partition_key if record.by_version else None
        with postgres.get_connection() as conn, bigquery.get_client() as client:
            target = MirrorTarget(client.project, record.dataset, record.bq_table)
            bignumeric = supports_bignumeric(client)
            label = f"{record.pg_schema}.{record.pg_table}"
            if version is None:
                source = source_for_table(
                    conn,
                    record.pg_schema,
                    record.pg_table,
                    bignumeric=bignumeric,
                    # BigQuery's arrival time: NULL in PostgreSQL, so never compared.
                    exclude=(MIRRORED_AT,) if record.history else (),
                )
                what = f"{label} vs {target.table_id}"
            else:
                source = dump_source(
                    conn, record.pg_schema, record.pg_table, version, bignumeric=bignumeric
                )
                what = f"{label} version {version} vs {target.table_id}"
            results = _check_results(
                conn,
                client,
                source,
                target,
                group=VERSION_COLUMN if version is not None else None,
                what=what,
                asset_key=key,
            )
        yield from results

    return mirror_checks


def _check_results(
    conn, client, source, target: MirrorTarget, *, group: str | None, what: str, asset_key
) -> list[dg.AssetCheckResult]:
    deleted = IS_DELETED if IS_DELETED in {c.name for c in source.columns} else None
    counts = compare_counts(
        PostgresSide(conn, source),
        BigQuerySide(client, target.ref, source),
        group=group,
        deleted=deleted,
        what=what,
    )
    hashes = compare_hashes(
        PostgresSide(conn, source), BigQuerySide(client, target.ref, source), what=what
    )
    totals = counts.totals()
    differing = [{**d.key, "status": d.status, "detail": d.detail} for d in hashes.differences]
    return [
        dg.AssetCheckResult(
            asset_key=asset_key,
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
            asset_key=asset_key,
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


# ----------------------------------------------------------------------------- definitions


def build_mirror_definitions(
    catalog: DumpCatalog,
    translator: MirrorTranslator | None = None,
    dump_translator: DumpTranslator | None = None,
    *,
    cdc_tables: Iterable = (),
    cdc_schema: str = "cdc",
    cdc_translator: CdcTranslator | None = None,
    cdc_histories: bool = False,
    csv_tables: Iterable[ImportTable] = (),
    reverify_schedules_on: bool = False,
) -> dg.Definitions:
    """Mirror assets for every dump table of the catalog (and, if given, CDC merged tables, with
    `cdc_histories` their change histories too, and the tables of CSV imports, mirrored whole;
    dataset: prefix + their schema), and the nightly re-verify schedules (stopped unless
    `reverify_schedules_on`)."""
    translator = translator or MirrorTranslator()
    dump_translator = dump_translator or DumpTranslator()
    records = [
        translator.record(
            dump_translator.get_asset_spec(dump_table), dump_table.pg_schema, table, app
        )
        for app, tables in catalog.tables_by_app().items()
        for table in tables
        for dump_table in [dump_translator.record(app, table)]
    ]
    records += _cdc_records(cdc_tables, cdc_schema, translator, cdc_translator, cdc_histories)
    records += [
        translator.record(
            dg.AssetSpec(csv_table_key(table), partitions_def=csv_partitions(table)),
            table.schema,
            table.table,
            table.schema,
            whole=True,
        )
        for table in csv_tables
    ]
    return _definitions(records, translator, reverify_schedules_on)


def build_cdc_mirror_definitions(
    merged_tables: Iterable,
    *,
    pg_schema: str = "cdc",
    translator: MirrorTranslator | None = None,
    cdc_translator: CdcTranslator | None = None,
    histories: bool = False,
) -> dg.Definitions:
    """Mirror assets for CDC merged tables (mode ``merge``, soft deletes), and with `histories`
    their change histories. Each item is a table name or a ``CdcTable``."""
    translator = translator or MirrorTranslator()
    return _definitions(
        _cdc_records(merged_tables, pg_schema, translator, cdc_translator, histories), translator
    )


def _cdc_records(
    merged_tables: Iterable,
    pg_schema: str,
    translator: MirrorTranslator,
    cdc_translator: CdcTranslator | None,
    histories: bool = False,
) -> list[MirrorRecord]:
    cdc_translator = cdc_translator or CdcTranslator()
    records = []
    for item in merged_tables:
        table = CdcTable("", "", source_table=item) if isinstance(item, str) else item
        upstream = cdc_translator.get_asset_spec(
            CdcTableRecord(table, "merged", pg_schema, ChangeLog())
        )
        records.append(translator.record(upstream, pg_schema, table.merged_table, "cdc"))
        if histories:  # written by the same merge, so downstream of the same asset
            records.append(
                translator.record(upstream, pg_schema, table.changes_table, "cdc", history=True)
            )
    return records


def _named_apart(records: list[MirrorRecord]) -> list[MirrorRecord]:
    """Records whose BigQuery tables are distinct within each dataset (`bq_table_names`), or
    SchemaError naming the two tables that would share one."""
    by_dataset: dict[str, list[str]] = {}
    for record in records:
        by_dataset.setdefault(record.dataset, []).append(record.pg_table)
    names = {dataset: bq_table_names(tables, dataset) for dataset, tables in by_dataset.items()}
    return [replace(r, bq_table=names[r.dataset][r.pg_table]) for r in records]


def _definitions(
    records: list[MirrorRecord], translator: MirrorTranslator, reverify_schedules_on: bool = False
) -> dg.Definitions:
    assets, checks = [], []
    records = _named_apart(records)
    for record in records:
        spec = translator.get_asset_spec(record)
        assets.append(_mirror_asset(record, spec))
        checks.append(_mirror_checks(record, spec.key))
    if not assets:
        return dg.Definitions()
    mirrors = [key for assets_def in assets for key in assets_def.keys]
    # The mirror's `dagster/column_schema` of the last two runs compared (warns on a change).
    checks += dg.build_column_schema_change_checks(assets=mirrors)
    # Mirrors follow their PostgreSQL assets: a new version or merge is mirrored without a click.
    follow = dg.AutomationConditionSensorDefinition(
        "bigquery_mirror_sensor",
        target=dg.AssetSelection.assets(*mirrors),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes each BigQuery mirror (and its checks) after its PostgreSQL asset "
        "updates and its blocking checks passed.",
    )
    schedules = _reverify_schedules(records, assets, reverify_schedules_on)
    return dg.Definitions(assets=assets, asset_checks=checks, sensors=[follow], schedules=schedules)


class MirrorConfig(dg.Config):
    """Run config of a mirror asset (Launchpad: `ops: {mirror_<key>: {config: ...}}`)."""

    full_refresh: bool = Field(
        default=False,
        description="CDC mirrors: re-send every row and delete the BigQuery rows PostgreSQL lacks, "
        "in one MERGE (repairs what a failed row_counts/row_hashes check found). Dump mirrors "
        "always replace the whole version of their partition, so this changes nothing there.",
    )


def _reverify_schedules(
    records: list[MirrorRecord], assets: list[dg.AssetsDefinition], on: bool
) -> list[dg.ScheduleDefinition]:
    """Nightly re-runs of the checks (they also run after each merge or mirror run, and from the
    UI's Execute button): one schedule for the CDC merged tables and their mirrors, and one per
    dump application that asks for one check-only run per loaded version (its checks are
    partitioned by version, and a run has one partition)."""
    schedules = []
    cdc = [r.upstream.key for r in records if r.upstream.partitions_def is None]
    unpartitioned = [a.key for a in assets if a.partitions_def is None]
    if unpartitioned:
        schedules.append(
            dg.ScheduleDefinition(
                name=REVERIFY_SCHEDULE,
                cron_schedule="0 3 * * *",
                target=dg.AssetSelection.checks_for_assets(*unpartitioned, *cdc),
                default_status=default_status(on),
                description="Re-runs the checks of the CDC merged tables (`matches_source`, ...) "
                "and of their mirrors every night.",
            )
        )
    by_partitions: dict[str, list[dg.AssetsDefinition]] = {}
    for assets_def in assets:
        if isinstance(assets_def.partitions_def, dg.DynamicPartitionsDefinition):
            by_partitions.setdefault(assets_def.partitions_def.name or "", []).append(assets_def)
    for partitions_name, app_assets in by_partitions.items():
        schedules.append(_reverify_versions_schedule(partitions_name, app_assets, on))
    return schedules


def reverify_schedule_name(partitions_name: str) -> str:
    return f"reverify_{partitions_name}_mirrors_nightly"


def _reverify_versions_schedule(
    partitions_name: str, assets: list[dg.AssetsDefinition], on: bool
) -> dg.ScheduleDefinition:
    check_keys = [
        dg.AssetCheckKey(key, name)
        for assets_def in assets
        for key in assets_def.keys
        for name in (COUNTS_CHECK, HASHES_CHECK)
    ]

    @dg.schedule(
        name=reverify_schedule_name(partitions_name),
        cron_schedule="30 3 * * *",
        target=dg.AssetSelection.checks(*check_keys),
        default_status=default_status(on),
        description=f"Re-runs the mirror checks of every version in `{partitions_name}` every "
        "night: one check-only run per version.",
    )
    def reverify(context: dg.ScheduleEvaluationContext):
        versions = context.instance.get_dynamic_partitions(partitions_name)
        if not versions:
            return dg.SkipReason(f"No versions in {partitions_name} yet.")
        stamp = context.scheduled_execution_time.date().isoformat()
        return [
            dg.RunRequest(
                run_key=f"{version}@{stamp}",
                # The partition as a run tag: a check-only job has no asset to validate a
                # `partition_key` against (Dagster 1.13), the checks read the tag alike.
                tags={"dagster/partition": version},
                asset_selection=[],
                asset_check_keys=check_keys,
            )
            for version in versions
        ]

    return reverify


def _mirror_asset(record: MirrorRecord, spec: dg.AssetSpec) -> dg.AssetsDefinition:
    dump = spec.partitions_def is not None
    schema, table, upstream = record.pg_schema, record.pg_table, record.upstream.key

    @dg.multi_asset(name=node_name("mirror", spec.key.path), specs=[spec], pool=BIGQUERY_WRITERS)
    def mirror(
        context: dg.AssetExecutionContext,
        config: MirrorConfig,
        postgres: PostgresResource,
        bigquery: BigQueryResource,
    ):
        with (
            postgres.get_connection() as conn,
            bigquery.get_client() as client,
            bigquery.get_write_client() as writer,
        ):
            target = MirrorTarget(client.project, record.dataset, record.bq_table)
            bignumeric = supports_bignumeric(client)
            if dump:
                version = context.partition_key
                result = mirror_dump_version(
                    conn,
                    client,
                    writer,
                    schema,
                    table,
                    version,
                    target,
                    location=bigquery.location,
                    row_format=bigquery.row_format,
                )
                source = dump_source(conn, schema, table, version, bignumeric=bignumeric)
                done, extra = f"version {version}", {"version": version}
            else:
                source = source_for_table(conn, schema, table, bignumeric=bignumeric)
                ensure_dataset(client, target.project, target.dataset, bigquery.location)
                ensure_mirror_table(
                    client,
                    target,
                    source.columns,
                    description=f"Mirror of PostgreSQL {schema}.{table}",
                )
            if record.whole:
                result = mirror_slice(
                    conn,
                    client,
                    writer,
                    source,
                    target,
                    slice_column=None,
                    slice_value=None,
                    row_format=bigquery.row_format,
                )
                done, extra = "all rows", {}
            elif not dump:
                result = mirror_changes(
                    conn,
                    client,
                    writer,
                    source,
                    target,
                    delete_mode="soft",
                    full=config.full_refresh,
                    row_format=bigquery.row_format,
                    change_column=CHANGE_ID if record.history else LAST_CHANGE_ID,
                    stamp_column=MIRRORED_AT if record.history else None,
                )
                done = "all rows, full refresh" if config.full_refresh else "changes"
                extra = {"full_refresh": config.full_refresh}
            standard = bq_table_metadata(
                target.project,
                target.dataset,
                target.table,
                source.columns,
                source.key,
                upstream,
                result.rows if dump or record.whole else None,
            )
        context.log.info(
            f"Mirrored {result.rows} rows ({done}) of {schema}.{table} to {target.table_id}."
        )
        return dg.MaterializeResult(metadata={**result.metadata(), **extra, **standard})

    return mirror
