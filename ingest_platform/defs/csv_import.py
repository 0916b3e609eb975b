"""Historical CSV files dropped in an import directory, imported by a sensor (migration/csv_import).

Per table directory ``<INGEST_CSV_IMPORT_DIR>/<schema>.<table>/`` (migration/csv_directory.py):

- asset ``csv_import/<schema>/<table>``, dynamically partitioned by file name: a partition is one
  file imported into the table (set-based checks; ``quarantine`` by default, see import.toml).
  Metadata: rows imported, rejects, the file's sha256. Files keep arriving, so one asset per table
  with a partition per file, not one asset per file: lineage and checks stay per table.
- asset ``csv_import/<schema>/<table>_rejects`` (same partitions): that file's rows in
  ``ingest_import.rejects`` (file, line, reason, value, raw text).
- check ``no_rejects`` on the table asset: fails when the file had rejects, naming the first
  ones by file and line.
- ``csv_import_directory_sensor``: each new file whose size and mtime held still for a tick (like
  the dump sensor) adds its partition and requests the table's job.

Importing the same bytes twice loads nothing the second time (csv_import's record of imported
files by sha256): the partition is materialized again with the first import's numbers.
"""

import json
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from ingest_platform.defs.executor import POSTGRES_WRITERS, platform_executor
from ingest_platform.defs.names import dagster_name, key_part, node_name
from ingest_platform.defs.postgres_resources import PostgresResource
from ingest_platform.errors import IngestError
from ingest_platform.migration import csv_directory, csv_import
from ingest_platform.migration.csv_directory import ImportTable

GROUP = "csv_import"
PATH_TAG = "ingest/csv_path"
REJECTS_CHECK = "no_rejects"
SHOWN = 20


def table_key(table: ImportTable) -> dg.AssetKey:
    return dg.AssetKey([GROUP, key_part(table.schema), key_part(table.table)])


def rejects_key(table: ImportTable) -> dg.AssetKey:
    return dg.AssetKey([GROUP, key_part(table.schema), key_part(table.table) + "_rejects"])


def partitions_def(table: ImportTable) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(
        name=f"csv_{dagster_name(table.schema)}__{dagster_name(table.table)}_files"
    )


def job_name(table: ImportTable) -> str:
    return f"import_csv_{dagster_name(table.schema)}__{dagster_name(table.table)}"


def build_csv_import_definitions(
    directory: Path, owners: tuple[str, ...] = (), tags: Mapping[str, str] | None = None
) -> dg.Definitions:
    """Assets, checks and jobs for the table directories under `directory` now, and the sensor."""
    assets, checks, jobs = [], [], []
    for table in csv_directory.import_tables(directory):
        common = {"group_name": GROUP, "owners": list(owners), "tags": dict(tags or {})}
        imported = _table_asset(table, common)
        rejects = _rejects_asset(table, common)
        assets += [imported, rejects]
        checks.append(_rejects_check(table))
        jobs.append(
            dg.define_asset_job(
                job_name(table),
                selection=dg.AssetSelection.assets(imported, rejects),
                executor_def=platform_executor(),
                description=f"Import one CSV file into {table.label}.",
            )
        )
    known = {t.label: t for t in csv_directory.import_tables(directory)}

    @dg.sensor(
        name="csv_import_directory_sensor",
        jobs=jobs or None,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Watches {directory}: each new, complete <schema>.<table>/*.csv is imported.",
    )
    def csv_import_directory_sensor(context: dg.SensorEvaluationContext):
        return evaluate_csv_directory(context.cursor, directory, known, context.log)

    return dg.Definitions(
        assets=assets, asset_checks=checks, jobs=jobs, sensors=[csv_import_directory_sensor]
    )


def _file_for(context, table: ImportTable) -> Path:
    """The run's file: from the sensor's tag, else the partition's name in the table directory
    (a run launched from the UI)."""
    return Path(context.run.tags.get(PATH_TAG) or table.directory / context.partition_key)


def _table_asset(table: ImportTable, common: dict) -> dg.AssetsDefinition:
    @dg.asset(
        key=table_key(table),
        partitions_def=partitions_def(table),
        kinds={"postgres", "csv"},
        description=f"Rows of {table.label} imported from the CSV files in {table.directory} "
        "(one partition per file; `import-csv` with the directory's import.toml).",
        metadata={"dagster/table_name": table.label},
        pool=POSTGRES_WRITERS,
        **common,
    )
    def imported(context: dg.AssetExecutionContext, postgres: PostgresResource):
        path = _file_for(context, table)
        try:
            options = csv_directory.read_options(table)
            result = csv_import.import_csv(postgres.dsn, table.schema, table.table, [path], options)
        except IngestError as error:  # RejectedRows in `fail` mode lists every rejected row
            raise dg.Failure(description=str(error)) from None
        digest = result.digests[str(path)]
        skipped = bool(result.skipped_files)
        with postgres.get_connection() as conn:
            record = csv_import.file_record(conn, table.label, digest)
        rows = record.rows if record else 0
        rejects = record.rejects if record else 0
        context.log.info(
            f"{path.name}: imported before as {record.file if record else '?'}, nothing loaded"
            if skipped
            else f"{path.name}: {rows} rows imported into {table.label}, {rejects} rejected"
        )
        return dg.MaterializeResult(
            metadata={
                "file": str(path),
                "sha256": digest,
                "rows_imported": rows,
                "rejects": rejects,
                "dagster/row_count": rows,
                "imported_before": skipped,
                "first_imported_as": record.file if record else "",
                "on_reject": options.on_reject,
            }
        )

    return imported


def _rejects_asset(table: ImportTable, common: dict) -> dg.AssetsDefinition:
    @dg.asset(
        key=rejects_key(table),
        partitions_def=partitions_def(table),
        deps=[table_key(table)],
        kinds={"postgres"},
        description=f"Rows of the file that did not go into {table.label}: its rows in "
        "`ingest_import.rejects` (file, line, reason, value, raw text).",
        metadata={"dagster/table_name": "ingest_import.rejects"},
        **common,
    )
    def rejects(context: dg.AssetExecutionContext, postgres: PostgresResource):
        path = _file_for(context, table)
        digest = csv_import.file_digest(path)
        with postgres.get_connection() as conn:
            record = csv_import.file_record(conn, table.label, digest)
            first = csv_import.recorded_rejects(conn, table.label, digest, SHOWN)
        count = record.rejects if record else 0
        return dg.MaterializeResult(
            metadata={
                "file": str(path),
                "sha256": digest,
                "rejects": count,
                "dagster/row_count": count,
                "first_rejects": dg.MetadataValue.md(_reject_table(first) or "none"),
            }
        )

    return rejects


def _rejects_check(table: ImportTable) -> dg.AssetChecksDefinition:
    key = table_key(table)

    @dg.multi_asset_check(
        name=node_name("check", key.path),
        specs=[
            dg.AssetCheckSpec(
                REJECTS_CHECK,
                asset=key,
                partitions_def=partitions_def(table),
                description="Every row of the file went in: none rejected (types, NOT NULL, "
                "keys, foreign keys, field count, encoding).",
            )
        ],
    )
    def rejects_check(context: dg.AssetCheckExecutionContext, postgres: PostgresResource):
        path = _file_for(context, table)
        try:
            digest = csv_import.file_digest(path)
        except IngestError as error:  # moved away or emptied since: say so, do not crash
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=REJECTS_CHECK,
                passed=False,
                description=f"{error}; cannot tell which import was this file's.",
                metadata={"file": str(path)},
            )
            return
        with postgres.get_connection() as conn:
            record = csv_import.file_record(conn, table.label, digest)
            first = csv_import.recorded_rejects(conn, table.label, digest, 5)
        if record is None:
            description = f"{path}: not imported into {table.label} (these bytes)."
        elif record.rejects:
            description = (
                f"{record.rejects} rows of {path} were rejected and are in ingest_import.rejects"
                f"; first: " + "; ".join(str(r) for r in first)
            )
        else:
            description = None
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=REJECTS_CHECK,
            passed=record is not None and record.rejects == 0,
            description=description,
            metadata={
                "file": str(path),
                "sha256": digest,
                "rejects": record.rejects if record else -1,
                "first_rejects": dg.MetadataValue.md(_reject_table(first) or "none"),
            },
        )

    return rejects_check


def _reject_table(rejects: list[csv_import.Reject]) -> str:
    if not rejects:
        return ""

    def cell(text: str | None) -> str:
        return (text or "").replace("|", "\\|").replace("\n", " ")[:200]

    lines = ["| file | line | reason | value | raw |", "|---|---|---|---|---|"]
    lines += [
        f"| {cell(Path(r.file).name)} | {r.line} | {cell(r.reason)} | {cell(r.value)} "
        f"| {cell(r.raw)} |"
        for r in rejects
    ]
    return "\n".join(lines)


def evaluate_csv_directory(
    cursor: str | None,
    directory: Path,
    known: Mapping[str, ImportTable],
    log,
    settle_seconds: float = 5.0,
) -> dg.SensorResult:
    """New complete CSV files -> partitions + runs. A file is complete when its size and mtime did
    not change since the previous tick and it is older than `settle_seconds` (as the dump sensor).

    Cursor: {"<schema>.<table>/<file>": {"seen": [size, mtime_ns], "done": bool}}. A file that
    changes is imported again (its new bytes; csv_import skips bytes it imported before)."""
    state = json.loads(cursor) if cursor else {}
    run_requests, waiting, problems = [], [], []
    partitions: dict[str, list[str]] = {}
    now = time.time()
    for table in csv_directory.import_tables(directory):
        for path in csv_directory.csv_files(table):
            name = f"{table.label}/{path.name}"
            stat = path.stat()
            seen = [stat.st_size, stat.st_mtime_ns]
            entry = state.get(name, {})
            if entry.get("done") and entry.get("seen") == seen:
                continue
            if entry.get("seen") != seen or now - stat.st_mtime < settle_seconds:
                state[name] = {"seen": seen, "done": False}  # still arriving: next tick
                continue
            if table.label not in known:
                waiting.append(name)
                continue
            why = csv_directory.unusable_name(path.name)
            if why:
                problems.append(f"{path}: {why}")
                state[name] = {"seen": seen, "done": True, "error": why}
                continue
            partitions.setdefault(table.label, []).append(path.name)
            run_requests.append(
                dg.RunRequest(
                    run_key=f"{name}:{stat.st_size}:{stat.st_mtime_ns}",
                    job_name=job_name(known[table.label]),
                    partition_key=path.name,
                    tags={PATH_TAG: str(path.resolve())},
                )
            )
            state[name] = {"seen": seen, "done": True}
    notes = []
    if waiting:
        notes.append(
            "Files for tables without assets yet: " + ", ".join(waiting) + ". Reload the code "
            "location (Deployment > Code locations > Reload); this sensor then imports them."
        )
    if problems:
        notes.append("Not imported: " + " / ".join(problems))
    for note in notes:
        log.warning(note)
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(state, sort_keys=True),
        dynamic_partitions_requests=[
            partitions_def(known[label]).build_add_request(names)
            for label, names in partitions.items()
        ],
        skip_reason=None
        if run_requests
        else dg.SkipReason(" ".join(notes) or "No new complete CSV files."),
    )
