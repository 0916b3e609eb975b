"""Load one table of one dump version into PostgreSQL with several worker processes.

The main process decompresses the data file and cuts it into blocks of whole records; workers
(spawn context, each with its own connection and one long COPY) turn blocks into COPY text and
stream them into the version's load table. The queue between them is bounded, so memory stays
flat however large the file is. Only when every worker succeeded does one short transaction
attach the load table to the parent (see versioned_tables); on any failure it is dropped.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ingest_platform.dumps import open_dump
from ingest_platform.dumps.dialect import FileFormat
from ingest_platform.dumps.reader import (
    DEFAULT_CHUNK_BYTES,
    BlockEncoder,
    NotOptimistic,
    can_load_optimistically,
    iter_copy_chunks,
    iter_load_chunks,
    open_record_blocks,
)
from ingest_platform.dumps.schema import TableSchema
from ingest_platform.errors import FormatError, IngestError
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.copy_errors import CopyRejected, copy_format_error
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS
from ingest_platform.postgres.versioned_tables import (
    VersionLoad,
    abandon_version_load,
    attach_version,
    begin_version_load,
    copy_into,
)

# Blocks waiting for a worker, per worker: enough to keep workers busy, small enough to bound memory.
QUEUE_BLOCKS_PER_WORKER = 2
# Files smaller than this many blocks load in-process: starting workers would cost more than it saves.
MIN_BLOCKS_FOR_WORKERS = 8
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableLoadPlan:
    """Everything a worker process needs to load one table of one dump version. Picklable."""

    archive_path: str  # the plain ZIP (a .zip.gpg is decrypted first)
    data_member: str | None  # None: the dump has the schema but no data file -> an empty version
    file_format: FileFormat
    table_schema: TableSchema
    pg_schema: str
    version: str
    reader_path: str = (
        "auto"  # "row" forces the per-row reader (the fast path must give the same table)
    )


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

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def load_table_version(
    dsn: str,
    plan: TableLoadPlan,
    processes: int = 2,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
) -> LoadReport:
    """Load one table version atomically: visible complete after success, not at all after failure.

    `terminate_blockers_after`, `logger`: for the attach (``versioned_tables.attach_version``).
    """
    started = time.perf_counter()
    with connect(dsn) as conn:
        load = begin_version_load(conn, plan.pg_schema, plan.table_schema, plan.version)
    workers = _workers_for(plan, processes, chunk_bytes)
    try:
        if plan.data_member is None:
            rows, nbytes = 0, 0
        elif workers == 1:
            rows, nbytes = _copy_in_process(dsn, plan, load, chunk_bytes)
        else:
            rows, nbytes = _copy_in_parallel(dsn, plan, load, workers, chunk_bytes)
        with connect(dsn) as conn:
            attached = attach_version(conn, load, terminate_blockers_after, logger)
    except BaseException:
        with connect(dsn) as conn:
            abandon_version_load(conn, load)
        raise
    return LoadReport(
        table=plan.table_schema.name,
        version=plan.version,
        child_table=attached.child_table,
        rows=rows,
        bytes=nbytes,
        seconds=time.perf_counter() - started,
        processes=workers,
        schema_changes=list(attached.changes),
        replaced_earlier_load=attached.replaced_previous,
    )


def load_dump_version(
    dsn: str,
    dump_path: str | Path,
    pg_schema: str | None = None,
    processes: int = 2,
    dialect: str | None = None,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
) -> list[LoadReport]:
    """Load every table of a dump, each atomically; the schema defaults to the dump's app.

    With several tables, `processes` workers each load whole tables (largest first): that beats
    cutting one file into blocks, which costs the main process a second pass over every block.
    """
    with open_dump(dump_path, dialect=dialect) as dump:
        plans = sorted(
            (plan_for(dump, table, pg_schema or dump.app) for table in dump.tables),
            key=_data_size,
            reverse=True,
        )
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
            max_workers=min(processes, len(plans)), mp_context=context
        ) as pool:
            return list(pool.map(load, plans))


def _data_size(plan: TableLoadPlan) -> int:
    if plan.data_member is None:
        return 0
    with zipfile.ZipFile(plan.archive_path) as archive:
        return archive.getinfo(plan.data_member).file_size


def plan_for(dump, table: str, pg_schema: str) -> TableLoadPlan:
    entry = dump.tables[table]
    return TableLoadPlan(
        str(dump.archive_path),
        entry.data_member,
        entry.file_format,
        entry.schema,
        pg_schema,
        dump.version,
    )


def _workers_for(plan: TableLoadPlan, processes: int, chunk_bytes: int) -> int:
    """1 means in this process: for small files, starting workers would cost more than it saves."""
    if processes <= 1 or _data_size(plan) < MIN_BLOCKS_FOR_WORKERS * chunk_bytes:
        return 1
    return processes


def _copy_in_process(
    dsn: str, plan: TableLoadPlan, load: VersionLoad, chunk_bytes: int
) -> tuple[int, int]:
    loaded = _copy_optimistically(dsn, plan, load, chunk_bytes)
    if loaded is not None:
        return loaded
    chunks = iter_load_chunks(
        plan.archive_path,
        plan.data_member,
        plan.file_format,
        plan.table_schema.columns,
        chunk_bytes,
        plan.reader_path,
    )
    try:
        with connect(dsn) as conn:
            return copy_into(conn, load, chunks)
    except CopyRejected as rejected:
        if rejected.bad_encoding:
            raise _locate_format_error(plan) from None
        record = rejected.line + plan.file_format.header_rows if rejected.line is not None else None
        raise copy_format_error(
            rejected.message, rejected.context, plan.data_member, record
        ) from None


def _copy_optimistically(
    dsn: str, plan: TableLoadPlan, load: VersionLoad, chunk_bytes: int
) -> tuple[int, int] | None:
    """(rows, bytes), or None when the optimistic read does not apply or PostgreSQL refused it (its
    transaction rolled back): then the careful read loads the file or names its error."""
    if plan.reader_path != "auto" or not can_load_optimistically(
        plan.file_format, plan.table_schema.columns
    ):
        return None
    chunks = iter_load_chunks(
        plan.archive_path,
        plan.data_member,
        plan.file_format,
        plan.table_schema.columns,
        chunk_bytes,
        optimistic=True,
    )
    try:
        with connect(dsn) as conn:
            return copy_into(conn, load, chunks)
    except (CopyRejected, NotOptimistic):
        return None


def _copy_in_parallel(
    dsn: str, plan: TableLoadPlan, load: VersionLoad, processes: int, chunk_bytes: int
) -> tuple[int, int]:
    pool = _WorkerPool(dsn, plan, load, processes, chunk_bytes)
    try:
        skip = plan.file_format.header_rows
        with open_record_blocks(
            plan.archive_path,
            plan.data_member,
            plan.file_format,
            plan.table_schema.columns,
            chunk_bytes,
        ) as record_blocks:
            for index, (block, terminator, records) in enumerate(record_blocks):
                pool.put((index, block, terminator, records, skip))
                skip = 0  # header rows are all in the first block (blocks are ~chunk_bytes)
        return pool.finish()
    finally:
        pool.stop()


class _WorkerPool:
    """Worker processes fed through a bounded queue; the first failure is raised in this process."""

    def __init__(
        self, dsn: str, plan: TableLoadPlan, load: VersionLoad, processes: int, chunk_bytes: int
    ):
        self.plan, self.chunk_bytes = plan, chunk_bytes
        context = multiprocessing.get_context("spawn")
        self.blocks = context.Queue(maxsize=processes * QUEUE_BLOCKS_PER_WORKER)
        self.results = context.Queue()
        self.workers = [
            context.Process(
                target=_copy_worker, args=(dsn, plan, load, self.blocks, self.results), daemon=True
            )
            for _ in range(processes)
        ]
        self.outcomes: list[tuple] = []
        for worker in self.workers:
            worker.start()

    def put(self, item) -> None:
        """Put with backpressure, but give up as soon as a worker has failed."""
        while True:
            try:
                self.blocks.put(item, timeout=0.5)
                return
            except queue.Full:
                self._collect(wait=0)

    def finish(self) -> tuple[int, int]:
        """Tell every worker to finish its COPY; (rows, bytes) over all of them."""
        for _ in self.workers:
            self.put(None)
        while len(self.outcomes) < len(self.workers):
            self._collect(wait=0.5)
        return sum(o[1] for o in self.outcomes), sum(o[2] for o in self.outcomes)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()  # its COPY transaction dies with its connection
            worker.join()
        self.blocks.close()
        self.results.close()

    def _collect(self, wait: float) -> None:
        try:
            self.outcomes.append(
                self.results.get(timeout=wait) if wait else self.results.get_nowait()
            )
        except queue.Empty:
            exited = sum(not w.is_alive() for w in self.workers)
            if exited > len(
                self.outcomes
            ):  # a worker exited without a word: give its message time to arrive
                try:
                    self.outcomes.append(self.results.get(timeout=2))
                except queue.Empty:
                    self.outcomes.append(("error", "a load worker process died unexpectedly"))
        for outcome in self.outcomes:
            if outcome[0] != "ok":
                raise self._error(outcome) from None

    def _error(self, outcome: tuple) -> Exception:
        if outcome[0] == "format_error":
            return _locate_format_error(self.plan)
        if outcome[0] == "copy_error":
            _, message, context, block_index, offset = outcome
            record = _records_before_block(self.plan, block_index, self.chunk_bytes) + offset
            return copy_format_error(message, context, self.plan.data_member, record)
        return IngestError(f"{self.plan.data_member}: {outcome[1]}")


def _records_before_block(plan: TableLoadPlan, block_index: int, chunk_bytes: int) -> int:
    """Records (header included) in the blocks before `block_index`: re-read on the error path only."""
    encoder = BlockEncoder(plan.data_member, plan.file_format, plan.table_schema.columns)
    total, skip = 0, plan.file_format.header_rows
    with open_record_blocks(
        plan.archive_path,
        plan.data_member,
        plan.file_format,
        plan.table_schema.columns,
        chunk_bytes,
    ) as record_blocks:
        for index, (block, terminator, records) in enumerate(record_blocks):
            if index == block_index:
                return total + skip
            total += (
                records
                if records is not None
                else encoder.encode(block, terminator, total + 1, skip)[1]
            )
            skip = 0
    return total


def _locate_format_error(plan: TableLoadPlan) -> Exception:
    """Re-read in order, checking the encoding too, to name the exact record (and column): a worker
    only knows record numbers within its block, and PostgreSQL does not name the column of bad bytes."""
    try:
        for _ in iter_copy_chunks(
            plan.archive_path, plan.data_member, plan.file_format, plan.table_schema.columns
        ):
            pass
    except FormatError as error:
        return error
    return IngestError(
        f"{plan.data_member}: a load worker rejected the data, but re-reading found no error"
    )


def _copy_worker(dsn: str, plan: TableLoadPlan, load: VersionLoad, blocks, results) -> None:
    encoder = BlockEncoder(
        plan.data_member, plan.file_format, plan.table_schema.columns, plan.reader_path
    )
    sent: list[tuple[int, int]] = []  # (block index, COPY lines) in the order this worker sent them

    def chunks() -> Iterator[bytes]:
        while (item := blocks.get()) is not None:
            index, block, terminator, records, skip = item
            chunk, records, null = encoder.encode_for_copy(block, terminator, 1, skip, records)
            sent.append((index, records - skip))
            yield chunk, null

    try:
        with connect(dsn) as conn:
            rows, nbytes = copy_into(conn, load, chunks())
        results.put(("ok", rows, nbytes))
    except FormatError as error:
        results.put(("format_error", str(error)))
    except CopyRejected as rejected:
        if rejected.bad_encoding:
            results.put(("format_error", rejected.message))
        else:
            results.put(
                (
                    "copy_error",
                    rejected.message,
                    rejected.context,
                    *_block_of_line(sent, rejected.line),
                )
            )
    except Exception as error:  # noqa: BLE001 - reported to the main process, which raises
        results.put(("error", f"{type(error).__name__}: {error}"))


def _block_of_line(sent: list[tuple[int, int]], line: int | None) -> tuple[int, int]:
    """(block index, 1-based data record within that block) of a line of this worker's COPY stream."""
    if line is None:
        return sent[0][0] if sent else 0, 0
    for index, lines in sent:
        if line <= lines:
            return index, line
        line -= lines
    return sent[-1][0], line
