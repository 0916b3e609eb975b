"""Change data capture: a django-models-logging change log -> staging -> merged tables, exactly
once.

Pure Python (no Dagster). Per tracked table (``config``):

1. ``source.advance_horizon``: the safe horizon, the largest change id below which no uncommitted
   change-log row can hide (a plain "id > last id" watermark skips late-committing lower ids).
2. ``pipeline.stage_changes``: in one REPEATABLE READ snapshot of the source, validate the changes
   in (watermark, horizon], reduce them to the last action per object and stream the current rows
   with COPY TO STDOUT -> COPY FROM STDIN into ``<schema>."<table>__staging"``.
3. ``pipeline.merge_staged``: one transaction inserts/updates/soft-deletes into
``<schema>."<table>"``
   and moves the watermark; then staging is emptied.
``checks`` compares merged and source (counts, per-row hashes, differing keys); a demo source
with a workload is ``ingest_platform.demo.cdc_app``. The docstrings of ``source``, ``warehouse`` and
``pipeline`` say what happens under the hood: locks, transactions, what a crash leaves.
"""

from ingest_platform.cdc.config import (
    CdcConfig,
    CdcTable,
    cdc_config_from_env,
    cdc_tables_from_env,
    source_dsn_from_env,
)
from ingest_platform.cdc.errors import ChangeLogError
from ingest_platform.cdc.pipeline import (
    MergeResult,
    StageResult,
    merge_staged,
    pending_tables,
    run_all,
    run_table,
    stage_changes,
)

__all__ = [
    "CdcConfig",
    "CdcTable",
    "ChangeLogError",
    "MergeResult",
    "StageResult",
    "cdc_config_from_env",
    "cdc_tables_from_env",
    "merge_staged",
    "pending_tables",
    "run_all",
    "run_table",
    "source_dsn_from_env",
    "stage_changes",
]
