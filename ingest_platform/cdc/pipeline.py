"""One CDC run for one tracked table: stage, then merge (with the watermark), then clear staging.

    stage_changes(source_dsn, warehouse_dsn, config, table)   -> StageResult
    merge_staged(source_dsn, warehouse_dsn, config, table)    -> MergeResult
    run_table(source_dsn, warehouse_dsn, config, table)       -> (StageResult, MergeResult)
    full_resync(source_dsn, warehouse_dsn, config, table)     -> MergeCounts (repair drift)

Transactions and what a crash leaves
------------------------------------
1. **Stage.** The source: the safe horizon H' (``source.advance_horizon``), then one REPEATABLE
   READ snapshot for validation, counting and ``COPY (reduced changes LEFT JOIN current rows) TO
   STDOUT``. The warehouse: the merged table is created or evolved (own short transaction), then
   one transaction locks the watermark row, rebuilds the staging table, streams the COPY into it
   (``COPY .. FROM STDIN``; the bytes pass through unparsed) and records the staged interval
   (H, H']. A crash anywhere here rolls back to the previous staging and watermark.
2. **Merge.** One warehouse transaction: lock the watermark row; if the staged interval starts at
   the watermark, upsert and soft-delete from staging and move the watermark to H'. Otherwise the
   staging is stale (left by a crashed or superseded run) and nothing is merged.
3. **Clear.** TRUNCATE staging.
A re-run after a crash between 1 and 2 restages from the unchanged watermark (the new interval
may reach further) and merges once; after a crash between 2 and 3 it finds the staged interval
cleared, restages from the new watermark and truncates: every step is idempotent, and applying a
batch twice cannot happen because the merge is gated on the watermark it moves.
Readers of the merged table never wait for staging; the merge holds row locks on the rows it
changes until it commits, and they see all of a batch or none of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from ingest_platform.cdc import logical
from ingest_platform.cdc import source as src
from ingest_platform.cdc import warehouse as wh
from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.errors import IngestError
from ingest_platform.postgres import catalog, etl_log
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect

DEFAULT_WAIT_SECONDS = 5.0
# SET LOCAL for the reduction's sort and the merge's joins (one run per table at a time)
WORK_MEM = "128MB"


@dataclass
class StageResult:
    table: str
    watermark: int  # horizon before this run
    staged_to: int  # the safe horizon staged up to (== watermark: nothing new)
    max_change_id: int  # newest change id the source had
    changes: dict[str, int] = field(default_factory=dict)  # change-log rows by action
    staged: dict[str, int] = field(default_factory=dict)  # objects by last action (+ "gone")
    schema_changes: list[str] = field(default_factory=list)
    blocked_by_pids: list[int] = field(
        default_factory=list
    )  # transactions holding the horizon back
    seconds: float = 0.0

    @property
    def staged_rows(self) -> int:
        return sum(v for k, v in self.staged.items() if k != "gone")


@dataclass
class MergeResult:
    table: str
    merged: bool  # False: nothing staged for the current watermark
    watermark: int  # after the merge
    counts: wh.MergeCounts = field(default_factory=wh.MergeCounts)
    last_change_at: datetime | None = None
    seconds: float = 0.0

    @property
    def lag_seconds(self) -> float | None:
        if self.last_change_at is None:
            return None
        return max(0.0, (datetime.now(UTC) - self.last_change_at).total_seconds())


def stage_changes(
    source_dsn: str,
    warehouse_dsn: str,
    config: CdcConfig,
    table: CdcTable,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> StageResult:
    if config.logical is not None:  # the log-based kind: decoded from the slot
        return logical.stage_logical(source_dsn, warehouse_dsn, config, table)
    started = time.perf_counter()
    schema = config.warehouse_schema
    with (
        connect(warehouse_dsn, autocommit=True) as wconn,
        connect(source_dsn, autocommit=True) as sconn,
    ):
        wh.ensure_watermark(wconn, schema, table.name)
        mark = _watermark(wconn, schema, table.name)
        log = src.change_log_info(sconn, config.change_log, table.name)
        candidates = list(mark.candidates)
        if mark.staged_from == mark.horizon_id and mark.staged_to:
            # A crashed run proved its staged horizon safe; safety does not expire.
            candidates.append({"q": mark.staged_to, "vxids": []})
        horizon = src.advance_horizon(sconn, log, mark.horizon_id, candidates, wait_seconds)
        result = StageResult(
            table.name,
            mark.horizon_id,
            horizon.horizon_id,
            horizon.max_id,
            blocked_by_pids=horizon.blocked_by_pids,
        )
        if horizon.horizon_id == mark.horizon_id:
            # Nothing safe to stage: forget stale staging, keep the candidates for the next run.
            with wconn.transaction():
                if (
                    _watermark(wconn, schema, table.name, for_update=True).horizon_id
                    == mark.horizon_id
                ):
                    wh.mark_staged(wconn, schema, table.name, None, None, {}, horizon.candidates)
            wh.truncate_staging(wconn, schema, table)
            result.seconds = time.perf_counter() - started
            return result
        src.set_session(sconn)
        src.set_session(wconn)
        lo, hi = mark.horizon_id, horizon.horizon_id
        sconn.autocommit = False
        sconn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        sconn.read_only = True
        try:
            src.set_planner(sconn, WORK_MEM)  # the reduction sorts
            ct_id = src.content_type_id(sconn, log, table)
            tracked = (
                src.tracked_content_type_ids(sconn, log, config.tables)
                if config.change_log.untracked_content_types == "error"
                else None
            )
            src.validate_changes(
                sconn, log, table, ct_id, None, lo, hi, tracked
            )  # unknown content types first
            ids = src.change_ids_in_range(sconn, log, ct_id, lo, hi) if ct_id is not None else []
            source = src.read_source_table(sconn, table, ids)
            src.validate_changes(sconn, log, table, ct_id, source, lo, hi, content_types=False)
            result.changes, newest, last_id = src.changes_by_action(sconn, log, ct_id, lo, hi)
            types, result.schema_changes = wh.evolve_merged_table(
                wconn, schema, table, source, config.terminate_blockers_after
            )
            info = {
                "last_change_id": last_id,
                "last_change_at": newest.isoformat() if newest else None,
                "changes": result.changes,
            }
            with wconn.transaction():
                current = _watermark(wconn, schema, table.name, for_update=True)
                if current.horizon_id != lo:
                    raise IngestError(
                        f"CDC table {table.name!r}: another run moved the watermark from {lo} to "
                        f"{current.horizon_id} meanwhile; nothing was staged, run again."
                    )
                wh.recreate_staging(wconn, schema, table, source, types)
                if ct_id is not None:
                    # Up to a quarter of the source's rows: look the changed rows up by key.
                    lookups = src.few_of(
                        sum(result.changes.values()),
                        src.estimated_rows(
                            sconn, qualified(table.source_schema, table.source_table)
                        ),
                    )
                    with src.index_lookup_joins(sconn, lookups):
                        _copy_between(
                            sconn,
                            wconn,
                            src.copy_out_query(log, table, source, ct_id, lo, hi),
                            psycopg.sql.SQL("COPY {} FROM STDIN").format(
                                qualified(schema, table.staging_table)
                            ),
                        )
                wh.recreate_staging_changes(wconn, schema, table)
                if ct_id is not None:
                    _copy_between(
                        sconn,
                        wconn,
                        src.change_rows_query(log, ct_id, lo, hi),
                        psycopg.sql.SQL("COPY {} FROM STDIN").format(
                            qualified(schema, table.staging_changes_table)
                        ),
                    )
                wh.mark_staged(wconn, schema, table.name, lo, hi, info, horizon.candidates)
                wh.analyze_staging(wconn, schema, table)
            result.staged = wh.staging_counts(wconn, schema, table)
        finally:
            sconn.rollback()
    result.seconds = time.perf_counter() - started
    return result


def _watermark(
    conn: psycopg.Connection, schema: str, table: str, for_update: bool = False
) -> wh.Watermark:
    """The table's watermark row, which ``wh.ensure_watermark`` made at the start of the run."""
    mark = wh.read_watermark(conn, schema, table, for_update)
    if mark is None:
        raise IngestError(
            f"CDC table {table!r}: its watermark row in {schema}.{wh.WATERMARK_TABLE} is gone "
            "(dropped during the run); run again."
        )
    return mark


def _copy_between(sconn: psycopg.Connection, wconn: psycopg.Connection, copy_out, copy_in) -> None:
    """COPY TO STDOUT on the source into COPY FROM STDIN on the warehouse: COPY text passes through
    as the bytes the server sent, never parsed in Python."""
    with sconn.cursor().copy(copy_out) as reader, wconn.cursor().copy(copy_in) as writer:
        for data in reader:
            writer.write(data)


def merge_staged(
    warehouse_dsn: str, config: CdcConfig, table: CdcTable, clear_staging: bool = True
) -> MergeResult:
    """Merge staging into the merged table and move the watermark, in one transaction; then empty
    staging (`clear_staging=False` leaves it, as a crash right after the merge would)."""
    started = time.perf_counter()
    schema = config.warehouse_schema
    with connect(warehouse_dsn, autocommit=True) as wconn:
        wh.ensure_watermark(wconn, schema, table.name)
        with wconn.transaction():
            mark = _watermark(wconn, schema, table.name, for_update=True)
            src.set_planner(wconn, WORK_MEM)
            result = MergeResult(
                table.name, False, mark.horizon_id, last_change_at=mark.last_change_at
            )
            if mark.staged_from is not None and mark.staged_from == mark.horizon_id:
                merged_columns = catalog.columns_of(wconn, schema, table.merged_table)
                staging_columns = [
                    c
                    for c in catalog.columns_of(wconn, schema, table.staging_table)
                    if c not in dict(wh.STAGING_META) and c != wh.UNCHANGED
                ]
                missing = [c for c in staging_columns if c not in merged_columns]
                if missing or not staging_columns:
                    raise IngestError(
                        f"CDC table {table.name!r}: the staging table does not match the merged "
                        f"table "
                        f"(missing there: {', '.join(missing) or 'all'}); run the staging step "
                        f"again."
                    )
                oid = catalog.relation_oid(wconn, schema, table.merged_table)
                if oid is None:  # merged_columns would be empty, and `missing` not
                    raise AssertionError(f"{table.merged_table} has columns, so it exists")
                key = catalog.primary_key(wconn, oid)[0]
                result.counts = wh.merge_staging(wconn, schema, table, staging_columns, key)
                wh.record_changes(wconn, schema, table, renumber=config.logical is not None)
                wh.finish_merge(wconn, schema, table.name, mark)
                etl_log.record(
                    wconn,
                    kind="cdc_merge",
                    table=f"{schema}.{table.merged_table}",
                    rows=result.counts.rows_merged,
                    version=str(mark.staged_to),
                )
                result.merged = True
                after = _watermark(wconn, schema, table.name)
                result.watermark, result.last_change_at = after.horizon_id, after.last_change_at
        if clear_staging:
            wh.truncate_staging(wconn, schema, table)
    result.seconds = time.perf_counter() - started
    return result


def full_resync(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable
) -> wh.MergeCounts:
    """Repair a drifted merged table: stage every current source row (as 'changed') and every live
    merged key the source no longer has (as gone), and merge them, in one warehouse transaction
    that holds the watermark row. The watermark does not move: changes past it are applied by the
    next run as usual (the rows they stage are the current ones, so applying them again is
    harmless); a staged but unmerged interval is dropped and restaged by that run. Rows get the
    watermark as `_last_change_id`."""
    schema = config.warehouse_schema
    with (
        connect(warehouse_dsn, autocommit=True) as wconn,
        connect(source_dsn, autocommit=True) as sconn,
    ):
        wh.ensure_watermark(wconn, schema, table.name)
        sconn.autocommit = False
        sconn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        sconn.read_only = True
        try:
            source = src.read_source_table(sconn, table, [])
            types, _ = wh.evolve_merged_table(
                wconn, schema, table, source, config.terminate_blockers_after
            )
            with wconn.transaction():
                mark = _watermark(wconn, schema, table.name, for_update=True)
                src.set_planner(wconn, WORK_MEM)
                wh.recreate_staging(wconn, schema, table, source, types)
                _copy_between(
                    sconn,
                    wconn,
                    _copy_all_rows(table, source, mark.horizon_id),
                    psycopg.sql.SQL("COPY {} FROM STDIN").format(
                        qualified(schema, table.staging_table)
                    ),
                )
                wh.stage_missing_as_gone(wconn, schema, table, source.primary_key, mark.horizon_id)
                wh.mark_staged(wconn, schema, table.name, None, None, {}, mark.candidates)
                wh.analyze_staging(wconn, schema, table)
                columns = [n for n, _ in source.columns]
                counts = wh.merge_staging(wconn, schema, table, columns, source.primary_key)
                etl_log.record(
                    wconn,
                    kind="cdc_resync",
                    table=f"{schema}.{table.merged_table}",
                    rows=counts.rows_merged,
                    version=str(mark.horizon_id),
                )
        finally:
            sconn.rollback()
        wh.truncate_staging(wconn, schema, table)
    return counts


def _copy_all_rows(
    table: CdcTable, source: src.SourceTable, change_id: int
) -> psycopg.sql.Composed:
    """COPY of every source row in the staging table's column order, as a 'changed' row."""
    order = [source.primary_key] + [n for n, _ in source.columns if n != source.primary_key]
    return psycopg.sql.SQL(
        "COPY (SELECT {}::bigint, 'changed', true, {} FROM {}) TO STDOUT"
    ).format(
        psycopg.sql.Literal(change_id),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, order)),
        qualified(table.source_schema, table.source_table),
    )


def run_table(
    source_dsn: str,
    warehouse_dsn: str,
    config: CdcConfig,
    table: CdcTable,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> tuple[StageResult, MergeResult]:
    if config.logical is not None:  # stage, merge, then confirm the slot
        return logical.run_logical_table(source_dsn, warehouse_dsn, config, table)
    staged = stage_changes(source_dsn, warehouse_dsn, config, table, wait_seconds)
    return staged, merge_staged(warehouse_dsn, config, table)


def run_all(
    source_dsn: str,
    warehouse_dsn: str,
    config: CdcConfig,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> dict[str, tuple[StageResult, MergeResult]]:
    if config.logical is not None:  # the slot decoded once for all tables, confirmed once
        return logical.run_logical_all(source_dsn, warehouse_dsn, config)
    return {
        t.name: run_table(source_dsn, warehouse_dsn, config, t, wait_seconds) for t in config.tables
    }


def pending_tables(source_dsn: str, warehouse_dsn: str, config: CdcConfig) -> dict[str, int]:
    """{table: its watermark} for the tracked tables with change-log rows past their watermark
    (a few indexed queries; for the sensor).
    Rows of unknown content types make every table pending, so the run reports them."""
    if config.logical is not None:
        return logical.pending_logical_tables(source_dsn, warehouse_dsn, config)
    with connect(warehouse_dsn, autocommit=True) as wconn:
        marks = wh.all_watermarks(wconn, config)
    with connect(source_dsn, autocommit=True) as sconn:
        log = src.change_log_info(sconn, config.change_log, config.tables[0].name)
        values = [(t.name, t.app_label, t.model, marks.get(t.name, 0)) for t in config.tables]
        query = psycopg.sql.SQL(
            "SELECT v.name FROM (VALUES {rows}) v(name, app_label, model, horizon) "
            "LEFT JOIN {ct} t ON t.app_label = v.app_label AND t.model = v.model "
            "WHERE EXISTS (SELECT 1 FROM {log} c WHERE c.id > v.horizon AND "
            "(c.content_type_id = t.id OR c.content_type_id IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM {ct} u WHERE u.id = c.content_type_id)))"
        ).format(
            rows=psycopg.sql.SQL(", ").join(
                psycopg.sql.SQL("(%s, %s, %s, %s::bigint)") for _ in values
            ),
            ct=log.content_type_table,
            log=log.change_table,
        )
        found = {r[0] for r in sconn.execute(query, [x for v in values for x in v])}
        if config.change_log.untracked_content_types == "error":
            tracked = src.tracked_content_type_ids(sconn, log, config.tables)
            if sconn.execute(
                psycopg.sql.SQL(
                    "SELECT 1 FROM {} WHERE id > %s AND content_type_id <> ALL(%s) LIMIT 1"
                ).format(log.change_table),
                (min(v[3] for v in values), tracked),
            ).fetchone():
                found = {t.name for t in config.tables}  # the runs report the unknown content type
    return {t.name: marks.get(t.name, 0) for t in config.tables if t.name in found}
