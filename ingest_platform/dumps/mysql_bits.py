"""BIT columns of MySQL data files (``SELECT ... INTO OUTFILE``, ``mysqldump --tab``).

MySQL and MariaDB write a BIT(n) value as its ceil(n/8) bytes, big-endian and unescaped (every
other binary value is escaped), so such a field may hold TAB, LF, backslash or NUL bytes and the
file cannot be split at its terminators alone. For a table with BIT columns the reader reads the
file through ``BitFieldStream``, which splits each record knowing those widths and writes each BIT
value as its number in decimal ('10' for b'1010'), which loads into the type map's boolean
(bit(1)), bigint or numeric(20,0). NULL stays ``\\N``; the other fields pass unchanged.

A BIT field that starts with the bytes of ``\\N`` may be NULL or a value. The stream takes the
reading with which the whole record splits into its fields, NULL first when both do; in a NOT NULL
column it is a value. So the one value a file cannot tell from NULL, 0x5C4E in a nullable
bit(9..16), loads as NULL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingest_platform.dumps.dialect import FileFormat, parse_type_name
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import ByteReader
from ingest_platform.errors import FormatError

_NULL = b"\\N"
READ_BYTES = 1 << 20


class _NeedMore(Exception):
    """The buffer ends inside the record: read on before deciding."""


def bit_widths(file_format: FileFormat, columns: Sequence[Column]) -> list[int | None] | None:
    """Bytes of each BIT column (None for other columns); None when the file needs no splitting
    by width (no BIT column, or not MySQL's format: backslash escapes and raw binary)."""
    if file_format.escape != "\\" or file_format.binary != "raw" or file_format.quote:
        return None
    widths: list[int | None] = []
    for column in columns:
        base, params, _ = parse_type_name(column.source_type)
        bits = int(params[0]) if base == "bit" and params and params[0].isdigit() else 1
        widths.append((bits + 7) // 8 if base == "bit" else None)
    return widths if any(w is not None for w in widths) else None


def bit_field_stream(
    raw: ByteReader, file_format: FileFormat, columns: Sequence[Column], member: str
) -> ByteReader:
    """`raw` itself, or a BitFieldStream over it when the table has BIT columns."""
    widths = bit_widths(file_format, columns)
    if widths is None:
        return raw
    field, row = (t.encode(file_format.encoding) for t in (file_format.field_terminator, "\n"))
    if len(field) != 1 or file_format.row_terminator != "\n":
        raise FormatError(
            "a table with BIT columns needs one-byte field terminators and LF rows (MySQL writes "
            "BIT values as raw bytes); export it with the default FIELDS/LINES options",
            file=member,
        )
    return BitFieldStream(raw, widths, [c.nullable for c in columns], field, member)


class BitFieldStream:
    """A file object whose bytes are `raw`'s with BIT fields rewritten as decimal numbers."""

    def __init__(
        self,
        raw: ByteReader,
        widths: list[int | None],
        nullable: list[bool],
        field_terminator: bytes,
        member: str,
    ):
        self.raw, self.widths, self.nullable, self.member = raw, widths, nullable, member
        self.field = field_terminator
        # An escaped field: anything but a backslash or a terminator, or a backslash pair.
        self.escaped = re.compile(
            b"(?:[^\\\\" + re.escape(field_terminator) + b"\\n]|\\\\.)*", re.DOTALL
        )
        self.buffer = b""
        self.eof = False
        self.records = 0  # records converted so far

    def read(self, size: int = -1) -> bytes:
        while True:
            converted = self._convert()
            if converted:
                return converted
            if self.eof:
                if self.buffer:
                    raise self._unsplittable()
                return b""
            data = self.raw.read(size if size and size > 0 else READ_BYTES)
            if data:
                self.buffer += data
            else:
                self.eof = True

    def _convert(self) -> bytes:
        out, pos, buffer = [], 0, self.buffer
        while pos < len(buffer):
            try:
                fields = self._fields(buffer, pos, 0)
            except _NeedMore:
                break
            if fields is None:
                raise self._unsplittable()
            pieces, pos = fields
            out.append(self.field.join(pieces) + b"\n")
            self.records += 1
        self.buffer = buffer[pos:]
        return b"".join(out)

    def _fields(self, buffer: bytes, pos: int, index: int) -> tuple[list[bytes], int] | None:
        """(fields from column `index` on, position after the record) or None: no reading."""
        pieces: list[bytes] = []
        last = len(self.widths) - 1
        while index <= last and self.widths[index] is None:
            end = self.escaped.match(buffer, pos).end()  # type: ignore[union-attr]
            if end == len(buffer) - 1 and buffer[end:] == b"\\" and not self.eof:
                raise _NeedMore  # the buffer ends inside an escape pair
            if not self._ends_field(buffer, end, index == last):
                return None
            pieces.append(buffer[pos:end])
            pos, index = end + 1, index + 1
        if index > last:
            return pieces, pos
        width = self.widths[index]
        assert width is not None
        readings: list[tuple[int, bytes | None]] = [(width, None)]
        if self.nullable[index]:
            readings.insert(0, (len(_NULL), _NULL))
        for length, null in readings:
            if null is not None and buffer[pos : pos + length] != null[: len(buffer) - pos]:
                continue
            if not self._ends_field(buffer, pos + length, index == last):
                continue
            value = null or str(int.from_bytes(buffer[pos : pos + length], "big")).encode()
            rest: tuple[list[bytes], int] | None = ([], pos + length + 1)
            if index < last:
                rest = self._fields(buffer, pos + length + 1, index + 1)  # may raise _NeedMore
            if rest is not None:
                return [*pieces, value, *rest[0]], rest[1]
        return None

    def _ends_field(self, buffer: bytes, end: int, last: bool) -> bool:
        """Whether a field may end at `end` (raises _NeedMore when the buffer stops first)."""
        if end >= len(buffer):
            if self.eof:
                return False
            raise _NeedMore
        return buffer[end : end + 1] == (b"\n" if last else self.field)

    def _unsplittable(self) -> FormatError:
        record = self.records + 1
        return FormatError(
            f"record {record}: cannot be split into {len(self.widths)} fields, reading its BIT "
            "columns as raw bytes of their width (is the file cut, or not from MySQL?)",
            file=self.member,
            line=record,
        )
