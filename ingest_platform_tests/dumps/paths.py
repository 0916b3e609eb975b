"""The reader's paths one at a time, built from the real parts, for tests that compare them.

The reader picks a path per block (byte path, str fast path, per-row path); these helpers run one
path over a whole data file so tests can check that every path gives the same COPY bytes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ingest_platform.dumps.archive import Dump
from ingest_platform.dumps.byte_blocks import ByteFastPath
from ingest_platform.dumps.copy_text import PerRowEncoder, fast_block
from ingest_platform.dumps.dialect import FileFormat
from ingest_platform.dumps.reader import BlockEncoder, open_record_blocks
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import iter_record_blocks, iter_text


def entry_of(dump: Dump, table: str = "t") -> tuple[Path, str, FileFormat, list[Column]]:
    """(archive path, data member, file format, columns): iter_copy_chunks' leading arguments."""
    entry = dump.tables[table]
    assert entry.data_member is not None, f"{table} has no data file"
    return dump.archive_path, entry.data_member, entry.file_format, entry.schema.columns


def _text_blocks(archive_path, member, file_format, columns, chunk_bytes):
    """The file decoded to str blocks first (the path before the byte path existed)."""
    with zipfile.ZipFile(archive_path) as archive:
        raw = io.BytesIO(archive.read(member))
    texts = iter_text(raw, file_format.encoding, chunk_bytes)
    return iter_record_blocks(texts, file_format, chunk_bytes, len(columns))


def _encode_all(blocks, encode, header_rows) -> bytes:
    out, next_record, to_skip = [], 1, header_rows
    for block, terminator in blocks:
        chunk, count = encode(block, terminator, next_record, to_skip)
        to_skip, next_record = max(to_skip - count, 0), next_record + count
        out.append(chunk)
    return b"".join(out)


def per_row_copy_text(dump, table="t", chunk_bytes=1 << 20) -> bytes:
    """The per-row path alone: the reference every fast path must equal."""
    archive_path, member, file_format, columns = entry_of(dump, table)
    encoder = PerRowEncoder(file_format, columns, member)
    blocks = _text_blocks(archive_path, member, file_format, columns, chunk_bytes)
    return _encode_all(
        blocks,
        lambda b, t, first, skip: encoder.encode_block(b, t, first, skip=skip),
        file_format.header_rows,
    )


def text_path_copy_text(dump, table="t", chunk_bytes=1 << 20) -> bytes:
    """str blocks only: the str fast path where it applies, the per-row path elsewhere."""
    archive_path, member, file_format, columns = entry_of(dump, table)
    encoder = BlockEncoder(member, file_format, columns)
    blocks = _text_blocks(archive_path, member, file_format, columns, chunk_bytes)
    return _encode_all(blocks, encoder.encode, file_format.header_rows)


def byte_path_copy_text(dump, table="t", chunk_bytes=1 << 20) -> bytes:
    """The byte path alone; AssertionError naming the block it misses."""
    archive_path, member, file_format, columns = entry_of(dump, table)
    byte_path = ByteFastPath(file_format, columns)
    out = []
    with open_record_blocks(archive_path, member, file_format, columns, chunk_bytes) as blocks:
        for index, (block, _terminator, records) in enumerate(blocks):
            assert isinstance(block, bytes), f"block {index} is not cut on bytes"
            converted = byte_path.convert(block, records)
            assert converted is not None, f"block {index} misses the byte path"
            out.append(converted[0])
    return b"".join(out)


def fast_paths_copy_text(dump, table="t", chunk_bytes=1 << 20) -> bytes:
    """Byte path or str fast path for every block; AssertionError when one needs the per-row
    path."""
    archive_path, member, file_format, columns = entry_of(dump, table)
    encoder = BlockEncoder(member, file_format, columns)
    out = []
    with open_record_blocks(archive_path, member, file_format, columns, chunk_bytes) as blocks:
        for index, (block, terminator, records) in enumerate(blocks):
            converted = (
                encoder.byte_path.convert(block, records) if isinstance(block, bytes) else None
            )
            if converted is None:
                text = (
                    block
                    if isinstance(block, str)
                    else block.decode(encoder.byte_path.encoding or file_format.encoding)
                )
                fast = fast_block(text, terminator, file_format, columns)
                assert fast is not None, f"block {index} needs the per-row path"
                converted = fast.encode("utf-8"), 0
            out.append(converted[0])
    return b"".join(out)
