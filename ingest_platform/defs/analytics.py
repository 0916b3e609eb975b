"""Analytical models (ingest_platform/analytics) as Dagster assets.

Each `<name>.sql` of the models directory is the asset `analytics/<name>` (group `analytics`):
downstream of the BigQuery mirrors its SQL reads (`bigquery/<schema>/<table>`, found by parsing,
not declared), materialized in BigQuery as `<prefix>analytics.<name>`, refreshed when a mirror it
reads changes (eager automation) and given the header's freshness policy. Its check
`matches_postgres` runs the same SQL on PostgreSQL and compares the answers with the comparison
engine, naming the differing keys. A model file that does not load is still an asset, whose every
run fails with the file's error: the UI shows it, and the other models load as usual.
"""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from ingest_platform.analytics.models import Model, ModelError, load_models
from ingest_platform.analytics.run import check_sources, materialize, prove
from ingest_platform.defs.executor import BIGQUERY_WRITERS
from ingest_platform.defs.names import key_part
from ingest_platform.defs.resources import BigQueryResource, PostgresResource

GROUP = "analytics"
CHECK = "matches_postgres"
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "demo" / "analytics"


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, key_part(name)])


def mirror_key(schema: str, table: str) -> dg.AssetKey:
    """The mirror asset of a PostgreSQL table (see MirrorTranslator.get_asset_spec)."""
    return dg.AssetKey(["bigquery", key_part(schema), key_part(table)])


def build_analytics_definitions(
    directory: Path,
    dataset_prefix: str = "",
    owners: list[str] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.Definitions:
    models, errors = load_models(directory)
    assets = [_model_asset(m, dataset_prefix, owners or [], tags or {}) for m in models]
    assets += [_broken_asset(error, owners or [], tags or {}) for error in errors]
    return dg.Definitions(assets=assets)


def _model_asset(model: Model, prefix: str, owners: list[str], tags: dict[str, str]):
    key = model_key(model.name)
    statement = model.bigquery_sql("<project>", prefix)

    @dg.asset(
        key=key,
        deps=[mirror_key(schema, table) for schema, table in model.tables],
        group_name=GROUP,
        kinds={"bigquery", "sql"},
        description=model.description or f"Analytical model {model.path.name}.",
        owners=[model.owner] if model.owner else owners,
        tags={"ingest/source": "analytics", **tags},
        automation_condition=dg.AutomationCondition.eager(),
        pool=BIGQUERY_WRITERS,
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=model.freshness_hours)
        )
        if model.freshness_hours
        else None,
        metadata={
            "model_file": str(model.path),
            "grain": ", ".join(model.grain) or "(whole row)",
            "materialized": model.materialized,
            "bigquery_sql": dg.MetadataValue.md(f"```sql\n{statement}\n```"),
            "dagster/table_name": f"{prefix}{GROUP}.{model.name}",
        },
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=key,
                description="PostgreSQL gives the same answer to the model's SQL "
                f"(keys: {', '.join(model.grain) or 'whole rows'}; floats to "
                f"{model.float_decimals} decimals).",
            )
        ],
    )
    def analytics_model(
        context: dg.AssetExecutionContext, postgres: PostgresResource, bigquery: BigQueryResource
    ):
        try:
            with bigquery.get_client() as client, postgres.get_connection() as conn:
                check_sources(conn, client, model, prefix)
                run = materialize(client, model, prefix)
                context.log.info(
                    f"{run.table_id}: {run.rows} rows in {run.seconds:.2f} s "
                    f"({run.bytes_processed} bytes processed)"
                )
                yield dg.MaterializeResult(
                    metadata={
                        "dagster/row_count": run.rows,
                        "bytes_processed": run.bytes_processed,
                        "seconds": round(run.seconds, 3),
                        "bigquery_sql": dg.MetadataValue.md(f"```sql\n{run.bigquery_sql}\n```"),
                        "dagster/table_name": run.table_id,
                    }
                )
                comparison = prove(conn, client, model, run.table_id)
        except ModelError as error:
            raise dg.Failure(str(error)) from None
        yield dg.AssetCheckResult(
            check_name=CHECK,
            passed=comparison.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"PostgreSQL and BigQuery agree on {comparison.left_rows} rows."
                if comparison.passed
                else "PostgreSQL and BigQuery disagree: see the differing keys."
            ),
            metadata={"comparison": dg.MetadataValue.md(comparison.markdown())},
        )

    return analytics_model


def _broken_asset(error: ModelError, owners: list[str], tags: dict[str, str]):
    """A model file that does not load: an asset whose runs fail with the file's error."""
    message = str(error)
    name = Path(message.split(":", 1)[0]).stem

    @dg.asset(
        key=model_key(name),
        group_name=GROUP,
        kinds={"bigquery", "sql"},
        description=f"Does not load: {message}",
        owners=owners,
        tags={"ingest/source": "analytics", **tags},
        metadata={"error": message},
    )
    def broken_model():
        raise dg.Failure(message)

    return broken_model
