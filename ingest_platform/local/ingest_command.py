"""`ingest-platform ingest PATH...`: load dumps through Dagster (the sensor's job), print a
summary."""

from __future__ import annotations

import socket
from pathlib import Path

import dagster as dg

from ingest_platform.defs.dumps import (
    DumpTranslator,
    build_dump_definitions,
    failure_message,
    run_request_for,
)
from ingest_platform.defs.postgres_resources import postgres_resources_from_env
from ingest_platform.dumps.directory import DumpCatalog, describe_dump
from ingest_platform.local.run_launcher import HOST_TAG


def ingest_dumps(
    paths: list[Path], dialect: str | None, app: str | None, version: str | None, say
) -> int:
    """Run the dump job for each file, in the Dagster instance of DAGSTER_HOME; 0 when all
    succeeded."""
    dumps = [describe_dump(path, dialect=dialect, app=app, version=version) for path in paths]
    translator = DumpTranslator()
    catalog = DumpCatalog(dumps=dumps)
    app_tables = catalog.tables_by_app()
    defs = dg.Definitions.merge(
        build_dump_definitions(catalog, translator),
        dg.Definitions(resources=postgres_resources_from_env()),
    )
    failed = 0
    with dg.DagsterInstance.get() as instance:
        for dump in dumps:
            request = run_request_for(dump, translator, dialect, app_tables[dump.app])
            instance.add_dynamic_partitions(translator.partitions_name(dump.app), [dump.version])
            say(
                f"Loading {dump.path.name}: app {dump.app}, version {dump.version}, "
                f"{len(dump.tables)} tables ..."
            )
            result = defs.resolve_job_def(translator.job_name(dump.app)).execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags={**request.tags, HOST_TAG: socket.gethostname()},
                asset_selection=list(request.asset_selection or ()),
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            tables = {translator.asset_key(dump.app, t): t for t in app_tables[dump.app]}
            print(summary_table(result, tables), flush=True)
            if not result.success:
                failed += 1
                for event in result.get_step_failure_events():
                    say(f"FAILED {event.step_key}: {failure_message(event)}")
            say(f"Run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    return 1 if failed else 0


def summary_table(
    result: dg.ExecuteInProcessResult, tables: dict[dg.AssetKey, str] | None = None
) -> str:
    """One row per loaded table; `tables` names each asset's table (its key may be sanitized)."""
    tables = tables or {}
    checks: dict[dg.AssetKey, list[str]] = {}
    for evaluation in result.get_asset_check_evaluations():
        checks.setdefault(evaluation.asset_key, []).append(
            f"{evaluation.check_name} {'ok' if evaluation.passed else 'FAILED'}"
        )
    rows = [("table", "rows", "seconds", "rows/s", "child table", "schema changes", "checks")]
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        key = materialization.asset_key
        table = tables.get(key, key.path[-1])
        listed = str(meta.get("schema_changes") or "none")
        changes = 0 if listed == "none" else listed.count("\n- ") + 1
        rows.append(
            (
                table,
                str(meta.get("rows")),
                f"{meta.get('seconds', 0):.2f}",
                f"{meta.get('rows_per_second', 0):,.0f}",
                str(meta.get("child_table", "-")),
                str(changes),
                ", ".join(checks.get(key, [])),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )
