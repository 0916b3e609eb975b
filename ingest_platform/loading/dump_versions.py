"""Load one table of one dump version into PostgreSQL, with worker processes for large files.

The reader side is one ``CopySource`` per data file (``dumps.copy_source``). Small files load in
this process. For a file of MIN_BLOCKS_FOR_WORKERS blocks or more, the main process decompresses
it and cuts it into blocks of whole records; workers (spawn context, each with its own
connection and one long COPY) turn blocks into COPY text and stream them into the version's
load table. The queue between them is bounded, so memory stays flat however large the file is.
Only when every worker succeeded is the load table staged; when every table of the dump is staged,
one short transaction attaches them all (see versioned_tables), so a version is visible whole or
not at all. On a table's failure its load table is dropped. A worker's failure is the exception it
raised, sent back whole (psycopg errors keep their diagnostics when pickled).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import psycopg

from ingest_platform.dumps import open_dump
from ingest_platform.dumps.archive import Dump
from ingest_platform.dumps.copy_source import Block, CopyChunks, CopySource
from ingest_platform.dumps.reader import DEFAULT_CHUNK_BYTES
from ingest_platform.dumps.schema import TableSchema
from ingest_platform.errors import IngestError, ServiceUnavailableError, first_line
from ingest_platform.loading.reject_budget import (
    BudgetedCopy,
    Reject,
    RejectBudgetExceeded,
    check_budget,
    place,
)
from ingest_platform.postgres.connection import connect, server_address
from ingest_platform.postgres.copy_errors import CopyRejected, copy_format_error
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS
from ingest_platform.postgres.quarantine import (
    QUARANTINE_TABLE,
    QuarantinedRecord,
    create_quarantine,
)
from ingest_platform.postgres.version_lock import version_lock
from ingest_platform.postgres.versioned_tables import (
    VersionLoad,
    abandon_staged,
    abandon_version_load,
    attach_staged,
    begin_version_load,
    copy_into,
    dump_identity,
    stage_version_load,
)
from ingest_platform.progress import PROGRESS_SECONDS, Progress

# Blocks waiting for a worker, per worker: keeps workers busy, bounds memory.
QUEUE_BLOCKS_PER_WORKER = 2
# Files smaller than this many blocks load in-process: workers would cost more than they save.
MIN_BLOCKS_FOR_WORKERS = 8
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableLoadPlan:
    """Everything needed to load one table of one dump version. Picklable."""

    table_schema: TableSchema
    pg_schema: str
    version: str
    source: CopySource | None  # None: the dump has the schema but no data file -> no rows
    dump: str = ""  # the dump file's name, recorded with quarantined records
    dump_id: str = ""  # versioned_tables.dump_identity of the file: which loads belong together
    # Every table of the dump: the version becomes visible when all are staged. Empty: this one.
    dump_tables: tuple[str, ...] = ()


@dataclass
class LoadReport:
    table: str
    version: str
    child_table: str
    rows: int
    bytes: int
    seconds: float
    processes: int
    schema_changes: list[str] = field(default_factory=list)
    replaced_earlier_load: bool = False
    quarantined: int = 0  # records set aside under the table's reject budget (max_errors)
    visible: bool = True  # this load attached the version (every table of its dump staged)
    load_table: str = ""  # where its rows wait while not visible
    waiting_for: tuple[str, ...] = ()  # else: the dump's tables not staged yet

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def plan_for(dump: Dump, table: str, pg_schema: str) -> TableLoadPlan:
    return TableLoadPlan(
        dump.tables[table].schema,
        pg_schema,
        dump.version,
        dump.copy_source(table),
        dump=dump.path.name,
        dump_id=dump_identity(dump.path),
        dump_tables=tuple(dump.tables),
    )


def load_table_version(
    dsn: str,
    plan: TableLoadPlan,
    processes: int = 2,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    progress_seconds: float = PROGRESS_SECONDS,
) -> LoadReport:
    """Load one table of a dump version and stage it; the load that stages the dump's last table
    attaches them all (``versioned_tables.attach_staged``): the version is visible complete after
    that, never in part. On failure this table's load is dropped and nothing visible changed.

    Loads of one version must not run twice at once: callers hold ``version_lock``
    (``load_dump_version`` and the Dagster dump job do).
    `terminate_blockers_after`, `logger`: for the attach. `logger` also gets a progress line every
    `progress_seconds` during the COPY.
    A file format with ``max_errors`` > 0 loads under that reject budget (``reject_budget``): the
    records that cannot load go to the quarantine, visible with the version.
    """
    started = time.perf_counter()
    source = None if plan.source is None else replace(plan.source, chunk_bytes=chunk_bytes)
    with connect(dsn) as conn:
        load = begin_version_load(
            conn, plan.pg_schema, plan.table_schema, plan.version, plan.dump_id
        )
        if source is not None and source.file_format.max_errors:
            create_quarantine(conn, plan.pg_schema)
    workers = 1
    rejects: list[Reject] = []
    try:
        if source is None:
            rows, nbytes = 0, 0
        else:
            progress = _FileProgress(
                source,
                Progress(
                    f"{plan.table_schema.name} {plan.version}", logger, None, progress_seconds
                ),
            )
            if processes <= 1 or source.size < MIN_BLOCKS_FOR_WORKERS * chunk_bytes:
                rows, nbytes, rejects = _copy_in_process(dsn, source, load, progress)
            else:
                workers = processes
                rows, nbytes, rejects = _copy_in_parallel(dsn, source, load, processes, progress)
        quarantined = _quarantined(plan, rejects, logger)
        with connect(dsn) as conn:
            stage_version_load(conn, load, quarantined, plan.dump)
            done = attach_staged(
                conn,
                plan.pg_schema,
                plan.version,
                plan.dump_id,
                plan.dump_tables or (load.table,),
                terminate_blockers_after,
                logger,
            )
    except BaseException as error:
        with connect(dsn) as conn:
            abandon_version_load(conn, load)
        if isinstance(error, psycopg.OperationalError):  # the server went away mid-load
            raise ServiceUnavailableError(
                f"PostgreSQL at {server_address(dsn)} broke off the load of {load.table} version "
                f"{plan.version} ({first_line(error)}); nothing of it is visible. Load the dump "
                "again when the server answers."
            ) from None
        raise
    attached = done.attached.get(load.table)
    if done.waiting_for:
        logger.info(
            f"{load.table} {plan.version}: staged; the version becomes visible when "
            f"{', '.join(done.waiting_for)} of {plan.dump or 'the dump'} are loaded too."
        )
    return LoadReport(
        table=plan.table_schema.name,
        version=plan.version,
        child_table=load.child_table,
        rows=rows,
        bytes=nbytes,
        seconds=time.perf_counter() - started,
        processes=workers,
        schema_changes=list(attached.changes if attached else load.planned_changes),
        replaced_earlier_load=bool(attached and attached.replaced_previous),
        quarantined=len(rejects),
        visible=attached is not None,
        load_table=load.load_table,
        waiting_for=done.waiting_for,
    )


def _quarantined(
    plan: TableLoadPlan, rejects: list[Reject], logger: logging.Logger | logging.LoggerAdapter
) -> list[QuarantinedRecord]:
    """The rejects as quarantine rows (every worker's, within the budget), logged."""
    if not rejects or plan.source is None:
        return []
    check_budget(plan.source, rejects)
    member, budget = plan.source.member, plan.source.file_format.max_errors
    logger.warning(
        f"{plan.table_schema.name} {plan.version}: {len(rejects)} of at most {budget} records "
        f'quarantined in "{plan.pg_schema}"."{QUARANTINE_TABLE}" (max_errors); first: '
        f"{member}, {rejects[0].describe()}"
    )
    return [r.quarantined(member) for r in rejects]


def load_dump_version(
    dsn: str,
    dump_path: str | Path,
    pg_schema: str | None = None,
    processes: int = 2,
    dialect: str | None = None,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
) -> list[LoadReport]:
    """Load every table of a dump: the version becomes visible whole, or (on any failure) not at
    all, its previous load untouched. The schema defaults to the dump's app.

    With several tables, `processes` workers each load whole tables (largest first): that beats
    cutting one file into blocks, which costs the main process a second pass over every block.
    """
    with open_dump(dump_path, dialect=dialect) as dump:
        schema = pg_schema or dump.app
        plans = sorted(
            (plan_for(dump, table, schema) for table in dump.tables),
            key=lambda plan: 0 if plan.source is None else plan.source.size,
            reverse=True,
        )
        with version_lock(dsn, schema, dump.version):
            # What an earlier run of this dump left staged is stale (this run loads every table):
            # an attach must not pick it up while this run reloads the same table.
            with connect(dsn) as conn:
                abandon_staged(conn, schema, dump.version, dump_identity(dump.path))
            try:
                return _load_plans(dsn, plans, processes, terminate_blockers_after)
            except BaseException:
                with connect(dsn) as conn:  # no re-run of single tables here: start clean
                    abandon_staged(conn, schema, dump.version, dump_identity(dump.path))
                raise


def _load_plans(
    dsn: str,
    plans: list[TableLoadPlan],
    processes: int,
    terminate_blockers_after: float | None,
) -> list[LoadReport]:
    if processes <= 1 or len(plans) == 1:
        return [
            load_table_version(
                dsn, plan, processes, terminate_blockers_after=terminate_blockers_after
            )
            for plan in plans
        ]
    load = partial(
        load_table_version, dsn, processes=1, terminate_blockers_after=terminate_blockers_after
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(processes, len(plans)), mp_context=context, initializer=_watch_parent
    ) as pool:
        return list(pool.map(load, plans))


class _FileProgress:
    """Progress of one data file: rows are the COPY stream's lines (one per row in COPY text),
    counted per chunk; the file is read in blocks of ~chunk_bytes, so blocks read x chunk_bytes
    / file size is the percent read."""

    def __init__(self, source: CopySource, progress: Progress):
        self.progress = progress
        self.block_share = source.chunk_bytes / max(source.size, 1)
        self.blocks = 0

    def block_read(self, rows: int) -> None:
        self.blocks += 1
        self.progress.advance(rows, min(self.blocks * self.block_share, 1.0))

    def counted(self, chunks: Iterable) -> Iterator:
        for chunk in chunks:
            self.block_read((chunk if isinstance(chunk, bytes) else chunk[0]).count(b"\n"))
            yield chunk


def _copy_in_process(
    dsn: str, source: CopySource, load: VersionLoad, progress: _FileProgress
) -> tuple[int, int, list[Reject]]:
    """(rows, bytes, rejects): the optimistic read when it loads, else the careful one."""
    optimistic = source.optimistic_chunks()
    if optimistic is not None:
        try:
            with connect(dsn) as conn:
                return (*copy_into(conn, load, progress.counted(optimistic)), [])
        except Exception:  # rolled back; the careful read loads or names the error
            progress.progress.rows, progress.blocks = 0, 0
    if source.file_format.max_errors:
        with connect(dsn) as conn, source.blocks() as blocks:
            return BudgetedCopy(source, load, whole_file=True).run(conn, blocks, progress)
    return (*_copy(dsn, load, source.chunks(), progress), [])


def _copy(
    dsn: str, load: VersionLoad, chunks: CopyChunks, progress: _FileProgress | None = None
) -> tuple[int, int]:
    """COPY one stream; a rejected line becomes a FormatError naming file, record and column."""
    try:
        with connect(dsn) as conn:
            return copy_into(conn, load, progress.counted(chunks) if progress else chunks)
    except CopyRejected as rejected:
        if rejected.bad_encoding:
            raise chunks.source.find_error() from None
        record = chunks.record_of(rejected.line)
        raise copy_format_error(
            rejected.message, rejected.context, chunks.source.member, record
        ) from None


def _copy_in_parallel(
    dsn: str, source: CopySource, load: VersionLoad, processes: int, progress: _FileProgress
) -> tuple[int, int, list[Reject]]:
    pool = _WorkerPool(dsn, source, load, processes)
    try:
        with source.blocks() as blocks:
            for block in blocks:
                pool.put(block)
                # Rows: the reader's record count where it made one (workers count the rest).
                progress.block_read(block[3] or 0)
        rows, nbytes, rejects = pool.finish()
        return rows, nbytes, place(source, rejects)
    except RejectBudgetExceeded as over:  # one worker's: name its records by file record number
        raise RejectBudgetExceeded(
            source.member, over.max_errors, place(source, over.rejects)
        ) from None
    finally:
        pool.stop()


class _WorkerPool:
    """Worker processes fed through a bounded queue; the first failure is raised in this process."""

    def __init__(self, dsn: str, source: CopySource, load: VersionLoad, processes: int):
        self.member = source.member
        context = multiprocessing.get_context("spawn")
        self.blocks = context.Queue(maxsize=processes * QUEUE_BLOCKS_PER_WORKER)
        self.results = context.Queue()
        self.workers = [
            context.Process(
                target=_copy_worker,
                args=(dsn, source, load, self.blocks, self.results),
                daemon=True,
            )
            for _ in range(processes)
        ]
        self.loaded: list[tuple[int, int, list[Reject]]] = []  # each finished worker's
        for worker in self.workers:
            worker.start()

    def put(self, block: Block | None) -> None:
        """Put with backpressure, but give up as soon as a worker has failed."""
        while True:
            try:
                self.blocks.put(block, timeout=0.5)
                return
            except queue.Full:
                self._collect(wait=0)

    def finish(self) -> tuple[int, int, list[Reject]]:
        """Tell every worker to finish its COPY; (rows, bytes, rejects) over all of them."""
        for _ in self.workers:
            self.put(None)
        while len(self.loaded) < len(self.workers):
            self._collect(wait=0.5)
        return (
            sum(rows for rows, _, _ in self.loaded),
            sum(nbytes for _, nbytes, _ in self.loaded),
            [reject for _, _, rejects in self.loaded for reject in rejects],
        )

    def stop(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()  # its COPY transaction dies with its connection
            worker.join()
        # Blocks a dead worker never took must not keep this process from exiting: the queue's
        # feeder thread would wait to send them, and interpreter exit joins that thread.
        self.blocks.cancel_join_thread()
        self.blocks.close()
        self.results.close()

    def _collect(self, wait: float) -> None:
        try:
            outcome = self.results.get(timeout=wait) if wait else self.results.get_nowait()
        except queue.Empty:
            if sum(not w.is_alive() for w in self.workers) <= len(self.loaded):
                return
            try:  # a worker exited without a word: give its message time to arrive
                outcome = self.results.get(timeout=2)
            except queue.Empty:
                outcome = IngestError(f"{self.member}: a load worker process died unexpectedly")
        if isinstance(outcome, BaseException):
            raise outcome
        self.loaded.append(outcome)


def _copy_worker(dsn: str, source: CopySource, load: VersionLoad, blocks, results) -> None:
    """COPY the blocks this worker takes from the queue; put (rows, bytes, rejects) or the
    exception."""
    _watch_parent()
    try:
        if source.file_format.max_errors:
            with connect(dsn) as conn:
                budgeted = BudgetedCopy(source, load, whole_file=False)
                results.put(budgeted.run(conn, iter(blocks.get, None)))
        else:
            results.put((*_copy(dsn, load, source.chunks(iter(blocks.get, None))), []))
    except Exception as error:  # raised again in the main process
        try:
            pickle.dumps(error)
        except Exception:  # an exception that cannot travel: send its text
            error = IngestError(f"{source.member}: {type(error).__name__}: {error}")
        results.put(error)


def _watch_parent() -> None:
    """Every worker process (COPY workers, and the pool's table loaders) exits with its parent."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """A worker whose parent was killed (kill -9, out of memory) would wait for blocks forever
    (or for the rest of one cut short), or finish an attach nobody asked for any more, holding its
    COPY and the (decrypted) dump open: it exits with the parent instead, and PostgreSQL rolls its
    transaction back."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)
