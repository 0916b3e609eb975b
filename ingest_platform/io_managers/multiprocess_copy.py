"""The multiprocess COPY I/O manager: an asset hands it a picklable load plan, it loads the plan.

Assets never return generators (they do not pickle, and Dagster treats a returned generator as an
event stream); they return a `TableLoadPlan`, and the worker processes build the generators.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from ingest_platform.defs.etl_run import EtlRunScoped
from ingest_platform.defs.metadata import pg_staged_column_schema, pg_table_metadata
from ingest_platform.loading.dump_versions import LoadReport, TableLoadPlan, load_table_version
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS


class MultiprocessCopyIOManager(EtlRunScoped, dg.ConfigurableIOManager):
    """Loads a dump table version into PostgreSQL with `processes` COPY workers, atomically."""

    dsn: str = Field(description="Warehouse DSN; give it as EnvVar('INGEST_PG_DSN').")
    processes: int = Field(
        default=2, description="Worker processes per table (spawned, one connection each)."
    )
    terminate_blockers_after: float | None = Field(
        default=DEFAULT_AFTER_SECONDS,
        description="Seconds the attach (a short ACCESS EXCLUSIVE lock on the parent) waits for "
        "readers' locks before terminating the backends that hold them, named in the run's log; "
        "null: wait.",
    )

    def handle_output(self, context: dg.OutputContext, obj: TableLoadPlan | None) -> None:
        if obj is None:  # a version without the table: nothing to load
            return
        if not isinstance(obj, TableLoadPlan):
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return a TableLoadPlan, "
                f"got {type(obj).__name__}"
            )
        report = load_table_version(
            self.dsn,
            obj,
            processes=self.processes,
            terminate_blockers_after=self.terminate_blockers_after,
            logger=context.log,
        )
        with connect(self.dsn) as conn:
            table = pg_table_metadata(conn, self.dsn, obj.pg_schema, report.table, report.rows)
            if not report.visible:  # the parent's columns as this version's attach makes them
                staged = pg_staged_column_schema(
                    conn, obj.pg_schema, report.table, report.load_table
                )
                if staged is not None:
                    table["dagster/column_schema"] = staged
        context.add_output_metadata({**load_metadata(report, obj), **table})

    def load_input(self, context: dg.InputContext) -> None:
        # Required by IOManager; no asset takes a dump table as an input (they read PostgreSQL).
        raise NotImplementedError(f"{context.asset_key.to_user_string()} is not an asset input")


def load_metadata(report: LoadReport, plan: TableLoadPlan) -> dict:
    return {
        "rows": dg.MetadataValue.int(report.rows),
        "bytes": dg.MetadataValue.int(report.bytes),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "rows_per_second": dg.MetadataValue.float(round(report.rows_per_second, 1)),
        "processes": dg.MetadataValue.int(report.processes),
        "child_table": dg.MetadataValue.text(f"{plan.pg_schema}.{report.child_table}"),
        "parent_table": dg.MetadataValue.text(f"{plan.pg_schema}.{report.table}"),
        "schema_changes": dg.MetadataValue.md(
            "\n".join(f"- {c}" for c in report.schema_changes) or "none"
        ),
        "replaced_earlier_load": dg.MetadataValue.bool(report.replaced_earlier_load),
        "rows_quarantined": dg.MetadataValue.int(report.quarantined),
        # False: staged; the version becomes visible when the tables it waits for load too.
        "visible": dg.MetadataValue.bool(report.visible),
        **(
            {"waiting_for": dg.MetadataValue.text(", ".join(report.waiting_for))}
            if report.waiting_for
            else {}
        ),
    }
