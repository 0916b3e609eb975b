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
from contextlib import contextmanager
from pathlib import Path

from ingest_platform.dumps.byte_blocks import (
    ByteFastPath,
    byte_encoding,
    count_byte_records,
    iter_byte_record_blocks,
)
from ingest_platform.dumps.copy_text import PerRowEncoder, fast_block
from ingest_platform.dumps.dialect import FileFormat
from ingest_platform.dumps.mysql_bits import bit_field_stream
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import (
    BAD_BYTE_ERRORS,
    RecordTooLong,
    simple_split_is_exact,
)
from ingest_platform.dumps.zip_member import INFLATE_ERRORS, MemberReader, can_stream
from ingest_platform.errors import DumpError, FormatError

DEFAULT_CHUNK_BYTES = 1 << 20
_READ_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    *INFLATE_ERRORS,
)


def iter_copy_chunks(
    dump_path: str | Path,
    member: str,
    file_format: FileFormat,
    columns: list[Column],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[bytes]:
    """Yield COPY text chunks (NULL \\N, UTF-8 checked) for one data file in the plain ZIP.

    Each block takes a fast path when it can convert it exactly, the per-row path otherwise.
    Raises FormatError with file, record number and column.
    """
    encoder = BlockEncoder(member, file_format, columns)
    next_record = 1  # 1-based record number in the file, header included
    to_skip = file_format.header_rows
    with open_record_blocks(dump_path, member, file_format, columns, chunk_bytes) as blocks:
        for block, terminator, records in blocks:
            chunk, count = encoder.encode(block, terminator, next_record, to_skip, records)
            to_skip = max(to_skip - count, 0)
            next_record += count
            if chunk:
                yield chunk


def count_rows(
    dump_path: str | Path, member: str, file_format: FileFormat, columns: list[Column]
) -> int:
    """Number of data rows in the file (header rows excluded), for the "rows loaded" check.

    Counts records the same way the chunk readers split them, without converting fields.
    """
    total = 0
    encoder = PerRowEncoder(file_format, columns, member)
    with open_record_blocks(dump_path, member, file_format, columns) as blocks:
        for block, terminator, records in blocks:
            total += (
                records
                if records is not None
                else _count_records(block, terminator, file_format, encoder)
            )
    return max(total - file_format.header_rows, 0)


def _count_records(
    block: str | bytes, terminator: str, file_format: FileFormat, encoder: PerRowEncoder
) -> int:
    if isinstance(block, bytes):
        count = count_byte_records(block, file_format, len(encoder.columns))
        if count is not None:
            return count
        block = block.decode(byte_encoding(file_format.encoding) or "utf-8", BAD_BYTE_ERRORS)
    if file_format.escape:
        unescaped = block.replace(file_format.escape * 2, "")
        return unescaped.count(terminator) - unescaped.count(file_format.escape + terminator)
    if not file_format.quote and simple_split_is_exact(
        block, file_format.field_terminator, terminator, len(encoder.columns)
    ):
        return block.count(terminator)
    return len(encoder.split_records(block, terminator))  # embedded terminators: parse


class BlockEncoder:
    """One record block -> COPY bytes: the fast path when it is exact, the per-row path otherwise.

    Picklable inputs only, so worker processes build their own from a CopySource.
    """

    def __init__(self, member: str, file_format: FileFormat, columns: list[Column]):
        self.member, self.format, self.columns = member, file_format, columns
        self.per_row = PerRowEncoder(file_format, columns, member)
        self.byte_path = ByteFastPath(file_format, columns)

    def encode(
        self,
        block: str | bytes,
        terminator: str,
        first_record: int,
        skip: int = 0,
        records: int | None = None,
    ) -> tuple[bytes, int]:
        """(COPY bytes, records in the block, skipped header records included).

        A bytes block (from open_record_blocks when the file qualifies) tries the byte path, then
        is decoded and takes the same way as a str block; the output bytes are the same.
        """
        if isinstance(block, bytes):
            if not skip:
                converted = self.byte_path.convert(block, records)
                if converted is not None:
                    return converted
            block = block.decode(self.byte_path.encoding or self.format.encoding, BAD_BYTE_ERRORS)
        if not skip:
            fast = fast_block(block, terminator, self.format, self.columns)
            if fast is not None:
                try:
                    return fast.encode("utf-8"), fast.count("\n")
                except UnicodeEncodeError:
                    pass  # invalid bytes: the per-row path says where
        return self.per_row.encode_block(block, terminator, first_record, skip=skip)

    def encode_for_copy(
        self,
        block: str | bytes,
        terminator: str,
        first_record: int,
        skip: int = 0,
        records: int | None = None,
    ) -> tuple[bytes, int, str]:
        """(COPY bytes, records, COPY NULL string) for the loader: ByteFastPath.for_copy when
        it applies (bcp blocks pass as they are, UTF-8 left to PostgreSQL), else encode() with
        NULL \\N."""
        if isinstance(block, bytes) and not skip:
            ready = self.byte_path.for_copy(block, records)
            if ready is not None:
                chunk, counted, null = ready
                return chunk, counted if counted is not None else chunk.count(b"\n"), null
        return (*self.encode(block, terminator, first_record, skip, records), "\\N")


@contextmanager
def open_record_blocks(
    dump_path: str | Path,
    member: str,
    file_format: FileFormat,
    columns: list[Column],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    verify_cuts: bool = True,
) -> Iterator[Iterator[tuple[str | bytes, str, int | None]]]:
    """The member as (block, row terminator, records or None) of whole records, for BlockEncoder.

    Blocks are undecoded ``bytes`` (terminator "\\n") when the file can be cut on bytes (TAB/LF
    terminators, UTF-8/ASCII, see byte_blocks), else decoded ``str``. `records` is known when
    cutting the block counted them (see byte_blocks), else None; verify_cuts=False: see
    iter_byte_record_blocks.
    """
    with _open_member(dump_path, member) as raw:
        raw = bit_field_stream(raw, file_format, columns, member)  # MySQL BIT: raw bytes
        blocks = iter_byte_record_blocks(raw, file_format, chunk_bytes, len(columns), verify_cuts)
        yield _naming_the_file(blocks, member)


def _naming_the_file(blocks: Iterator, member: str) -> Iterator:
    try:
        yield from blocks
    except RecordTooLong as error:
        raise FormatError(str(error), file=member) from None


class _open_member:
    """Context manager: a streaming file object for one ZIP member, with DumpError on trouble."""

    def __init__(self, dump_path: str | Path, member: str):
        self.dump_path, self.member = str(dump_path), member

    def __enter__(self):
        try:
            self.archive = zipfile.ZipFile(self.dump_path)
            info = self.archive.getinfo(self.member)
            self.raw = (
                MemberReader(self.dump_path, info) if can_stream(info) else self.archive.open(info)
            )
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise DumpError(
                f"{self.dump_path}: cannot read member {self.member!r}: {error}"
            ) from error
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
        except _READ_ERRORS as error:
            raise DumpError(
                f"{self.dump_path}: member {self.member!r} is corrupt or truncated: {error}"
            ) from error
