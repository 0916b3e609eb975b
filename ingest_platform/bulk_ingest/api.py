"""``ingest()``: load batches of rows into SQLAlchemy-defined tables, with a durable high watermark.

See the package docstring for the contract; the steps are in the modules named below:
``migration`` (create/migrate each table), ``watermarks`` (the stored watermark), ``copy_rows``
(COPY with checks), ``upsert`` (staging + INSERT .. ON CONFLICT, delete all rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from ingest_platform.bulk_ingest import upsert, watermarks
from ingest_platform.bulk_ingest.copy_rows import BatchCopier, TableTarget, describe_target
from ingest_platform.bulk_ingest.migration import prepare_table
from ingest_platform.bulk_ingest.modes import HighWatermark, Mode
from ingest_platform.errors import IngestError, first_line
from ingest_platform.postgres import etl_log
from ingest_platform.postgres.connection import scalar

LOGGER = logging.getLogger("ingest_platform.bulk_ingest")

Batches = Callable[[Any], Iterable[tuple[Any, Iterable[tuple[sa.Table, tuple]]]]]


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest()`` call did."""

    high_watermark: Any  # stored after the last batch (the starting one if there was none)
    batches: int  # batches committed (AFTER_FINAL_BATCH: all of them, or 0)
    rows: dict[str, int]  # rows received per table ("schema.table"), all batches
    mode: Mode
    watermark_key: str
    migrations: dict[str, list[str]] = field(default_factory=dict)  # per table: what was changed


def ingest(
    conn: sa.Connection,
    metadata: sa.MetaData,
    batches: Batches,
    high_watermark: Any = HighWatermark.LATEST,
    ingest_mode: Mode = Mode.UPSERT_COMMITTING_EACH_BATCH,
    *,
    watermark_key: str | None = None,
    watermark_schema: str | None = None,
    terminate_blockers_after: float | None = 60.0,
    buffer_rows: int = 10_000,
    logger: logging.Logger | None = None,
) -> IngestResult:
    """Create/migrate the tables of `metadata`, then load ``batches(high_watermark)`` into them.

    `conn`: a SQLAlchemy connection with the psycopg (3) driver, not in a transaction.
    `batches(watermark)` returns an iterable of ``(high_watermark, rows)``, strictly after the given
    watermark, increasing; `rows` is an iterable of ``(table, row_tuple)`` (table: a Table of
    `metadata` or its key). Each batch's watermark is stored with it, under `watermark_key`
    (default: the sorted "schema.table" names, comma-separated) in
    ``<watermark_schema>."_ingest_watermarks"`` (default: the first of the tables' schemas).
    `terminate_blockers_after`: seconds a migration waits for a lock before terminating the
    backends that hold it (None: wait forever). `buffer_rows`: rows held per table when a batch
    interleaves tables.
    """
    log = logger or LOGGER
    mode = Mode(ingest_mode)
    driver = _driver_connection(conn)
    tables = sorted(metadata.tables.values(), key=lambda t: t.key)
    if not tables:
        raise IngestError(
            "The metadata passed to ingest() holds no tables: define the target tables in it."
        )
    default_schema = scalar(driver, "SELECT current_schema()") or "public"
    driver.rollback()
    schemas = {table.key: table.schema or default_schema for table in tables}
    displays = [f"{schemas[t.key]}.{t.name}" for t in tables]
    key = watermark_key or ",".join(sorted(displays))
    watermark_schema = watermark_schema or sorted(set(schemas.values()))[0]

    migrations = {}
    for table, display in zip(tables, displays, strict=True):
        done = prepare_table(
            driver,
            table,
            conn.dialect,
            default_schema,
            terminate_blockers_after=terminate_blockers_after,
            logger=log,
        )
        if done:
            migrations[display] = done
    watermarks.ensure_table(driver, watermark_schema)
    with driver.transaction():
        targets = [describe_target(driver, table, schemas[table.key]) for table in tables]
        stored = watermarks.read(driver, watermark_schema, key)
    if high_watermark is HighWatermark.LATEST:
        start = stored
    elif high_watermark is HighWatermark.EARLIEST:
        start = None
    else:
        start = high_watermark
    log.info("Ingesting into %s from high watermark %r (%s)", ", ".join(displays), start, mode.name)

    copier = BatchCopier(
        driver, targets, buffer_rows, divert=lambda target: upsert.divert_to_staging(driver, target)
    )
    totals = {t.display: 0 for t in targets}
    state = _Progress(start)

    def load(batch: Any) -> None:
        state.number += 1
        new_watermark, rows = _split_batch(batch, state.number)
        watermarks.check_increases(state.watermark, new_watermark, state.number)
        if mode.deletes_all_rows and state.number == 1:
            for target in targets:
                upsert.delete_all_rows(driver, target)
        _load_rows(driver, copier, targets, rows)
        watermarks.write(driver, watermark_schema, key, new_watermark, displays, mode.name)
        state.watermark = new_watermark
        state.pending.append({t.display: t.rows for t in targets})
        log.info(
            "Batch %d (high watermark %r): %s",
            state.number,
            new_watermark,
            ", ".join(f"{t.display} {t.rows:,} rows" for t in targets),
        )

    def log_transaction() -> None:  # inside the transaction: one row per table
        mark = None if state.watermark is None else str(state.watermark)[:200]
        for target in targets:
            rows = sum(counts[target.display] for counts in state.pending)
            etl_log.record(
                driver, kind="ingest", table=target.display, rows=rows, version=mark,
                detail={"key": key},
            )  # fmt: skip

    def committed() -> None:
        for counts in state.pending:
            for display, rows in counts.items():
                totals[display] += rows
        state.committed, state.stored = state.number, state.watermark
        state.pending.clear()

    if mode.commits_each_batch:
        for batch in batches(start):
            with driver.transaction():
                load(batch)
                log_transaction()
            committed()
    else:
        iterator = iter(batches(start))
        for first in iterator:  # at most once: the inner loop takes the rest (none: no transaction)
            with driver.transaction():
                for batch in chain([first], iterator):
                    load(batch)
                log_transaction()
            committed()
    return IngestResult(state.stored, state.committed, totals, mode, key, migrations)


class _Progress:
    def __init__(self, watermark: Any):
        self.watermark = self.stored = watermark
        self.number = self.committed = 0
        self.pending: list[dict[str, int]] = []


def _driver_connection(conn: Any) -> psycopg.Connection:
    if not isinstance(conn, sa.Connection):
        raise IngestError(
            f"ingest() needs a SQLAlchemy Connection (engine.connect()), not {type(conn).__name__}."
        )
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        raise IngestError(
            f"ingest() needs PostgreSQL through the psycopg (3) driver; the engine uses "
            f"{conn.dialect.name}+{conn.dialect.driver}. Use a postgresql+psycopg:// URL."
        )
    if conn.in_transaction():
        raise IngestError(
            "ingest() needs a connection that is not in a transaction: it commits each batch "
            "itself. Commit or roll back first, and do not call it inside conn.begin()."
        )
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise IngestError(
            "ingest() needs an open psycopg connection; the SQLAlchemy connection has none "
            "(closed or invalidated)."
        )
    if driver.info.transaction_status != TransactionStatus.IDLE:
        raise IngestError(
            "ingest() needs a connection that is not in a transaction (the psycopg connection "
            "has one open): commit or roll back first."
        )
    return driver


def _split_batch(batch: Any, number: int) -> tuple[Any, Iterable]:
    try:
        watermark, rows = batch
    except (TypeError, ValueError):
        raise IngestError(
            f"Batch {number} is {batch!r:.80}, not a (high_watermark, rows) pair."
        ) from None
    return watermark, rows


def _load_rows(
    conn: psycopg.Connection, copier: BatchCopier, targets: list[TableTarget], rows: Iterable
) -> None:
    direct_allowed = (
        len(targets) == 1
    )  # a direct COPY is undone by a savepoint: one table per batch
    try:
        for target in targets:
            upsert.begin_table(conn, target, direct_allowed)
        copier.copy_batch(rows)
    except BaseException:
        for target in targets:
            upsert.discard(target)
        raise
    for target in targets:
        try:
            upsert.finish_table(conn, target)
        except psycopg.Error as exc:
            raise IngestError(
                f"Merging the batch into {target.display} failed: {first_line(exc)}. "
                "The batch was rolled back."
            ) from None
