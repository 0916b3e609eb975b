"""A table's reject budget: load every record that can load, set aside the ones that cannot.

SQL Server's BULK INSERT skips up to MAXERRORS rows it cannot import (bcp: -m; PostgreSQL 17:
COPY ... ON_ERROR ignore). A table whose file format has ``max_errors`` > 0 is COPYed here instead
of in one stream: block by block (the reader's blocks of whole records), each block one COPY in its
own transaction into the version's load table, which readers never see (a failed load drops it,
so committing blocks one by one changes nothing outside the load).

- A block the reader converts and PostgreSQL takes loads as it is: clean files pay one COPY per
  block (~1 MiB), nothing more.
- A block the reader refuses, or whose COPY PostgreSQL rejects, is split into its records
  (``text_stream.raw_records``: the readers' own boundaries). Each record is converted alone; the
  ones the reader refuses are rejected, the rest are COPYed, and a record PostgreSQL rejects (by
  its line) is rejected and the rest COPYed again. So a rejected record is exactly one record,
  every other record loads once.
- A ``Reject`` keeps the record's raw bytes, its place and the reason; the loader writes them to
  the quarantine (``postgres/quarantine.py``) in the version's attach transaction.
- More than ``max_errors`` rejects: ``RejectBudgetExceeded`` naming the first ones; the load fails
  as a strict one does and nothing is loaded.

Workers: each worker copies the blocks it takes from the queue this way and returns its rejects;
it knows block indexes, not file record numbers, so the main process places them (``place``: one
pass counting records) and checks the budget over all workers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from ingest_platform.dumps.byte_blocks import count_byte_records
from ingest_platform.dumps.copy_source import Block, CopySource
from ingest_platform.dumps.reader import BlockEncoder
from ingest_platform.dumps.text_stream import BAD_BYTE_ERRORS, raw_records
from ingest_platform.errors import FormatError
from ingest_platform.postgres.copy_errors import CopyRejected, copy_error_place, copy_format_error
from ingest_platform.postgres.quarantine import QuarantinedRecord
from ingest_platform.postgres.versioned_tables import VersionLoad, copy_into

_RECORD_PREFIX = re.compile(r"^record \d+: ")
_FIRST_ERRORS = 5  # rejects an over-budget error names


@dataclass(frozen=True)
class Reject:
    """One record that did not load. `position` is 1-based among its block's records (header rows
    included); `record` the 1-based record number in the file, once known."""

    block: int
    position: int
    column: str | int | None
    reason: str
    raw: bytes
    record: int | None = None

    def describe(self) -> str:
        where = "record ?" if self.record is None else f"record {self.record}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.reason}"

    def quarantined(self, file: str) -> QuarantinedRecord:
        assert self.record is not None, "place() the rejects first"
        column = None if self.column is None else str(self.column)
        return QuarantinedRecord(file, self.record, column, self.reason, self.raw)


class RejectBudgetExceeded(FormatError):
    """More records failed than the table's ``max_errors`` allows; names the first of them."""

    def __init__(self, file: str, max_errors: int, rejects: list[Reject]):
        self.max_errors, self.rejects = max_errors, rejects
        first = rejects[0]
        listed = "; ".join(
            f"({n}) {r.describe()}" for n, r in enumerate(rejects[:_FIRST_ERRORS], start=1)
        )
        super().__init__(
            f"at least {len(rejects)} records cannot be loaded and max_errors is {max_errors}, so "
            f"nothing was loaded for this version. First errors: {listed}. Fix the file, or allow "
            "more errors (BULK INSERT ... MAXERRORS, or max_errors in the manifest or dialect) to "
            "load the rest and quarantine these",
            file=file,
            line=first.record,
            column=first.column,
        )

    def __reduce__(self):
        # Picklable whole: workers raise it in the main process, which places the records.
        return type(self), (self.file, self.max_errors, self.rejects)


class BudgetedCopy:
    """COPY blocks of one data file into a load table, rejecting bad records within the budget."""

    def __init__(self, source: CopySource, load: VersionLoad, whole_file: bool):
        self.source, self.load, self.whole_file = source, load, whole_file
        self.encoder = BlockEncoder(source.member, source.file_format, list(source.columns))
        self.max_errors = source.file_format.max_errors
        self.rejects: list[Reject] = []
        self._text_encoding: str | None = None

    def run(
        self, conn: psycopg.Connection, blocks: Iterable[Block], progress: Any = None
    ) -> tuple[int, int, list[Reject]]:
        """(rows, bytes, rejects) of the blocks. `whole_file`: the blocks are the file's, in order,
        so rejects get their record numbers here (a worker's are placed later)."""
        rows = sent = 0
        next_record, to_skip = 1, self.source.file_format.header_rows
        for index, block, terminator, records in blocks:
            # Header rows, as CopyChunks counts them: through the file, or all in block 0.
            skip = to_skip if self.whole_file or index == 0 else 0
            first = next_record if self.whole_file else None
            loaded, nbytes, count = self._block(
                conn, index, block, terminator, first, skip, records
            )
            to_skip -= min(skip, count)
            next_record += count
            rows, sent = rows + loaded, sent + nbytes
            if progress is not None:
                progress.block_read(loaded)
        return rows, sent, self.rejects

    def _block(
        self,
        conn: psycopg.Connection,
        index: int,
        block: str | bytes,
        terminator: str,
        first: int | None,
        skip: int,
        records: int | None,
    ) -> tuple[int, int, int]:
        """(rows loaded, bytes sent, records in the block, header rows included)."""
        try:
            chunk, count, null = self.encoder.encode_for_copy(
                block, terminator, first or 1, skip, records
            )
        except FormatError:
            pass  # a record the reader refuses: find it
        else:
            try:
                return (*copy_into(conn, self.load, [(chunk, null)]), count)
            except CopyRejected:
                pass  # rolled back; a record PostgreSQL refuses: find it
        return self._record_by_record(conn, index, block, terminator, first, skip)

    def _record_by_record(
        self,
        conn: psycopg.Connection,
        index: int,
        block: str | bytes,
        terminator: str,
        first: int | None,
        skip: int,
    ) -> tuple[int, int, int]:
        encoding = self._encoding(block)
        text = block.decode(encoding, BAD_BYTE_ERRORS) if isinstance(block, bytes) else block
        fmt, columns = self.source.file_format, self.source.columns
        raws = raw_records(text, terminator, fmt, len(columns))
        good: list[tuple[int, str, bytes]] = []  # (position, raw record, its COPY line)
        encode = self.encoder.per_row.encode_block  # strict: raises on the record's first error
        for position, raw in enumerate(raws, start=1):
            if position <= skip:
                continue
            record = None if first is None else first + position - 1
            try:
                line, _ = encode(raw + terminator, terminator, record or 1)
            except FormatError as error:
                reason = _RECORD_PREFIX.sub("", error.message)
                self._reject(index, position, record, error.column, reason, raw, encoding)
            else:
                good.append((position, raw, line))
        while good:
            try:
                rows, sent = copy_into(conn, self.load, [b"".join(line for *_, line in good)])
                return rows, sent, len(raws)
            except CopyRejected as rejected:
                if rejected.line is None or not 0 < rejected.line <= len(good):
                    raise copy_format_error(
                        rejected.message, rejected.context, self.source.member, None
                    ) from None
                position, raw, _ = good.pop(rejected.line - 1)
                column, value = copy_error_place(rejected.context)
                reason = rejected.message + ("" if value is None else f" (value {value[:200]!r})")
                record = None if first is None else first + position - 1
                self._reject(index, position, record, column, reason, raw, encoding)
        return 0, 0, len(raws)

    def _reject(
        self,
        index: int,
        position: int,
        record: int | None,
        column: str | int | None,
        reason: str,
        raw: str,
        encoding: str,
    ) -> None:
        self.rejects.append(
            Reject(index, position, column, reason, raw.encode(encoding, BAD_BYTE_ERRORS), record)
        )
        if len(self.rejects) > self.max_errors:
            raise RejectBudgetExceeded(self.source.member, self.max_errors, self.rejects)

    def _encoding(self, block: str | bytes) -> str:
        """The codec that turns the block's text back into the file's bytes."""
        if isinstance(block, bytes):
            return self.encoder.byte_path.encoding or self.source.file_format.encoding
        if self._text_encoding is None:
            self._text_encoding = self.source.file_encoding()
        return self._text_encoding


def place(source: CopySource, rejects: list[Reject]) -> list[Reject]:
    """Rejects with their file record numbers, in file order: one pass over the file counts the
    records of the blocks before each reject's block (a worker only saw its own blocks)."""
    unplaced = {r.block for r in rejects if r.record is None}
    before: dict[int, int] = {}
    if unplaced:
        fmt, fields, total = source.file_format, len(source.columns), 0
        with source.blocks() as blocks:
            for index, block, terminator, records in blocks:
                if index > max(unplaced):
                    break
                before[index] = total
                if records is None and isinstance(block, bytes):
                    records = count_byte_records(block, fmt, fields)
                if records is None:
                    if isinstance(block, bytes):  # TAB/LF in an ASCII superset: latin-1 keeps
                        block = block.decode("latin-1")  # every byte, so the same records
                    records = len(raw_records(block, terminator, fmt, fields))
                total += records
    placed = [
        r if r.record is not None else replace(r, record=before[r.block] + r.position)
        for r in rejects
    ]
    return sorted(placed, key=lambda r: r.record or 0)


def check_budget(source: CopySource, rejects: list[Reject]) -> None:
    """Raise RejectBudgetExceeded when the (placed) rejects of all workers are over the budget."""
    if len(rejects) > source.file_format.max_errors:
        raise RejectBudgetExceeded(source.member, source.file_format.max_errors, rejects)
