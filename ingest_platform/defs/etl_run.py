"""The Dagster run id for the ETL log (``ingest_platform.postgres.etl_log``)."""

from __future__ import annotations

import dagster as dg

from ingest_platform.postgres import etl_log


class EtlRunScoped:
    """Mixin for the resources through which pipelines write the warehouse: while a step runs,
    the ETL log's rows it writes carry its Dagster run id (the core cannot ask dagster)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        etl_log.set_run_id(context.run.run_id if context.run else None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        etl_log.set_run_id(None)
