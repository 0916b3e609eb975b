"""The byte path: cut and convert record blocks without decoding them to ``str``.

For a data file whose field terminator is TAB and row terminator LF, in UTF-8 or ASCII (or a
single-byte ASCII superset such as latin-1 / cp1252), every TAB and LF byte is that character and
no multi-byte sequence contains one.  So records can be cut on bytes, and a block whose fields
hold no terminators (bcp: TABs == (fields-1) x LFs) or only MySQL's escapes can be turned into
COPY text with ``bytes.replace`` and compiled regexes, all in C.  What this module cannot prove
exact returns None (``fast_bytes_block``) and the block is decoded and goes through the text path
(``copy_text``), which gives the same bytes or the error that names file, record and column.

- ``byte_encoding(name)``: the codec to decode a byte block with, or None (text path only).
- ``iter_byte_record_blocks(raw, file_format, chunk_bytes, fields)``: (block, terminator, records)
  triples: ``bytes`` blocks with terminator "\\n" when the file qualifies, else the text path's
  ``str`` blocks (UTF-16 BOM, CRLF rows, quotes, other terminators or encodings). `records` is the
  block's record count when cutting it proved TABs == (fields-1) x LFs, else None.
- ``ByteFastPath(file_format, columns)``:
  ``.convert(block, records) -> (COPY bytes, records) | None``;
  ``.for_copy(block, records) -> (bytes, records, COPY NULL string) | None`` for the loader.
- ``count_byte_records(block, file_format, fields) -> int | None``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from ingest_platform.dumps.dialect import FileFormat, parse_type_name
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import (
    MAX_RECORD,
    ByteReader,
    iter_record_blocks,
    iter_text,
    plain_records,
    record_too_long,
    resolve_row_terminator,
    sniff_encoding,
)

# Codec (by its normalized name) -> codec used to decode one byte block.  UTF-8 blocks are
# decoded independently: a block ends in LF, which never sits inside a multi-byte sequence.
_BYTE_ENCODINGS = {
    "utf-8": "utf-8",
    "utf-8-sig": "utf-8",
    "ascii": "ascii",
    "iso8859-1": "latin-1",
    "cp1252": "cp1252",
}
_DATE_TYPES = {"date", "timestamp", "timestamptz"}

# bcp: a TAB followed by a TAB or LF ends an empty field (NULL): append \N after it.  A regex with a
# literal first character scans faster than bytes.replace on b"\t\t", and the lookahead handles
# runs of empty fields in one pass.
_EMPTY_AFTER_TAB = re.compile(rb"\t(?=[\t\n])")
_EMPTY_FIRST_FIELD = re.compile(rb"\n(?=\t)")  # LF is rare: a regex finds it faster than replace()
# A NUL that is not a whole field (the per-row path rejects it; the whole-field NUL is bcp's '').
_NUL_IN_FIELD = re.compile(rb"\x00(?:[^\t\n]|(?<=[^\t\n]\x00))")
# MySQL: \N that is not a whole field (the per-row path writes "N"; refuse, as _fast_mysql does).
_NULL_IN_FIELD = re.compile(rb"\\N(?:[^\t\n]|(?<=[^\t\n]\\N))")
_MYSQL_PAIRS = (b"\\\n", b"\\\t", b"\\\r", b"\\N", b"\\n", b"\\t", b"\\r")


def byte_encoding(declared: str) -> str | None:
    try:
        return _BYTE_ENCODINGS.get(codecs.lookup(declared).name)
    except LookupError:
        return None  # the text path reports it


def byte_path_format(file_format: FileFormat) -> bool:
    """True when blocks of this format may be cut (and counted) on bytes."""
    return (
        file_format.field_terminator == "\t"
        and file_format.row_terminator == "\n"
        and not file_format.quote
        and file_format.escape in ("", "\\")
        and byte_encoding(file_format.encoding) is not None
    )


class _Replay:
    """A reader that returns already-read chunks first, then the rest of the stream."""

    def __init__(self, chunks: list[bytes], raw: ByteReader):
        self.chunks, self.raw = chunks, raw

    def read(self, size: int = -1) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        return self.raw.read(size)


def iter_byte_record_blocks(
    raw: ByteReader,
    file_format: FileFormat,
    chunk_bytes: int,
    fields: int,
    verify_cuts: bool = True,
) -> Iterator[tuple[bytes | str, str, int | None]]:
    """(block, row terminator, records or None) of whole records: bytes when the file qualifies,
    else str.

    verify_cuts=False cuts a bcp file at its last LF without counting: a block may then end inside
    a field that holds a LF (see ``ByteFastPath.for_copy``, optimistic).
    """
    head = raw.read(chunk_bytes)
    encoding, bom = sniff_encoding(head, file_format.encoding)
    declared = byte_encoding(file_format.encoding)
    eligible = byte_path_format(file_format) and (
        not bom or (declared == "utf-8" and encoding == "utf-8")
    )
    read = [head]
    buffer = head[bom:]
    if eligible:
        # The first record decides LF vs CRLF (bcp), as in the text path.
        while b"\n" not in buffer and len(buffer) < 1 << 24:
            data = raw.read(chunk_bytes)
            if not data:
                break
            read.append(data)
            buffer += data
        at = buffer.find(b"\n")
        probe = buffer if at == -1 else buffer[: at + 1]
        eligible = resolve_row_terminator(probe.decode("latin-1"), file_format) == "\n"
    if not eligible:
        for block, terminator in iter_record_blocks(
            iter_text(_Replay(read, raw), file_format.encoding, chunk_bytes),
            file_format,
            chunk_bytes,
            fields,
        ):
            yield block, terminator, None
        return
    done = bom  # bytes of the file yielded
    read_size = chunk_bytes  # doubles while no record ends (each chunk searched: quadratic)
    while True:
        if len(buffer) >= chunk_bytes:
            cut, records = last_byte_boundary(buffer, file_format, fields, verify_cuts)
            if cut > 0:
                yield buffer[:cut], "\n", records
                buffer, done, read_size = buffer[cut:], done + cut, chunk_bytes
            elif len(buffer) > MAX_RECORD:
                nul = buffer.count(0, 0, 4096) * 2 > min(len(buffer), 4096)
                raise record_too_long(done, "byte", "\n", fields, nul)
            else:
                read_size = min(len(buffer), MAX_RECORD + 1 - len(buffer))
        data = raw.read(max(read_size, chunk_bytes))
        if not data:
            break
        buffer += data
    if buffer:
        cut, records = last_byte_boundary(buffer, file_format, fields, verify_cuts)
        if cut > 0:
            yield buffer[:cut], "\n", records
            buffer = buffer[cut:]
    if buffer:
        yield buffer if buffer.endswith(b"\n") else buffer + b"\n", "\n", None


def last_byte_boundary(
    buffer: bytes, file_format: FileFormat, fields: int, verify: bool = True
) -> tuple[int, int | None]:
    """(end index of the last complete record in buffer or -1, records up to it when counting proved
    every LF a record end, else None): text_stream._last_boundary on bytes. verify=False: the last
    LF, uncounted (bcp)."""
    if not file_format.escape:
        at = buffer.rfind(b"\n")
        if at == -1:
            return -1, None
        cut = at + 1
        if not verify:
            return cut, None
        records = buffer.count(b"\n", 0, cut)
        if buffer.count(b"\t", 0, cut) == (fields - 1) * records:
            return cut, records
        _, cut = plain_records(buffer, b"\t", b"\n", fields)  # LF inside a field: bcp's own rule
        return (cut, None) if cut > 0 else (-1, None)
    end = len(buffer)
    while True:
        at = buffer.rfind(b"\n", 0, end)
        if at == -1:
            return -1, None
        run = 0
        while at - run - 1 >= 0 and buffer[at - run - 1] == 0x5C:  # backslash
            run += 1
        if run % 2 == 0:
            return at + 1, None
        end = at


def count_byte_records(block: bytes, file_format: FileFormat, fields: int) -> int | None:
    """Records in a bytes block, or None when only a parse can tell (LF inside a bcp field)."""
    if file_format.escape:
        unescaped = block.replace(b"\\\\", b"")
        return unescaped.count(b"\n") - unescaped.count(b"\\\n")
    records = block.count(b"\n")
    if block.count(b"\t") == (fields - 1) * records:
        return records
    return None


class ByteFastPath:
    """COPY text for a bytes block by whole-block byte operations, when that is provably exact.

    Gives the same bytes as ``PerRowEncoder.encode_block`` on the decoded block.  Blocks always end
    in LF (``iter_byte_record_blocks``).
    """

    def __init__(self, file_format: FileFormat, columns: list[Column]):
        self.encoding = byte_encoding(file_format.encoding)
        # Columns in their own charset are the same bytes in every ASCII-compatible one: only
        # ASCII blocks may pass.
        self.ascii_only = file_format.column_charsets and any(c.encoding for c in columns)
        self.tabs = len(columns) - 1
        self.kind = None
        if (
            self.encoding is None
            or not byte_path_format(file_format)
            or len(columns) < 2
            or any(parse_type_name(c.pg_type)[0] == "bytea" for c in columns)
        ):
            return
        if not file_format.escape and file_format.null == "" and file_format.empty_string == "\0":
            self.kind = "bcp"
        elif (
            file_format.escape == "\\"
            and file_format.null == "\\N"
            and file_format.empty_string == ""
        ):
            self.kind = "mysql"
            self.zero_dates = file_format.zero_dates == "null" and any(
                parse_type_name(c.pg_type)[0] in _DATE_TYPES for c in columns
            )

    def convert(
        self, block: bytes, records: int | None = None, check_encoding: bool = True
    ) -> tuple[bytes, int] | None:
        """(COPY text with NULL \\N, records); `records` when the cut already proved them (bcp).

        check_encoding=False leaves invalid UTF-8 to PostgreSQL, which rejects it too, only without
        naming the column: the loader then re-reads the file with the check to name it.
        """
        if self.kind is None:
            return None
        if not block.isascii():
            if self.encoding != "utf-8" or self.ascii_only:
                return None
            if check_encoding:
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        if self.kind == "bcp":
            return self._bcp(block, records)
        return self._mysql(block)

    def for_copy(
        self, block: bytes, records: int | None = None, optimistic: bool = False
    ) -> tuple[bytes, int | None, str] | None:
        """(bytes, records, COPY NULL string) for the loader, encoding left to PostgreSQL.

        A bcp block without empty strings (NUL fields) goes to COPY as it is, with NULL '': bcp's
        own empty-field NULL. That skips the whole-block rewrite to \\N, the costliest step
        left; COPY text with NULL '' cannot hold an empty string, so blocks with NULs are converted.
        optimistic=True skips counting fields too (records None): PostgreSQL counts them, and the
        loader re-reads carefully if it refuses (a LF inside a bcp field looks like a short row).
        """
        if (
            self.kind == "bcp"
            and b"\0" not in block
            and ((self.encoding == "utf-8" and not self.ascii_only) or block.isascii())
        ):
            if records is None and not optimistic:
                records = block.count(b"\n")
                if block.count(b"\t") != self.tabs * records:
                    return None
            if b"\\" in block:
                block = block.replace(b"\\", b"\\\\")
            if b"\r" in block:
                block = block.replace(b"\r", b"\\r")
            return block, records, ""
        converted = self.convert(block, records, check_encoding=False)
        return None if converted is None else (*converted, "\\N")

    def _bcp(self, block: bytes, records: int | None) -> tuple[bytes, int] | None:
        # bcp has no escapes: with TAB/LF terminators and TABs == (fields-1) x LFs no field holds
        # a terminator, so: escape backslash and CR as COPY does, empty field -> \N, and a field
        # that is exactly NUL -> '' (any other NUL is an error the per-row path reports).
        if records is None:
            records = block.count(b"\n")
            if block.count(b"\t") != self.tabs * records:
                return None
        nul = b"\0" in block
        if nul and _NUL_IN_FIELD.search(block):
            return None
        if b"\\" in block:
            block = block.replace(b"\\", b"\\\\")
        if b"\r" in block:
            block = block.replace(b"\r", b"\\r")
        text = _EMPTY_AFTER_TAB.sub(b"\t\\\\N", block)
        text = _EMPTY_FIRST_FIELD.sub(b"\n\\\\N", text)
        if text[:1] == b"\t":
            text = b"\\N" + text
        if nul:
            text = text.replace(b"\0", b"")
        return text, records

    def _mysql(self, block: bytes) -> tuple[bytes, int] | None:
        # copy_text._fast_mysql on bytes: MySQL's escapes are COPY's, except backslash + raw
        # LF/TAB/CR (COPY wants \n \t \r), a raw CR in data, and \0 \Z \b (refused).
        if b"\0" in block:
            return None
        if self.zero_dates and (b"0000-" in block or b"-00" in block):
            return None
        text = block.replace(b"\\\\", b"\0")  # now every backslash starts exactly one escape pair
        escapes = text.count(b"\\")
        if escapes:
            if escapes != sum(text.count(pair) for pair in _MYSQL_PAIRS):
                return None
        if b"\r" in text:
            text = text.replace(b"\\\r", b"\r").replace(b"\r", b"\\r")
        if escapes:
            text = text.replace(b"\\\n", b"\\n").replace(b"\\\t", b"\\t")
        records = text.count(b"\n")  # from here on, raw TABs and LFs are only separators
        if text.count(b"\t") != self.tabs * records:
            return None
        if escapes and _NULL_IN_FIELD.search(text):
            return None
        if b"\0" in text:
            text = text.replace(b"\0", b"\\\\")
        return text, records
