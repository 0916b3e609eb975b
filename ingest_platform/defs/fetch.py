"""Direct fetches from source databases as Dagster assets (``ingest_platform.fetch``).

One multi-asset per source of the fetch config (INGEST_FETCH_CONFIG): an asset
``dumps/<app>/<table>`` per table, the same keys and warehouse tables a dump of the app would
have (``dumps/<app>`` schema, parent/child per version), so an app is either dumped or fetched in
one deployment (two definitions of a key do not load). The source's tables are materialized
together: they come from one snapshot and become visible together, as a dump version. Run config
``incremental: true`` pulls incrementally (the CLI's --incremental); ``fetch_<source>_job`` and
``fetch_<source>_incremental_job`` are the two jobs to schedule. A source given by ``pattern`` is
listed once when the definitions load; an unreachable one is left out and logged.
"""

import logging
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from ingest_platform.defs.executor import POSTGRES_WRITERS
from ingest_platform.defs.names import dagster_name, key_part
from ingest_platform.defs.postgres_resources import PostgresResource
from ingest_platform.errors import IngestError
from ingest_platform.fetch.config import SourceConfig, load_config
from ingest_platform.fetch.pull import fetch
from ingest_platform.fetch.sources import open_source

GROUP = "dumps"
LOGGER = logging.getLogger(__name__)


class FetchConfig(dg.Config):
    incremental: bool = False


def table_key(app: str, table: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, key_part(app), key_part(table)])


def source_tables(config: SourceConfig) -> list[str]:
    if config.tables:
        return list(config.tables)
    source = open_source(config)
    try:
        return source.list_tables()
    finally:
        source.close()


def build_fetch_definitions(
    config_file: Path, owners: tuple[str, ...] = (), tags: Mapping[str, str] | None = None
) -> dg.Definitions:
    assets, jobs = [], []
    for name, config in load_config(config_file).items():
        try:
            tables = source_tables(config)
        except IngestError as error:
            LOGGER.warning(f"Fetch source {name} left out of the definitions: {error}")
            continue
        assets.append(_source_asset(config, tables, owners, dict(tags or {})))
        selection = dg.AssetSelection.assets(*(table_key(config.app, t) for t in tables))
        jobs.append(dg.define_asset_job(f"fetch_{dagster_name(name)}_job", selection))
        jobs.append(
            dg.define_asset_job(
                f"fetch_{dagster_name(name)}_incremental_job",
                selection,
                config={"ops": {f"fetch_{dagster_name(name)}": {"config": {"incremental": True}}}},
            )
        )
    return dg.Definitions(assets=assets, jobs=jobs)


def _source_asset(
    source: SourceConfig, tables: list[str], owners: tuple[str, ...], tags: dict[str, str]
) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            table_key(source.app, table),
            group_name=GROUP,
            description=(
                f'Table "{table}" fetched from source {source.name} ({source.kind}) into '
                f'"{source.app}"."{table}", a child table per version.'
            ),
            kinds={"postgres", source.kind},
            owners=list(owners),
            tags={**tags, "ingest/fetch_source": dagster_name(source.name)},
            metadata={"dagster/table_name": f"{source.app}.{table}"},
        )
        for table in tables
    ]

    @dg.multi_asset(
        name=f"fetch_{dagster_name(source.name)}",
        specs=specs,
        can_subset=False,
        pool=POSTGRES_WRITERS,
    )
    def fetch_source(
        context: dg.AssetExecutionContext, postgres: PostgresResource, config: FetchConfig
    ):
        reports = fetch(postgres.dsn, source, config.incremental, logger=context.log)
        for report in reports:
            yield dg.MaterializeResult(
                asset_key=table_key(source.app, report.table),
                metadata={
                    "dagster/row_count": report.rows,
                    "rows": report.rows,
                    "mode": report.mode,
                    "version": report.version,
                    "child_table": report.child_table,
                    "seconds": report.seconds,
                    "rows_per_second": report.rows_per_second,
                    "deleted": report.deleted,
                    "schema_changes": "\n".join(f"- {c}" for c in report.schema_changes) or "none",
                    "checks": ", ".join(report.checks) or "-",
                },
            )

    return fetch_source
