"""Stream a table's data file out of a dump ZIP as COPY-ready chunks; count its rows.

Chunks are ``bytes`` in PostgreSQL COPY text format, UTF-8, each ending on a record boundary;
concatenated they are one valid ``COPY .. FROM STDIN`` body.  Memory stays flat in file size:
the zip member is read in ``chunk_bytes`` pieces and only one block of records is held.

Parallelism: a zip member is one deflate stream, so a byte range cannot be decoded without
reading everything before it.  Splitting a file across workers would make every worker
decompress from the start; one reader per file (and one file per worker) is the plan instead.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from ingest_platform.dumps.copy_text import RowEncoder, fast_block
from ingest_platform.dumps.dialect import FileFormat
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import iter_record_blocks, iter_text, simple_split_is_exact
from ingest_platform.errors import DumpError

DEFAULT_CHUNK_BYTES = 1 << 20
Path_ = Literal["auto", "fast", "row"]


def iter_copy_chunks(
    dump_path: str | Path,
    member: str,
    file_format: FileFormat,
    columns: list[Column],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    path: Path_ = "auto",
) -> Iterator[bytes]:
    """Yield COPY text chunks for one data file in the (plain) dump ZIP at dump_path.

    path: "auto" uses the fast path for each block it can convert exactly and the per-row path
    otherwise; "row" forces the per-row path; "fast" raises if a block needs the per-row path
    (for tests and benchmarks).  Raises FormatError with file, record number and column.
    """
    for chunk, _count in _iter_chunks_with_counts(dump_path, member, file_format, columns, chunk_bytes, path):
        if chunk:
            yield chunk


def count_rows(dump_path: str | Path, member: str, file_format: FileFormat, columns: list[Column]) -> int:
    """Number of data rows in the file (header rows excluded), for the "rows loaded" check.

    Counts records the same way the chunk readers split them, without converting fields.
    """
    total = 0
    with _open_member(dump_path, member) as raw:
        blocks = iter_record_blocks(iter_text(raw, file_format.encoding, DEFAULT_CHUNK_BYTES), file_format,
                                    DEFAULT_CHUNK_BYTES, len(columns))
        encoder = RowEncoder(file_format, columns, member)
        for block, terminator in blocks:
            total += _count_records(block, terminator, file_format, encoder)
    return max(total - file_format.header_rows, 0)


def _count_records(block: str, terminator: str, file_format: FileFormat, encoder: RowEncoder) -> int:
    if file_format.escape:
        unescaped = block.replace(file_format.escape * 2, "")
        return unescaped.count(terminator) - unescaped.count(file_format.escape + terminator)
    if not file_format.quote and simple_split_is_exact(
            block, file_format.field_terminator, terminator, len(encoder.columns)):
        return block.count(terminator)
    return len(encoder.split_records(block, terminator))  # embedded terminators: parse


def _iter_chunks_with_counts(dump_path, member, file_format, columns, chunk_bytes, path):
    encoder = RowEncoder(file_format, columns, member)
    next_record = 1                       # 1-based record number in the file, header included
    to_skip = file_format.header_rows
    with _open_member(dump_path, member) as raw:
        blocks = iter_record_blocks(iter_text(raw, file_format.encoding, chunk_bytes), file_format, chunk_bytes,
                                    len(columns))
        for block, terminator in blocks:
            fast = None if path == "row" or to_skip else fast_block(block, terminator, file_format, columns)
            if fast is not None:
                try:
                    chunk = fast.encode("utf-8")
                except UnicodeEncodeError:
                    fast = None  # invalid bytes: the per-row path says where
                else:
                    count = fast.count("\n")
            if fast is None:
                if path == "fast":
                    raise DumpError(f"{member}: block at record {next_record} needs the per-row path")
                chunk, count = encoder.encode_block(block, terminator, next_record, skip=to_skip)
                to_skip = max(to_skip - count, 0)
            next_record += count
            yield chunk, count


class _open_member:
    """Context manager: a streaming file object for one ZIP member, with DumpError on trouble."""

    def __init__(self, dump_path: str | Path, member: str):
        self.dump_path, self.member = str(dump_path), member

    def __enter__(self):
        try:
            self.archive = zipfile.ZipFile(self.dump_path)
            self.raw = self.archive.open(self.member)
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise DumpError(f"{self.dump_path}: cannot read member {self.member!r}: {error}") from error
        return _GuardedReader(self.raw, self.dump_path, self.member)

    def __exit__(self, *exc):
        self.raw.close()
        self.archive.close()


class _GuardedReader:
    """Turns zlib/CRC errors in the middle of a member into DumpError naming the file."""

    def __init__(self, raw, dump_path: str, member: str):
        self.raw, self.dump_path, self.member = raw, dump_path, member

    def read(self, size: int = -1) -> bytes:
        try:
            return self.raw.read(size)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise DumpError(f"{self.dump_path}: member {self.member!r} is corrupt or truncated: {error}") from error
