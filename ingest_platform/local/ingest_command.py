"""`ingest-platform ingest PATH...`: load dumps through Dagster (the sensor's job), print a
summary."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import dagster as dg
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.storage.tags import PARTITION_NAME_TAG

from ingest_platform.defs.dumps import (
    DumpTranslator,
    build_dump_definitions,
    failure_message,
    run_request_for,
)
from ingest_platform.defs.executor import executor_kind
from ingest_platform.defs.postgres_resources import postgres_resources_from_env
from ingest_platform.dumps.directory import DumpCatalog, DumpFile, describe_dump
from ingest_platform.local.run_launcher import HOST_TAG
from ingest_platform.local.text_table import text_table


def ingest_dumps(
    paths: list[Path], dialect: str | None, app: str | None, version: str | None, say
) -> int:
    """Run the dump job for each file, in the Dagster instance of DAGSTER_HOME; 0 when all
    succeeded. With INGEST_EXECUTOR=celery (or multiprocess) the steps run in other processes
    (on Celery workers), which rebuild the job from the same description of the files
    (`dump_job`); each step reads its file at the same path there."""
    dumps = [describe_dump(path, dialect=dialect, app=app, version=version) for path in paths]
    translator = DumpTranslator()
    app_tables = DumpCatalog(dumps=dumps).tables_by_app()
    described = [[str(d.path.resolve()), d.app, d.version, list(d.tables)] for d in dumps]
    failed = 0
    with dg.DagsterInstance.get() as instance:
        for dump in dumps:
            request = run_request_for(dump, translator, dialect, app_tables[dump.app])
            instance.add_dynamic_partitions(translator.partitions_name(dump.app), [dump.version])
            say(
                f"Loading {dump.path.name}: app {dump.app}, version {dump.version}, "
                f"{len(dump.tables)} tables ..."
            )
            result = _execute(instance, (described, dump.app), request)
            tables = {translator.asset_key(dump.app, t): t for t in app_tables[dump.app]}
            print(summary_table(result, tables), flush=True)
            if not result.success:
                failed += 1
                for event in result.get_step_failure_events():
                    say(f"FAILED {event.step_key}: {failure_message(event)}")
            say(f"Run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    return 1 if failed else 0


def dump_job(dumps: list[list], job_app: str) -> dg.JobDefinition:
    """The dump job of `job_app` for the described dumps ([path, app, version, tables]): what
    `ingest` runs, rebuilt the same way, without reading the files, by every process that runs a
    step of it (a Celery worker: ``dg.build_reconstructable_job``)."""
    catalog = DumpCatalog([DumpFile(Path(p), a, v, tuple(t)) for p, a, v, t in dumps])
    translator = DumpTranslator()
    # The platform's preview and beta features are used on purpose (``definitions.py``).
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    defs = dg.Definitions.merge(
        build_dump_definitions(catalog, translator),
        dg.Definitions(resources=postgres_resources_from_env()),
    )
    return defs.resolve_job_def(translator.job_name(job_app))


def _execute(instance: dg.DagsterInstance, job_args: tuple, request: dg.RunRequest):
    tags = {**request.tags, HOST_TAG: socket.gethostname()}
    selection = list(request.asset_selection or ())
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if executor_kind() == "in_process":
        return dump_job(*job_args).execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            asset_selection=selection,
            raise_on_error=False,
            run_config=quiet,
        )
    job = dg.build_reconstructable_job(__name__, dump_job.__name__, job_args)
    tags[PARTITION_NAME_TAG] = str(request.partition_key)
    with dg.execute_job(
        job, instance, run_config=quiet, tags=tags, asset_selection=selection
    ) as result:
        return result


def summary_table(result: ExecutionResult, tables: dict[dg.AssetKey, str] | None = None) -> str:
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
    return text_table(rows)
