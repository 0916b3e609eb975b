"""Bytes of a data file -> decoded text blocks that each end on a record boundary.

Streaming: memory is bounded by the block size (plus the longest record), not the file size.
A record longer than MAX_RECORD (a file with no row terminator, say gigabytes of NUL bytes) is
refused with RecordTooLong instead of being held whole.

Invalid bytes do not stop decoding here: each one becomes a lone surrogate (U+DC00 + byte),
which cannot occur in valid text.  The COPY encoder then fails on exactly that field and reports
file, record and column; binary columns turn the surrogates back into the original bytes.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import AnyStr, Protocol

from ingest_platform.dumps.dialect import FileFormat

BAD_BYTE_ERRORS = "ingest-bad-byte"
# The longest record the readers hold (bytes, or characters of a decoded file). PostgreSQL's own
# limit for one COPY line is 1 GB; a dump's record is rarely over a few MB (a document as hex).
MAX_RECORD = 256 << 20
_NEEDS_BOM = ("utf-16", "utf-32")  # Python's codecs that take the byte order from a BOM
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


def _bad_byte_handler(error: UnicodeError):
    if isinstance(error, UnicodeDecodeError):
        bad = error.object[error.start : error.end]
        return "".join(chr(0xDC00 + b) for b in bad), error.end
    if isinstance(error, UnicodeEncodeError):
        chars = error.object[error.start : error.end]
        if all(0xDC00 <= ord(c) <= 0xDCFF for c in chars):
            return bytes(ord(c) - 0xDC00 for c in chars), error.end
    raise error


codecs.register_error(BAD_BYTE_ERRORS, _bad_byte_handler)


def sniff_encoding(head: bytes, declared: str) -> tuple[str, int]:
    """A byte-order mark wins over the declared encoding (bcp -w writes UTF-16 LE with a BOM)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return declared, 0


class RecordTooLong(Exception):
    """No record ends within MAX_RECORD; the message says where (the caller adds the file)."""


def record_too_long(
    start: int, unit: str, terminator: str, fields: int, mostly_nul: bool
) -> RecordTooLong:
    hint = " (it holds NUL bytes: a damaged or binary file?)" if mostly_nul else ""
    return RecordTooLong(
        f"no record ends within {MAX_RECORD >> 20} MiB from {unit} {start:,} ({fields} fields, "
        f"row terminator {terminator!r}){hint}; the file is not in its declared format: check "
        "its row_terminator, field_terminator and encoding"
    )


def encoding_problem(head: bytes, file_format: FileFormat) -> str | None:
    """What is wrong with the start of a data file for its declared encoding, or None.

    Checked when a dump is opened, for cases the reader would report badly or slowly: a
    BOM-reading codec ('utf-16', 'utf-32') without a byte-order mark (Python refuses to guess
    the order); UTF-16 text without a BOM declared as UTF-8 or a one-byte encoding (it reads as
    text with a NUL after every character); a file that starts with nothing but NUL bytes.
    Conservative: UTF-16 is only named when the declared reading has NULs inside fields and
    the UTF-16 reading makes sense (see _utf16_guess).
    """
    if sniff_encoding(head, file_format.encoding)[1]:
        return None  # a BOM decides
    declared = codecs.lookup(file_format.encoding).name
    guess = _utf16_guess(head, file_format)
    where = '(manifest.json "tables", or the schema\'s "format")'
    if declared in _NEEDS_BOM:
        advice = (
            f"it looks like {guess.upper()}: declare encoding '{guess}'"
            if guess
            else f"declare encoding '{declared}-le' or '{declared}-be'"
        )
        return (
            f"has no byte-order mark, which its declared encoding {file_format.encoding!r} "
            f"needs; {advice} {where}"
        )
    declared_text = head.decode(file_format.encoding, "replace")
    if (
        guess
        and not declared.startswith(_NEEDS_BOM)
        and _nul_inside_fields(declared_text, file_format)
    ):
        return (
            f"looks like {guess.upper()} without a byte-order mark, but its declared encoding "
            f"is {file_format.encoding!r}; declare encoding '{guess}' {where}"
        )
    if len(head) >= 1024 and head.count(0) * 10 > len(head) * 9:
        return "starts with NUL bytes, not text: a damaged or binary file?"
    return None


def _utf16_guess(head: bytes, file_format: FileFormat) -> str | None:
    """'utf-16-le' or '-be' when the bytes read as that: mostly ASCII-range characters (one NUL
    byte in each pair, on the same side), the terminators, and NULs only as whole fields."""
    size = len(head) // 2 * 2
    pairs = size // 2
    if pairs < 8:
        return None
    even, odd = head[0:size:2].count(0), head[1:size:2].count(0)
    for guess, high, low in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if high * 2 >= pairs and low * 10 <= pairs:
            text = head[:size].decode(guess, "replace")
            if (
                file_format.field_terminator in text
                and file_format.row_terminator.replace("\r\n", "\n") in text
                and not _nul_inside_fields(text, file_format)
            ):
                return guess
    return None


def _nul_inside_fields(text: str, file_format: FileFormat) -> bool:
    """True when the text has a NUL that is not a whole field (which is bcp's empty string)."""
    return any(
        "\0" in field and field != file_format.empty_string
        for record in text.split(file_format.row_terminator)
        for field in record.split(file_format.field_terminator)
    )


class ByteReader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def iter_text(raw: ByteReader, declared_encoding: str, read_bytes: int) -> Iterator[str]:
    head = raw.read(read_bytes)
    encoding, skip = sniff_encoding(head, declared_encoding)
    decoder = codecs.getincrementaldecoder(encoding)(errors=BAD_BYTE_ERRORS)
    data = head[skip:]
    while data:
        text = decoder.decode(data)
        if text:
            yield text
        data = raw.read(read_bytes)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def resolve_row_terminator(first_text: str, file_format: FileFormat) -> str:
    """bcp: a row terminator typed as "\\n" may be CRLF in the file; the first record decides."""
    terminator = file_format.row_terminator
    if not file_format.row_terminator_crlf_sniff or "\n" not in terminator or "\r\n" in terminator:
        return terminator
    crlf = terminator.replace("\n", "\r\n")
    at_crlf, at_lf = first_text.find(crlf), first_text.find(terminator)
    if at_crlf != -1 and (at_lf == -1 or at_crlf <= at_lf):
        return crlf
    return terminator


def _escaped(text: str, position: int, escape: str) -> bool:
    """True when the character at position is preceded by an odd run of escape characters."""
    run = 0
    while position - run - 1 >= 0 and text[position - run - 1] == escape:
        run += 1
    return run % 2 == 1


def _quoted(text: str, position: int, quote: str) -> bool:
    return text.count(quote, 0, position) % 2 == 1


def plain_records(
    text: AnyStr, field_terminator: AnyStr, row_terminator: AnyStr, fields: int
) -> tuple[list[list[AnyStr]], int]:
    """bcp's own rule: n-1 field terminators, then the row terminator.

    So a row terminator inside a non-last field is data (AdventureWorks' ProductReview comments
    hold LFs while rows end in LF).  Returns the complete records and the text length they use.
    """
    records: list[list[AnyStr]] = []
    position, size = 0, len(text)
    while position < size:
        values: list[AnyStr] = []
        cursor = position
        for _ in range(fields - 1):
            end = text.find(field_terminator, cursor)
            if end == -1:
                return records, position
            values.append(text[cursor:end])
            cursor = end + len(field_terminator)
        end = text.find(row_terminator, cursor)
        if end == -1:
            return records, position
        values.append(text[cursor:end])
        records.append(values)
        position = end + len(row_terminator)
    return records, position


def raw_records(block: str, terminator: str, file_format: FileFormat, fields: int) -> list[str]:
    """The block's records as the file has them, without row terminators, also where a record is
    bad: the same boundaries the readers use (bcp's rule; a terminator escaped or quoted is data),
    so a bad record can be set aside whole and the records around it still load. The text after
    the last complete bcp record (a truncated record) is one more record."""
    if not (file_format.escape or file_format.quote):
        records, used = plain_records(block, file_format.field_terminator, terminator, fields)
        found = [file_format.field_terminator.join(record) for record in records]
        rest = block[used:]
        if rest:
            found.append(rest[: -len(terminator)] if rest.endswith(terminator) else rest)
        return found
    found, start, cursor = [], 0, 0
    while (at := block.find(terminator, cursor)) != -1:
        cursor = at + 1
        if file_format.escape and _escaped(block, at, file_format.escape):
            continue
        if file_format.quote and block.count(file_format.quote, start, at) % 2 == 1:
            continue
        found.append(block[start:at])
        start = cursor = at + len(terminator)
    if start < len(block):
        found.append(block[start:])
    return found


def simple_split_is_exact(
    block: str, field_terminator: str, row_terminator: str, fields: int
) -> bool:
    """True when splitting on the row terminator, then on the field terminator, is bcp's parse.

    With T = field terminators and R = row terminators in a block that starts at a record:
    T == (fields-1) * R proves it, provided no last field holds a field terminator (which the
    per-row path reports as an error).  Terminators must not overlap each other.
    """
    if field_terminator in row_terminator or row_terminator in field_terminator:
        return False
    return block.count(field_terminator) == (fields - 1) * block.count(row_terminator)


def _last_boundary(buffer: str, terminator: str, file_format: FileFormat, fields: int) -> int:
    """End index of the last complete record in buffer, or -1."""
    if not (file_format.escape or file_format.quote):
        at = buffer.rfind(terminator)
        if at == -1:
            return -1
        cut = at + len(terminator)
        if simple_split_is_exact(buffer[:cut], file_format.field_terminator, terminator, fields):
            return cut
        _, cut = plain_records(buffer, file_format.field_terminator, terminator, fields)
        return cut if cut > 0 else -1
    end = len(buffer)
    while True:
        at = buffer.rfind(terminator, 0, end)
        if at == -1:
            return -1
        if file_format.escape and _escaped(buffer, at, file_format.escape):
            end = at
        elif file_format.quote and _quoted(buffer, at, file_format.quote):
            end = at
        else:
            return at + len(terminator)


def iter_record_blocks(
    texts: Iterable[str], file_format: FileFormat, target_chars: int, fields: int
) -> Iterator[tuple[str, str]]:
    """Yield (block, row_terminator); every block is whole records, each ending in the terminator.

    A last record without a terminator gets one, so blocks are always complete (a truncated
    record then fails its field count in the per-row path). RecordTooLong past MAX_RECORD.
    """
    buffer, terminator = "", None
    done = 0  # characters yielded
    search_at = target_chars  # buffer length of the next search; doubles while none succeeds
    for text in texts:
        buffer += text
        if terminator is None:
            if (
                file_format.row_terminator not in buffer
                and "\r\n" not in buffer
                and len(buffer) < 1 << 24
            ):
                continue  # not one record yet: look at more text before deciding LF vs CRLF
            terminator = resolve_row_terminator(buffer, file_format)
        if len(buffer) < search_at:
            continue
        cut = _last_boundary(buffer, terminator, file_format, fields)
        if cut > 0:
            yield buffer[:cut], terminator
            buffer, done, search_at = buffer[cut:], done + cut, target_chars
        elif len(buffer) > MAX_RECORD:
            sample = buffer[:4096]
            raise record_too_long(
                done, "character", terminator, fields, sample.count("\0") * 2 > len(sample)
            )
        else:  # no record ends yet: search again at twice the size (each piece: quadratic)
            search_at = min(2 * len(buffer), MAX_RECORD + 1)
    if terminator is None:
        terminator = resolve_row_terminator(buffer, file_format)
    if buffer:
        cut = _last_boundary(buffer, terminator, file_format, fields)
        if cut > 0:
            yield buffer[:cut], terminator
            buffer = buffer[cut:]
    if buffer:
        yield buffer if buffer.endswith(terminator) else buffer + terminator, terminator
