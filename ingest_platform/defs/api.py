"""The REST intake API's rejects (ingest_platform/api/) as a Dagster asset with a check.

`api/rejects` reads the API's log tables in the warehouse: records received and rejected in the
last hour, every reject so far, and the latest rejects (time, user, table, record index, field,
reason) as a table in its metadata. Its check `reject_share_below_limit` fails when the rejected
share of the records received in the last hour exceeds `reject_share_limit` (INGEST_API_CONFIG;
default 5 %); an hour without requests passes. Materialized every 15 minutes when the automation
daemon runs, and on demand.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ingest_platform.api import store
from ingest_platform.api.config import ApiConfig
from ingest_platform.defs.resources import PostgresResource

GROUP = "api"
REJECTS_KEY = dg.AssetKey([GROUP, "rejects"])
CHECK = "reject_share_below_limit"


def build_api_definitions(
    config: ApiConfig, owners: list[str] | None = None, tags: dict[str, str] | None = None
) -> dg.Definitions:
    limit = config.reject_share_limit

    @dg.asset(
        key=REJECTS_KEY,
        group_name=GROUP,
        owners=owners or [],
        tags=tags or {},
        kinds={"postgres", "fastapi"},
        description="Records the REST intake API rejected (table "
        f"{config.schema}.rejects): who sent what, which field, why.",
        automation_condition=dg.AutomationCondition.on_cron("*/15 * * * *"),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=REJECTS_KEY,
                description=f"At most {limit:.1%} of the records received in the last hour "
                "were rejected.",
            )
        ],
    )
    def api_rejects(context: dg.AssetExecutionContext, postgres: PostgresResource):
        since = datetime.now(UTC) - timedelta(hours=1)
        with postgres.get_connection() as conn:
            store.ensure_tables(conn, config.schema)
            summary = store.reject_summary(conn, config.schema, since)
        rows = "\n".join(
            f"| {at:%Y-%m-%d %H:%M:%S} | {user} | {table} | {index} | {field or ''} | "
            f"{_cell(reason)} |"
            for at, user, table, index, field, reason in summary.latest
        )
        latest = (
            "| time (UTC) | user | table | record | field | reason |\n|---|---|---|---|---|---|\n"
            + rows
            if rows
            else "none"
        )
        context.log.info(
            f"last hour: {summary.rejected} of {summary.received} records rejected "
            f"({summary.share:.2%}); {summary.total_rejects} rejects in all"
        )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.total_rejects,
                "received_last_hour": summary.received,
                "rejected_last_hour": summary.rejected,
                "reject_share_last_hour": round(summary.share, 4),
                "latest_rejects": dg.MetadataValue.md(latest),
            }
        )
        yield dg.AssetCheckResult(
            check_name=CHECK,
            passed=summary.share <= limit,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{summary.rejected} of {summary.received} records rejected in the last hour "
                f"({summary.share:.2%}; limit {limit:.2%})"
            ),
            metadata={
                "received": summary.received,
                "rejected": summary.rejected,
                "share": round(summary.share, 4),
                "limit": limit,
            },
        )

    return dg.Definitions(assets=[api_rejects])


def _cell(text: str) -> str:
    # A reason quotes the sender's values: keep the Markdown table intact.
    return text.replace("|", "\\|").replace("\n", " ")[:200]
