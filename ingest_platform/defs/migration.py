"""A database migration (ingest_platform/migration/) as Dagster assets.

- `migration/schema`: `migrate schema` (every object, keys included), with the blocking check
  `schema_matches_source` (the schema diff of source and target is empty).
- `migration/<schema>/<table>`: one spec per migrated table in one multi-asset that runs
  `migrate data`, with the blocking check `rows_match_source` per table (the comparison engine).

The tables are copied together, not subset: one exported snapshot makes every table consistent
with the others, which a copy of a few tables at another instant would break. Because the schema
asset creates the keys too (so its check can prove the diff empty before any data flows), the data
step copies parents first into tables that already have their keys.

Source and target are the resources `migration_source` and `migration_target`, whose DSNs are
environment variables (`dg.EnvVar`): the UI, logs and metadata show `host:port/dbname` only.
"""

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from psycopg.conninfo import conninfo_to_dict

from ingest_platform.defs.executor import POSTGRES_WRITERS
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.migration import data, plan, schema, verify
from ingest_platform.postgres.connection import libpq_dsn, server_address

GROUP = "migration"
SCHEMA_KEY = dg.AssetKey([GROUP, "schema"])


def where(dsn: str) -> str:
    """`host:port/dbname` of a DSN, for metadata. Never the user or the password."""
    return f"{server_address(dsn)}/{conninfo_to_dict(libpq_dsn(dsn)).get('dbname') or ''}"


def table_key(label: str) -> dg.AssetKey:
    schema_name, _, table = label.partition(".")
    return dg.AssetKey([GROUP, schema_name, table])


@dataclass(frozen=True)
class MigrationSettings:
    """What to migrate. `tables` ("schema.table") become assets; the data step copies every table
    of `schemas` (all user schemas when empty) under one snapshot all the same."""

    tables: Sequence[str]
    schemas: Sequence[str] = ()
    grants: bool = True
    replace: bool = False
    jobs: int = 2
    owners: Sequence[str] = ()
    tags: dict[str, str] = field(default_factory=dict)


def build_migration_definitions(
    settings: MigrationSettings, source_env: str, target_env: str
) -> dg.Definitions:
    """The assets and checks of one migration, and its two resources (DSNs read from
    `source_env` and `target_env` when a run starts)."""
    common: dict = {
        "group_name": GROUP,
        "owners": list(settings.owners),
        "tags": dict(settings.tags),
    }

    def servers(source: PostgresResource, target: PostgresResource) -> dict:
        return {"source": where(source.dsn), "target": where(target.dsn)}

    def make_plan(source: PostgresResource, target: PostgresResource, workdir: str) -> plan.Plan:
        return plan.make_plan(
            source.dsn, target.dsn, list(settings.schemas), Path(workdir), settings.grants
        )

    @dg.asset(
        key=SCHEMA_KEY,
        description="The source's schemas recreated on the target (`migrate schema`).",
        check_specs=[
            dg.AssetCheckSpec(
                "schema_matches_source",
                asset=SCHEMA_KEY,
                blocking=True,
                description="The schema diff of source and target is empty.",
            )
        ],
        **common,
    )
    def migration_schema(
        context: dg.AssetExecutionContext,
        migration_source: PostgresResource,
        migration_target: PostgresResource,
    ) -> dg.MaterializeResult:
        with tempfile.TemporaryDirectory(prefix="ingest_migrate_") as workdir:
            made = make_plan(migration_source, migration_target, workdir)
            context.log.info(made.text())
            done = schema.migrate_schema(made, replace=settings.replace)
        context.log.info(done)
        differences = verify.schema_differences(
            migration_source.dsn, migration_target.dsn, made.schemas, settings.grants
        )
        return dg.MaterializeResult(
            metadata={
                **servers(migration_source, migration_target),
                "schemas": ", ".join(made.schemas),
                "target_state_before": made.state,
                "objects": len(made.toc),
                "result": done,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="schema_matches_source",
                    passed=not differences,
                    metadata={
                        "differences": len(differences),
                        "first_differences": dg.MetadataValue.md(
                            "\n".join(f"- {d}" for d in differences[:20]) or "none"
                        ),
                    },
                )
            ],
        )

    specs = [
        dg.AssetSpec(
            table_key(label),
            deps=[SCHEMA_KEY],
            description=f"Rows of {label} copied from the source (`migrate data`).",
            **common,
        )
        for label in settings.tables
    ]

    @dg.multi_asset(
        name="migration_tables",
        pool=POSTGRES_WRITERS,
        specs=specs,
        check_specs=[
            dg.AssetCheckSpec(
                "rows_match_source",
                asset=spec.key,
                blocking=True,
                description="Bucket hashes of every row agree on source and target.",
            )
            for spec in specs
        ],
    )
    def migration_tables(
        context: dg.AssetExecutionContext,
        migration_source: PostgresResource,
        migration_target: PostgresResource,
    ):
        wanted = set(settings.tables)
        with tempfile.TemporaryDirectory(prefix="ingest_migrate_") as workdir:
            made = make_plan(migration_source, migration_target, workdir)
            copies = data.migrate_data(
                made,
                jobs=settings.jobs,
                replace=settings.replace,
                on_table=lambda copy: context.log.info(copy.line),
            )
        copied = {c.table: c for c in copies}
        missing = sorted(wanted - set(copied))
        if missing:
            raise dg.Failure(
                f"Table(s) {', '.join(missing)} are not in the source's schemas "
                f"{', '.join(made.schemas)}: fix the migration's `tables`."
            )
        for copy in copies:
            if copy.table not in wanted:
                context.log.info(f"{copy.line} (copied with the others; not an asset)")
        for label in settings.tables:
            copy = copied[label]
            yield dg.MaterializeResult(
                asset_key=table_key(label),
                metadata={
                    **servers(migration_source, migration_target),
                    "dagster/row_count": copy.rows,
                    "dagster/table_name": label,
                    "rows": copy.rows,
                    "mb": round(copy.bytes / 1e6, 3),
                    "seconds": round(copy.seconds, 3),
                    "rows_per_second": round(copy.rows / max(copy.seconds, 1e-9)),
                },
            )
        for label in settings.tables:
            schema_name, _, table = label.partition(".")
            comparison = verify.compare_table(
                migration_source.dsn, migration_target.dsn, schema_name, table
            )
            yield dg.AssetCheckResult(
                asset_key=table_key(label),
                check_name="rows_match_source",
                passed=comparison.passed,
                metadata={
                    "source_rows": comparison.left_rows,
                    "target_rows": comparison.right_rows,
                    "buckets": comparison.buckets,
                    "differing_buckets": comparison.differing_buckets,
                    "differences": dg.MetadataValue.md(
                        "\n".join(
                            f"- {d.key} {d.status} {d.detail}".rstrip()
                            for d in comparison.differences[:20]
                        )
                        or "none"
                    ),
                },
            )

    return dg.Definitions(
        assets=[migration_schema, migration_tables],
        resources={
            "migration_source": PostgresResource(dsn=dg.EnvVar(source_env)),
            "migration_target": PostgresResource(dsn=dg.EnvVar(target_env)),
        },
    )
