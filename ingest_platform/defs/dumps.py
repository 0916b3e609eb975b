"""Dagster glue for versioned dumps: one asset per application table, partitioned by version.

Asset `dumps/<app>/<table>` is the parent table `<app>.<table>`; its partition `<version>` is the
child table. A sensor on the dump directory adds each new version as a partition and requests a
run for the tables of that dump; `ingest-platform ingest` runs the same job.
"""

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ingest_platform.defs.executor import (
    POSTGRES_WRITERS,
    platform_executor,
    step_retry_policy,
)
from ingest_platform.defs.names import dagster_name, key_part, node_name, tag_value
from ingest_platform.defs.postgres_resources import PostgresResource
from ingest_platform.defs.reload import reload_for_new_tables
from ingest_platform.dumps import open_dump
from ingest_platform.dumps.archive import Dump
from ingest_platform.dumps.directory import (
    DumpCatalog,
    DumpFile,
    default_dialect,
    describe_dump,
    dump_dir,
    is_dump_file,
)
from ingest_platform.errors import IngestError
from ingest_platform.loading.dump_versions import plan_for
from ingest_platform.postgres.duplicate_keys import describe as describe_duplicates
from ingest_platform.postgres.duplicate_keys import version_duplicate_keys
from ingest_platform.postgres.quarantine import (
    QUARANTINE_TABLE,
    quarantined_count,
    quarantined_records,
)
from ingest_platform.postgres.version_lock import version_lock
from ingest_platform.postgres.versioned_tables import (
    conformance_problems,
    staged_from,
    version_row_count,
)

# Run tags that tell a dump asset which file a run is for (set by the sensor and the CLI).
DUMP_PATH_TAG = "ingest/dump_path"
DIALECT_TAG = "ingest/dialect"
APP_TAG = "ingest/app"
VERSION_TAG = "ingest/version"
ROWS_CHECK = "rows_match_file"
COLUMNS_CHECK = "columns_conform_to_parent"
QUARANTINE_CHECK = "nothing_quarantined"
KEY_CHECK = "primary_key_unique"


def pg_schema_for(app: str, environ=os.environ) -> str:
    """One PostgreSQL schema per application: `INGEST_DUMP_SCHEMA_PREFIX` + app name."""
    return (environ.get("INGEST_DUMP_SCHEMA_PREFIX") or "") + app


@dataclass(frozen=True)
class DumpTable:
    """One application table of the dumps: what `DumpTranslator.get_asset_spec` turns into a spec.
    `pg_schema` is resolved once, when the definitions are built."""

    app: str
    table: str
    pg_schema: str
    dialects: tuple[str, ...] = ()  # of the dumps that bring the table


@dataclass(frozen=True)
class DumpTranslator:
    """The one place where dump tables become Dagster asset specs (override `get_asset_spec`, or
    call it and `.replace_attributes(...)` / `.merge_attributes(...)` the result).

    `schema_prefix`: the PostgreSQL schema of app A is `schema_prefix + A`; by default
    `INGEST_DUMP_SCHEMA_PREFIX`, read when the translator is made. `owners` and `tags` go on
    every spec; `dialects` maps (app, table) to the dialects of the dumps that bring it (tag
    `ingest/dialect`, e.g. `mssql` or `mssql-mysql`). Key parts, group, job, op and check names
    come from `defs/names.py`: a name Dagster cannot hold is sanitized and gets a hash."""

    schema_prefix: str = field(default_factory=lambda: pg_schema_for(""))
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    dialects: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, hash=False)

    @staticmethod
    def dialects_of(catalog: DumpCatalog) -> dict[tuple[str, str], tuple[str, ...]]:
        """(app, table) -> sorted names of the dialects of the catalog's dumps with that table."""
        found: dict[tuple[str, str], set[str]] = {}
        for dump in catalog.dumps:
            for table in dump.tables:
                found.setdefault((dump.app, table), set()).add(dump.dialect or "unknown")
        return {key: tuple(sorted(names)) for key, names in found.items()}

    def record(self, app: str, table: str) -> DumpTable:
        return DumpTable(app, table, self.schema_prefix + app, self.dialects.get((app, table), ()))

    def asset_key(self, app: str, table: str) -> dg.AssetKey:
        return self.get_asset_spec(self.record(app, table)).key

    def partitions_name(self, app: str) -> str:
        return f"{dagster_name(app)}_versions"

    def partitions_def(self, app: str) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.partitions_name(app))

    def job_name(self, app: str) -> str:
        return f"ingest_{dagster_name(app)}_dump"

    def get_asset_spec(self, record: DumpTable) -> dg.AssetSpec:
        schema, table = record.pg_schema, record.table
        return dg.AssetSpec(
            key=dg.AssetKey(["dumps", key_part(record.app), key_part(table)]),
            group_name=dagster_name(record.app),
            kinds={"postgres"},
            partitions_def=self.partitions_def(record.app),
            description=(
                f"PostgreSQL parent table `{schema}.{table}`: every loaded version of `{table}` "
                f"from `{record.app}` dumps. Each partition is a dump version, loaded into child "
                f"table `{schema}.{table}__v<version>` when its file lands in INGEST_DUMP_DIR (or "
                "by `ingest-platform ingest FILE`)."
            ),
            owners=list(self.owners),
            tags={
                "ingest/source": "dump",
                "ingest/app": tag_value(record.app),
                **(
                    {"ingest/dialect": tag_value("-".join(record.dialects))}
                    if record.dialects
                    else {}
                ),
                **self.tags,
            },
            metadata={"dagster/table_name": f"{schema}.{table}"},
        )

    def get_quarantine_spec(self, app: str) -> dg.AssetSpec:
        """The application's quarantine table (``postgres/quarantine.py``); its deps, the app's
        tables, are added where the definitions are built."""
        schema = self.schema_prefix + app
        return dg.AssetSpec(
            key=dg.AssetKey(["dumps", key_part(app), QUARANTINE_TABLE]),
            group_name=dagster_name(app),
            kinds={"postgres"},
            partitions_def=self.partitions_def(app),
            description=(
                f"`{schema}.{QUARANTINE_TABLE}`: records of `{app}` dumps that did not load under "
                "a table's reject budget (max_errors: BULK INSERT MAXERRORS, the manifest or the "
                "dialect), each with its file, record, column, reason and raw bytes. Each "
                "partition is a version; its check fails when that version quarantined anything."
            ),
            owners=list(self.owners),
            tags={"ingest/source": "dump", "ingest/app": tag_value(app), **self.tags},
            metadata={"dagster/table_name": f"{schema}.{QUARANTINE_TABLE}"},
        )


def build_dump_definitions(
    catalog: DumpCatalog, translator: DumpTranslator | None = None
) -> dg.Definitions:
    translator = translator or DumpTranslator()
    assets, quarantines, checks, jobs = [], [], [], []
    paths = {(dump.app, dump.version): dump.path for dump in catalog.dumps}
    for app, tables in catalog.tables_by_app().items():
        records = {table: translator.record(app, table) for table in tables}
        specs = {table: translator.get_asset_spec(record) for table, record in records.items()}
        app_tables = _dump_table_assets(app, translator.schema_prefix + app, specs, paths)
        checks.append(_dump_checks(app, specs, records, paths))
        assets += app_tables
        # The app's quarantine: after its tables in the same run, with a check of its own.
        spec = translator.get_quarantine_spec(app).merge_attributes(
            deps=[spec.key for spec in specs.values()]
        )
        quarantine = _quarantine_asset(spec, translator.schema_prefix + app)
        quarantines.append(quarantine)
        checks.append(_quarantine_check(spec, translator.schema_prefix + app))
        jobs.append(
            dg.define_asset_job(
                translator.job_name(app),
                selection=dg.AssetSelection.assets(*app_tables, quarantine),
                executor_def=platform_executor(),
                description=f"Load one {app} dump version: a step per table (the I/O manager "
                "parallelizes each), in one process or on Celery workers (INGEST_EXECUTOR).",
            )
        )
    # The parent's `dagster/column_schema` of the last two loads compared (warns on a change).
    checks += dg.build_column_schema_change_checks(assets=assets) if assets else []

    return dg.Definitions(
        assets=[*assets, *quarantines] or [_no_dumps_yet()],
        asset_checks=checks,
        jobs=jobs,
        sensors=[_dump_directory_sensor(catalog, translator, jobs)],
        resources={"opened_dumps": _opened_dumps},
    )


def _no_dumps_yet() -> dg.AssetSpec:
    """What the dump group shows before any dump exists: where to get one."""
    return dg.AssetSpec(
        key=dg.AssetKey(["dumps", "no_dumps_yet"]),
        group_name="dumps",
        kinds={"postgres"},
        description=(
            "No dump is in INGEST_DUMP_DIR yet, so there are no dump tables. Write the demo dumps "
            "with `ingest-platform demo-dumps` (or copy an application's `<app>_<version>.zip` "
            "there): the `dump_directory_sensor` loads each new file, and its tables appear here "
            "as `dumps/<app>/<table>`."
        ),
    )


class RunDumps:
    """What the steps of one dump run share in one process (all of them in-process; one on a
    Celery worker): each dump opened (a .zip.gpg decrypted) once, its decrypted copy removed when
    the process's steps end; each table of a version locked (``postgres/version_lock.py``) until
    then, so two runs of one table never interleave and a killed run's lock dies with it."""

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.opened: dict[tuple, Dump] = {}
        self.locked: set[tuple[str, str, str]] = set()

    def open(self, path: Path, **overrides) -> Dump:
        key = (str(path), tuple(sorted(overrides.items())))
        if key not in self.opened:
            dump = open_dump(path, default_dialect=default_dialect(), **overrides)
            self.opened[key] = self.stack.enter_context(dump)
        return self.opened[key]

    def lock_version(self, dsn: str, schema: str, version: str, table: str, log) -> None:
        if (schema, version, table) not in self.locked:
            self.stack.enter_context(version_lock(dsn, schema, version, log, table=table))
            self.locked.add((schema, version, table))


@dg.resource(description="The dumps a run reads, each opened once; the versions it loads, locked.")
def _opened_dumps(_context) -> Iterator[RunDumps]:
    with ExitStack() as stack:
        yield RunDumps(stack)


def _dump_table_assets(
    app: str, schema: str, specs: dict[str, dg.AssetSpec], paths: dict[tuple[str, str], Path]
) -> list[dg.AssetsDefinition]:
    """One asset, so one step, per table of the app: on Celery workers the tables of a dump load
    on several machines at once. Each step stages its table as its output is handed to the I/O
    manager; the step that stages the last table of the dump attaches them all
    (``versioned_tables.attach_staged``), so the version is visible whole or not at all, before
    any check of its tables runs. A run may select some of the tables (the others of the dump
    must then be loaded already or later: the version waits for them)."""
    return [_dump_table_asset(app, schema, table, spec, paths) for table, spec in specs.items()]


def _dump_table_asset(
    app: str, schema: str, table: str, spec: dg.AssetSpec, paths: dict[tuple[str, str], Path]
) -> dg.AssetsDefinition:
    output = node_name("table", spec.key.path)

    @dg.multi_asset(
        name=node_name("load", spec.key.path),
        outs={
            output: dg.AssetOut.from_spec(
                spec, is_required=False, io_manager_key="dump_copy_io_manager"
            )
        },
        pool=POSTGRES_WRITERS,
        retry_policy=step_retry_policy(),
    )
    def dump_table(
        context: dg.AssetExecutionContext,
        opened_dumps: dg.ResourceParam[RunDumps],
        postgres: PostgresResource,
    ):
        version = context.partition_key
        dump = _open_version(context, opened_dumps, paths, app, version)
        opened_dumps.lock_version(postgres.dsn, schema, version, table, context.log)
        if table not in dump.tables:
            # A version without the table: the parent honestly has no rows of that version, so
            # the partition is materialized with 0 rows (not Missing forever, and "Materialize
            # missing" does not launch runs that must fail). Nothing to load (no plan): no child
            # table, and the load's checks skip it; the output lets the steps after it run.
            context.log.info(f"Dump {dump.path.name} (version {version}) has no table {table!r}.")
            yield dg.Output(
                None,
                output_name=output,
                metadata={"dagster/row_count": 0, "absent_in_version": True},
            )
            return
        # The I/O manager loads the plan and records the load's and the table's metadata.
        yield dg.Output(plan_for(dump, table, schema), output_name=output)

    return dump_table


def _open_version(context, opened_dumps: RunDumps, paths, app: str, version: str) -> Dump:
    path, overrides = _dump_for_run(context.run.tags, paths, app, version)
    if not path.exists():
        # The run's steps may run on other machines (Celery workers) than the one that saw it.
        raise dg.Failure(
            f"Dump {path} is not on host {socket.gethostname()}: every machine that runs steps "
            "must see the dump directory at the same path (shared storage, README 'Scale-out'); "
            "mount it there, or put the file back, and re-execute the run."
        )
    return opened_dumps.open(path, **overrides)


def _dump_checks(
    app: str,
    specs: dict[str, dg.AssetSpec],
    records: dict[str, DumpTable],
    paths: dict[tuple[str, str], Path],
) -> dg.AssetChecksDefinition:
    """The loads' checks, partitioned by version like the tables and blocking: a failed one stops
    the mirror of that version. ONE step for all tables of the app, after every table step of
    the run: the version becomes visible when the last of them attaches it, so a check that ran
    after its own table's step alone could find the version not attached yet. They also run on
    their own (Execute in the UI), for any subset of tables."""
    check_specs = [check for spec in specs.values() for check in _check_specs(spec)]

    @dg.multi_asset_check(
        name=node_name("check", ["dumps", key_part(app)]), specs=check_specs, can_subset=True
    )
    def dump_checks(
        context: dg.AssetCheckExecutionContext,
        postgres: PostgresResource,
        opened_dumps: dg.ResourceParam[RunDumps],
    ):
        version = context.partition_key
        dump = _open_version(context, opened_dumps, paths, app, version)
        selected = {key.asset_key for key in context.selected_asset_check_keys}
        for table, spec in specs.items():
            if spec.key in selected and table in dump.tables:  # an absent table: nothing to check
                yield from _table_check_results(spec, records[table], dump, version, postgres)

    return dump_checks


_CHECK_DESCRIPTIONS = {
    ROWS_CHECK: "Rows in the version's child table + its quarantined records == data rows in the "
    "file.",
    COLUMNS_CHECK: "The child's columns conform to the parent (names, types, inheritance, "
    "version CHECK).",
    KEY_CHECK: "No primary-key value of the table's schema occurs twice in the version (names up "
    "to 5 that do; see postgres/duplicate_keys.py).",
}


def _check_specs(spec: dg.AssetSpec) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name,
            asset=spec.key,
            blocking=True,
            partitions_def=spec.partitions_def,
            description=description,
        )
        for name, description in _CHECK_DESCRIPTIONS.items()
    ]


def _table_check_results(
    spec: dg.AssetSpec, record: DumpTable, dump: Dump, version: str, postgres: PostgresResource
) -> Iterator[dg.AssetCheckResult]:
    table, schema = record.table, record.pg_schema
    expected = dump.count_rows(table) if table in dump.tables else None
    key = dump.tables[table].schema.primary_key if table in dump.tables else []
    with postgres.get_connection() as conn:
        loaded = version_row_count(conn, schema, table, version)
        problems = conformance_problems(conn, schema, table, version)
        quarantined = quarantined_count(conn, schema, version, table)
        duplicates = version_duplicate_keys(conn, schema, table, version, key)
        waiting = staged_from(conn, schema, table, version) if loaded is None else None
    # Every data row of the file is in the child table or in the quarantine, exactly once: a
    # quarantined record is accounted for (its own check, on the quarantine, says so).
    accounted = None if loaded is None else loaded + quarantined
    yield dg.AssetCheckResult(
        asset_key=spec.key,
        check_name=ROWS_CHECK,
        passed=accounted == expected,
        description=None
        if accounted == expected
        else (
            f"{table} of version {version} is loaded from {waiting} but not visible: a "
            "version becomes visible when every table of its dump is loaded. Materialize "
            "all tables of the version (the partition's Materialize, or the dump's job)."
        )
        if waiting
        else f"{dump.path.name}: the file has {expected} data rows, the child table {loaded}"
        + (f" and the quarantine {quarantined}." if quarantined else "."),
        metadata={
            "version": version,
            "rows_in_file": expected if expected is not None else -1,
            "rows_in_table": loaded if loaded is not None else -1,
            "rows_quarantined": quarantined,
        },
    )
    yield dg.AssetCheckResult(
        asset_key=spec.key,
        check_name=COLUMNS_CHECK,
        passed=not problems,
        description="; ".join(problems) if problems else None,
        metadata={
            "version": version,
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=spec.key,
        check_name=KEY_CHECK,
        passed=not duplicates,
        description=(
            f"{dump.path.name}: primary key ({', '.join(key)}) of {table!r} repeats values, "
            f"e.g. {describe_duplicates(key, duplicates)}. The source could not hold that: "
            "the export is inconsistent (taken without a snapshot?) or the schema's "
            "primary_key is wrong; fix either and load the version again."
        )
        if duplicates
        else None,
        metadata={"version": version, "primary_key": ", ".join(key) or "none"},
    )


def _quarantine_asset(spec: dg.AssetSpec, schema: str) -> dg.AssetsDefinition:
    """Materialized after the app's tables in each load run: what the version quarantined."""

    @dg.multi_asset(name=node_name("report", spec.key.path), specs=[spec])
    def quarantine(context: dg.AssetExecutionContext, postgres: PostgresResource):
        version = context.partition_key
        with postgres.get_connection() as conn:
            count = quarantined_count(conn, schema, version)
            first = quarantined_records(conn, schema, version)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(count),
                "rows": dg.MetadataValue.int(count),
                "version": version,
                "first_records": dg.MetadataValue.md(_quarantine_list(first) or "none"),
            }
        )

    return quarantine


def _quarantine_check(spec: dg.AssetSpec, schema: str) -> dg.AssetChecksDefinition:
    """Fails when the version quarantined any record. Not blocking: the tables loaded what the
    dump allowed, and their own checks (rows_match_file counts the quarantine) gate the mirror."""

    @dg.multi_asset_check(
        name=node_name("check", spec.key.path),
        specs=[
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=spec.key,
                partitions_def=spec.partitions_def,
                description="No record of this version was quarantined.",
            )
        ],
    )
    def quarantine_check(context: dg.AssetCheckExecutionContext, postgres: PostgresResource):
        version = context.partition_key
        with postgres.get_connection() as conn:
            count = quarantined_count(conn, schema, version)
            first = quarantined_records(conn, schema, version)
        yield dg.AssetCheckResult(
            asset_key=spec.key,
            check_name=QUARANTINE_CHECK,
            passed=count == 0,
            description=None
            if count == 0
            else f"{count} records of version {version} did not load and are in "
            f'"{schema}"."{QUARANTINE_TABLE}" (raw bytes kept); first: '
            f"{first[0]['table']}: {first[0]['file']}, record {first[0]['record']}"
            + (f", column {first[0]['column']}" if first[0]["column"] else "")
            + f": {first[0]['reason']}. Fix the records and load the version again.",
            metadata={
                "version": version,
                "quarantined": count,
                "first_records": dg.MetadataValue.md(_quarantine_list(first) or "none"),
            },
        )

    return quarantine_check


def _quarantine_list(records: list[dict]) -> str:
    return "\n".join(
        f"- {r['table']}: {r['file']}, record {r['record']}"
        + (f", column {r['column']}" if r["column"] else "")
        + f": {r['reason']} ({r['raw_bytes']} bytes)"
        for r in records
    )


def _dump_for_run(
    tags: Mapping[str, str], paths: dict[tuple[str, str], Path], app: str, version: str
) -> tuple[Path, dict]:
    """The dump file and open_dump overrides: from the run's tags (the sensor's and the CLI's
    runs), else the file the dump directory held for that version when definitions were loaded
    (a run launched from the UI)."""
    if DUMP_PATH_TAG in tags:
        return Path(tags[DUMP_PATH_TAG]), {
            "dialect": tags.get(DIALECT_TAG),
            "app": app,
            "version": version,
        }
    if (app, version) in paths:
        return paths[app, version], {}
    raise dg.Failure(
        f"No dump of {app} version {version} was in {dump_dir()} when the definitions were "
        "loaded; put it there and reload the code location, or use `ingest-platform ingest PATH`."
    )


def run_request_for(
    dump: DumpFile,
    translator: DumpTranslator,
    dialect: str | None = None,
    app_tables: Iterable[str] = (),
) -> dg.RunRequest:
    """The run that loads `dump`. `app_tables`: every table the definitions know for its app; the
    ones the dump lacks are in the run too, and record their partition with 0 rows."""
    tags = {DUMP_PATH_TAG: str(dump.path), APP_TAG: dump.app, VERSION_TAG: dump.version}
    if dialect:
        tags[DIALECT_TAG] = dialect
    return dg.RunRequest(
        run_key=f"{dump.path.name}:{dump.path.stat().st_mtime_ns}",
        job_name=translator.job_name(dump.app),
        partition_key=dump.version,
        asset_selection=[
            *(
                translator.asset_key(dump.app, table)
                for table in sorted(set(dump.tables) | set(app_tables))
            ),
            translator.get_quarantine_spec(dump.app).key,
        ],
        tags=tags,
    )


def _dump_directory_sensor(
    catalog: DumpCatalog, translator: DumpTranslator, jobs
) -> dg.SensorDefinition:
    known_tables = {app: set(tables) for app, tables in catalog.tables_by_app().items()}

    @dg.sensor(
        name="dump_directory_sensor",
        jobs=jobs or None,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches INGEST_DUMP_DIR: each new, complete dump adds its version and "
        "loads its tables.",
    )
    def dump_directory_sensor(context: dg.SensorEvaluationContext):
        result = evaluate_dump_directory(
            context.cursor, dump_dir(), known_tables, translator, context.log
        )
        reload_for_new_tables(result.cursor, context.log)  # i11c, issue 11 item 6: defs/reload.py
        return result

    return dump_directory_sensor


def evaluate_dump_directory(
    cursor: str | None,
    directory: Path,
    known_tables: dict[str, set[str]],
    translator: DumpTranslator,
    log,
    settle_seconds: float = 5.0,
) -> dg.SensorResult:
    """New complete dumps -> partitions + runs. A file counts as complete when its size and mtime
    did not change since the previous tick and it is older than `settle_seconds`.

    Cursor: {file name: {"seen": [size, mtime_ns], "done": bool}, plus "dump" (app, version,
    tables) while a dump waits for a reload}; survives restarts. A dump is read (a .zip.gpg
    decrypted: its table list sits at the end of one encrypted stream) once per change of the file.
    """
    state = json.loads(cursor) if cursor else {}
    run_requests, waiting, problems = [], [], []
    partitions: dict[str, list[str]] = {}
    now = time.time()
    for path in (
        sorted(p for p in directory.glob("*") if is_dump_file(p)) if directory.is_dir() else []
    ):
        stat = path.stat()
        seen = [stat.st_size, stat.st_mtime_ns]
        entry = state.get(path.name, {})
        if entry.get("done") and entry.get("seen") == seen:
            continue
        if entry.get("seen") != seen or now - stat.st_mtime < settle_seconds:
            state[path.name] = {"seen": seen, "done": False}  # still arriving: look again next tick
            continue
        if "dump" in entry:  # read on an earlier tick, waiting for a reload
            app, version, tables = entry["dump"]
            dump = DumpFile(path.resolve(), app, version, tuple(tables))
        else:
            try:
                dump = describe_dump(path)
            except Exception as error:  # report, and retry when the file changes
                problem = (
                    str(error)
                    if isinstance(error, IngestError)
                    else f"{path}: cannot be read ({type(error).__name__}: {error})"
                )
                problems.append(problem)
                log.warning(f"{problem}. Not loaded; the sensor reads it again when it changes.")
                state[path.name] = {"seen": seen, "done": True, "error": problem[:500]}
                continue
        unknown = sorted(set(dump.tables) - known_tables.get(dump.app, set()))
        if unknown:
            waiting.append(f"{path.name}: tables {', '.join(unknown)} of app {dump.app!r}")
            # Pending: after the reload the whole dump is requested.
            state[path.name] = {
                "seen": seen,
                "done": False,
                "dump": [dump.app, dump.version, list(dump.tables)],
            }
            continue
        partitions.setdefault(dump.app, []).append(dump.version)
        run_requests.append(
            run_request_for(dump, translator, app_tables=known_tables.get(dump.app, ()))
        )
        state[path.name] = {"seen": seen, "done": True}
    reload_needed = (
        (
            "New tables have no assets yet: " + "; ".join(waiting) + ". Reload the code location "
            "(Deployment > Code locations > ingest_platform > Reload, or Reload definitions on the "
            "Assets page); this sensor then loads those dumps."
        )
        if waiting
        else None
    )
    if reload_needed:
        log.warning(reload_needed)
    notes = ([reload_needed] if reload_needed else []) + (
        ["Not loaded: " + " / ".join(problems)] if problems else []
    )
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(state, sort_keys=True),
        dynamic_partitions_requests=[
            translator.partitions_def(app).build_add_request(versions)
            for app, versions in partitions.items()
        ],
        skip_reason=None
        if run_requests
        else dg.SkipReason(" ".join(notes) or "No new complete dumps."),
    )


def failure_message(event: dg.DagsterEvent) -> str:
    """The error a step failed with: the first in the chain that is not Dagster's own wrapper."""
    error = event.step_failure_data.error
    while (
        error is not None
        and error.cause is not None
        and (error.cls_name or "").startswith("Dagster")
    ):
        error = error.cause
    return error.message.strip() if error is not None else "the step failed without an error"
