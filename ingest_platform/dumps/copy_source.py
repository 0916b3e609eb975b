"""A table's data file as COPY text: the one object the loader gets from the dump reader.

The loader (``ingest_platform.loading``) knows PostgreSQL; this module knows files. A
``CopySource`` is picklable, so the loader can hand it to worker processes. The loader:

- COPYs ``optimistic_chunks()`` first when there are any (plain bcp files pass to COPY unread;
  any failure of that COPY means: read carefully), then ``chunks()``: every block converted
  exactly, bcp blocks without empty strings passed with NULL '', UTF-8 left to PostgreSQL;
- or, with workers, cuts the file into ``blocks()`` in the main process and gives each worker
  ``chunks(its_blocks)``;
- on a rejected COPY line asks the stream for ``record_of(line)``, and on bad UTF-8 asks the
  source to ``find_error()`` (a re-read with the check, which names record and column).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from ingest_platform.dumps.byte_blocks import ByteFastPath
from ingest_platform.dumps.dialect import FileFormat
from ingest_platform.dumps.reader import (
    DEFAULT_CHUNK_BYTES,
    BlockEncoder,
    iter_copy_chunks,
    open_record_blocks,
)
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import sniff_encoding
from ingest_platform.errors import FormatError, IngestError

# A block of whole records for a worker: (index in the file, data, row terminator, records or None).
Block = tuple[int, str | bytes, str, int | None]
# What COPY receives: the text and its NULL string.
Chunk = tuple[bytes, str]


class _NotOptimistic(Exception):
    """A block the optimistic read cannot pass to COPY as it is."""


@dataclass(frozen=True)
class CopySource:
    """One data file of a (plain) dump ZIP, read as COPY text. Picklable."""

    archive_path: str
    member: str
    file_format: FileFormat
    columns: tuple[Column, ...]
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    @property
    def size(self) -> int:
        """Uncompressed bytes."""
        with zipfile.ZipFile(self.archive_path) as archive:
            return archive.getinfo(self.member).file_size

    def file_encoding(self) -> str:
        """The encoding the file's text is decoded with: a byte-order mark's, else the declared."""
        with zipfile.ZipFile(self.archive_path) as archive, archive.open(self.member) as raw:
            return sniff_encoding(raw.read(4), self.file_format.encoding)[0]

    def optimistic_chunks(self) -> Iterator[Chunk] | None:
        """Plain bcp blocks as they are, nothing counted (PostgreSQL counts the fields), or None
        when the format does not allow it. A LF inside a bcp field looks like a short row to
        COPY: when COPY (or this reader) refuses, load chunks() instead, which also names the
        error of bad input. Halves the reader's CPU on plain bcp files."""
        byte_path = ByteFastPath(self.file_format, list(self.columns))
        if byte_path.kind != "bcp" or self.file_format.header_rows:
            return None
        return self._optimistic(byte_path)

    def _optimistic(self, byte_path: ByteFastPath) -> Iterator[Chunk]:
        with self._record_blocks(verify_cuts=False) as blocks:
            for block, _terminator, _records in blocks:
                ready = (
                    byte_path.for_copy(block, optimistic=True) if isinstance(block, bytes) else None
                )
                if ready is None:
                    raise _NotOptimistic(self.member)
                yield ready[0], ready[2]

    @contextmanager
    def blocks(self) -> Iterator[Iterator[Block]]:
        """The file cut into numbered blocks of whole records, for chunks(blocks) in workers."""
        with self._record_blocks() as blocks:
            yield ((index, *block) for index, block in enumerate(blocks))

    def chunks(self, blocks: Iterable[Block] | None = None) -> CopyChunks:
        """The whole file (blocks None) or the given blocks as one COPY stream."""
        return CopyChunks(self, blocks)

    def find_error(self) -> IngestError:
        """Re-read in order, checking the encoding too, to name the exact record and column:
        PostgreSQL does not name the column of bad bytes, and a worker only sees its blocks."""
        try:
            for _ in iter_copy_chunks(
                self.archive_path,
                self.member,
                self.file_format,
                list(self.columns),
                self.chunk_bytes,
            ):
                pass
        except FormatError as error:
            return error
        return IngestError(f"{self.member}: COPY rejected the data, but re-reading found no error")

    def records_before(self, block_index: int) -> int:
        """Records (header included) in the blocks before `block_index`; re-reads the file."""
        encoder = BlockEncoder(self.member, self.file_format, list(self.columns))
        total, header = 0, self.file_format.header_rows
        with self.blocks() as blocks:
            for index, block, terminator, records in blocks:
                if index == block_index:
                    break
                if records is None:
                    skip = header if index == 0 else 0
                    records = encoder.encode(block, terminator, total + 1, skip)[1]
                total += records
        return total + (header if block_index == 0 else 0)

    def _record_blocks(self, verify_cuts: bool = True) -> AbstractContextManager:
        return open_record_blocks(
            self.archive_path,
            self.member,
            self.file_format,
            list(self.columns),
            self.chunk_bytes,
            verify_cuts,
        )


class CopyChunks:
    """One COPY stream of (text, NULL string) chunks; knows which record each line came from."""

    def __init__(self, source: CopySource, blocks: Iterable[Block] | None):
        self.source = source
        self.blocks = blocks  # None: the whole file, read here, so record numbers are the file's
        self.sent: list[tuple[int, int]] = []  # (block index, COPY lines), in stream order

    def __iter__(self) -> Iterator[Chunk]:
        if self.blocks is not None:
            yield from self._encode(self.blocks)
            return
        with self.source.blocks() as blocks:
            yield from self._encode(blocks)

    def _encode(self, blocks: Iterable[Block]) -> Iterator[Chunk]:
        source = self.source
        encoder = BlockEncoder(source.member, source.file_format, list(source.columns))
        whole_file = self.blocks is None
        next_record, to_skip = 1, source.file_format.header_rows
        for index, block, terminator, records in blocks:
            # Header rows: counted through the file here; a worker finds them all in block 0
            # (blocks are ~chunk_bytes).
            skip = to_skip if whole_file else (to_skip if index == 0 else 0)
            try:
                chunk, count, null = encoder.encode_for_copy(
                    block, terminator, next_record, skip, records
                )
            except FormatError:
                if whole_file:
                    raise
                raise source.find_error() from None  # a worker's record numbers are its own
            skipped = min(skip, count)
            to_skip -= skipped
            next_record += count
            self.sent.append((index, count - skipped))
            if chunk:
                yield chunk, null

    def record_of(self, line: int | None) -> int | None:
        """The file's record number (header rows included) of a line of this stream."""
        if line is None:
            return None
        if self.blocks is None:
            return line + self.source.file_format.header_rows
        for index, lines in self.sent:
            if line <= lines:
                return self.source.records_before(index) + line
            line -= lines
        return None
