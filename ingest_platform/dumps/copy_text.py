"""Record blocks -> PostgreSQL COPY text format (tab delimiter, ``\\N`` NULL, backslash escapes).

Two paths produce the same bytes for the same block:

- ``fast_block``: whole-block ``str.replace`` calls, no per-row Python work.  It only accepts a
  block it can prove it converts exactly (see the checks) and returns None otherwise.
- ``PerRowEncoder.encode_block``: parses every record and field; handles everything, and is where
  errors are located (file, record number, column).

A block the fast path refuses goes through the per-row path, so the choice is per block.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ingest_platform.dumps.charsets import recoded_columns
from ingest_platform.dumps.dialect import FileFormat, parse_type_name
from ingest_platform.dumps.schema import Column
from ingest_platform.dumps.text_stream import BAD_BYTE_ERRORS, plain_records, simple_split_is_exact
from ingest_platform.errors import FormatError

DATE_TYPES = {"date", "timestamp", "timestamptz"}
_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_MYSQL_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PLACEHOLDERS = [chr(c) for c in range(0xE000, 0xE100)]  # private-use characters


# Hex digits as SQL Server converts character data to binary: an EVEN number of 0-9 A-F a-f,
# with "0x" in front (CONVERT style 1) or without (style 2, what bcp's character format writes);
# "If the expression contains an odd number of characters, or if any of the characters is
# invalid, an error is raised" (Microsoft, CAST and CONVERT (Transact-SQL), section "Binary
# styles", learn.microsoft.com/sql/t-sql/functions/cast-and-convert-transact-sql). So an odd count,
# a space or any other character rejects the value, never a guess: ODBC's client-side conversion
# would drop the last digit of an odd string (Microsoft, "C to SQL: Character", ODBC reference),
# which loses data silently; a rejected record is quarantined whole under a reject budget.
_HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")


def sql_server_hex(value: str) -> str:
    """The hex digits of a binary value written as text, or ValueError saying what is wrong."""
    digits = value[2:] if value[:2] == "0x" else value
    # isalnum() first: bytes.fromhex() alone would skip whitespace between digits.
    if not digits or (digits.isalnum() and len(digits) % 2 == 0 and _is_hex(digits)):
        return digits
    bad = next((c for c in digits if c not in _HEX_DIGITS), None)
    if bad is not None:
        raise ValueError(f"{bad!r} is not a hex digit in binary data {value[:40]!r}")
    raise ValueError(
        f"odd number of hex digits ({len(digits)}) in binary data {value[:40]!r}; SQL Server "
        "rejects it too (CONVERT to varbinary takes pairs of digits)"
    )


def _is_hex(digits: str) -> bool:
    try:
        bytes.fromhex(digits)
    except ValueError:
        return False
    return True


def copy_escape(value: str) -> str:
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    return value


def mysql_unescape(value: str) -> str:
    return _MYSQL_ESCAPE.sub(lambda m: _MYSQL_ESCAPES.get(m.group(1), m.group(1)), value)


def is_zero_date(value: str) -> bool:
    """MySQL zero dates: '0000-00-00', '0000-00-00 00:00:00', or a zero month/day ('2010-00-00')."""
    return value[4:5] == "-" and (value[:4] == "0000" or value[5:7] == "00" or value[8:10] == "00")


class PerRowEncoder:
    """Per-row path for one table: parse, convert, and encode records of one data file."""

    def __init__(self, file_format: FileFormat, columns: list[Column], file: str):
        self.format = file_format
        self.columns = columns
        self.file = file
        self._first_record = 1
        self.converters: dict[int, Callable[[str], str | None]] = {}
        for index, column in enumerate(columns):
            base = parse_type_name(column.pg_type)[0]
            if base == "bytea":
                self.converters[index] = (
                    self._hex_bytes if file_format.binary == "hex" else self._raw_bytes
                )
            elif base in DATE_TYPES and file_format.zero_dates == "null":
                self.converters[index] = lambda v: None if is_zero_date(v) else v
        try:
            recoded = recoded_columns(file_format, columns)
        except ValueError as error:
            raise FormatError(str(error), file=file) from None
        for index in recoded:
            self.converters[index] = self._recoder(columns[index].encoding)
        self.binary_columns = {
            i for i, c in enumerate(columns) if parse_type_name(c.pg_type)[0] == "bytea"
        }

    # -- converters -----------------------------------------------------------------------
    def _hex_bytes(self, value: str) -> str:
        return "\\x" + sql_server_hex(value)

    def _raw_bytes(self, value: str) -> str:
        return "\\x" + value.encode(self.format.encoding, BAD_BYTE_ERRORS).hex()

    def _recoder(self, encoding: str | None) -> Callable[[str], str]:
        # The file was decoded with its encoding; a column in another charset gets its own bytes
        # back (invalid ones are kept as lone surrogates) and is decoded with its own codec.
        file_encoding = self.format.encoding
        return lambda v: v.encode(file_encoding, BAD_BYTE_ERRORS).decode(
            encoding or file_encoding, BAD_BYTE_ERRORS
        )

    # -- parsing ----------------------------------------------------------------------------
    def split_records(self, block: str, terminator: str) -> list[list[str | None]]:
        """Block -> records -> field values (None is NULL), escapes resolved."""
        fmt = self.format
        if fmt.quote:
            return self._split_quoted(block, terminator)
        if not fmt.escape:
            return self._split_plain(block, terminator)
        # Backslash escapes: hide escaped backslashes and escaped terminators, then split.
        free = iter(c for c in _PLACEHOLDERS if c not in block)
        backslash, row_char, field_char = next(free), next(free), next(free)
        hidden = block.replace("\\\\", backslash)
        hidden = hidden.replace("\\" + terminator[0], row_char).replace(
            "\\" + fmt.field_terminator[0], field_char
        )
        records = hidden.split(terminator)
        records.pop()
        restore = (
            (backslash, "\\\\"),
            (row_char, "\\" + terminator[0]),
            (field_char, "\\" + fmt.field_terminator[0]),
        )
        out = []
        for record in records:
            values: list[str | None] = []
            for field in record.split(fmt.field_terminator):
                if field == fmt.null:
                    values.append(None)
                    continue
                if backslash in field or row_char in field or field_char in field or "\\" in field:
                    for placeholder, original in restore:
                        field = field.replace(placeholder, original)
                    field = mysql_unescape(field)
                values.append(field)
            out.append(values)
        return out

    def _split_plain(self, block: str, terminator: str) -> list[list[str | None]]:
        fmt, expected = self.format, len(self.columns)
        records = None
        if simple_split_is_exact(block, fmt.field_terminator, terminator, expected):
            records = [r.split(fmt.field_terminator) for r in block.split(terminator)[:-1]]
            if any(len(r) != expected for r in records):
                records = None
        if records is None:  # embedded row terminators, or an error to locate
            records, used = plain_records(block, fmt.field_terminator, terminator, expected)
            for number, record in enumerate(records, start=1):
                if fmt.field_terminator in record[-1]:
                    self._field_count_error(block, terminator, number, record)
            if used < len(block):
                self._field_count_error(block, terminator, len(records) + 1, None, block[used:])
        null, empty = fmt.null, fmt.empty_string
        return [[None if f == null else ("" if f == empty else f) for f in r] for r in records]

    def _field_count_error(self, block, terminator, number, record, rest: str | None = None):
        # Report the fields found on the record's first physical line (up to a row terminator).
        text = rest if rest is not None else self.format.field_terminator.join(record)
        found = text.split(terminator, 1)[0].count(self.format.field_terminator) + 1
        line = self._first_record + number - 1
        raise FormatError(
            f"record {line}: expected {len(self.columns)} fields, found {found} "
            f"(line = record number, counted by row terminators {terminator!r})",
            file=self.file,
            line=line,
        )

    def _split_quoted(self, block: str, terminator: str) -> list[list[str | None]]:
        import csv
        import io

        reader = csv.reader(
            io.StringIO(block, newline=""),
            delimiter=self.format.field_terminator,
            quotechar=self.format.quote,
            strict=True,
        )
        records: list[list[str | None]] = []
        try:
            for row in reader:
                records.append([None if f == self.format.null else f for f in row])
        except csv.Error as error:
            line = self._first_record + len(records)
            raise FormatError(
                f"record {line}: malformed CSV ({error}); a quote inside a quoted field is "
                "written twice, and every opened quote must close",
                file=self.file,
                line=line,
            ) from error
        return records

    # -- encoding ---------------------------------------------------------------------------
    def encode_block(
        self, block: str, terminator: str, first_record: int, skip: int = 0
    ) -> tuple[bytes, int]:
        """COPY bytes for a block, and its record count (skipped header records included).

        first_record is the 1-based number of the block's first record in the file.
        """
        self._first_record = first_record
        records = self.split_records(block, terminator)
        total = len(records)
        skip = min(skip, total)
        records, first_record = records[skip:], first_record + skip
        expected = len(self.columns)
        lines = []
        for offset, values in enumerate(records):
            if len(values) != expected:
                raise FormatError(
                    f"record {first_record + offset}: expected {expected} fields, "
                    f"found {len(values)} "
                    f"(line = record number, counted by row terminators {terminator!r})",
                    file=self.file,
                    line=first_record + offset,
                )
            for index, convert in self.converters.items():
                value = values[index]
                if value is not None:
                    try:
                        values[index] = convert(value)
                    except ValueError as error:
                        raise FormatError(
                            f"record {first_record + offset}: {error}",
                            file=self.file,
                            line=first_record + offset,
                            column=self.columns[index].name,
                        ) from None
            lines.append("\t".join("\\N" if v is None else copy_escape(v) for v in values))
        text = "\n".join(lines) + "\n" if lines else ""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            self._raise_bad_character(records, first_record)
            raise
        if "\0" in text:
            self._raise_bad_character(records, first_record)
        return data, total

    def _raise_bad_character(self, records, first_record: int) -> None:
        for offset, values in enumerate(records):
            for index, value in enumerate(values):
                if value is None:
                    continue
                bad = next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)
                if bad is not None:
                    byte = ord(bad) - 0xDC00
                    own = self.columns[index].encoding if self.format.column_charsets else None
                    raise FormatError(
                        f"record {first_record + offset}: byte 0x{byte:02x} is not valid "
                        f"{own or self.format.encoding} "
                        "(fix the file or declare its encoding in the manifest/schema 'format')",
                        file=self.file,
                        line=first_record + offset,
                        column=self.columns[index].name,
                    )
                if "\0" in value:
                    raise FormatError(
                        f"record {first_record + offset}: NUL character in a text value; "
                        "PostgreSQL text cannot hold it",
                        file=self.file,
                        line=first_record + offset,
                        column=self.columns[index].name,
                    )


def fast_block(
    block: str, terminator: str, file_format: FileFormat, columns: list[Column]
) -> str | None:
    """COPY text for a block by whole-block replaces, or None when only the per-row path is
    exact."""
    if any(parse_type_name(c.pg_type)[0] == "bytea" for c in columns) or file_format.quote:
        return None
    if (
        file_format.header_rows
        or len(columns) < 2
        or file_format.field_terminator != "\t"
        or terminator != "\n"
    ):
        return None
    if "\0" in block or ("\r" in block and not file_format.escape):
        return None
    if not block.isascii() and any(c.encoding for c in columns) and file_format.column_charsets:
        return None  # a column in its own charset: only the per-row path decodes it
    tabs_per_record = len(columns) - 1
    if file_format.escape == "\\" and file_format.null == "\\N" and file_format.empty_string == "":
        return _fast_mysql(block, file_format, columns, tabs_per_record)
    if not file_format.escape and file_format.null == "" and file_format.empty_string == "\0":
        return _fast_bcp(block, tabs_per_record)
    return None


def _fast_bcp(block: str, tabs_per_record: int) -> str | None:
    # No escaping in bcp files: with tab/LF terminators, fields cannot hold tab or LF, so only
    # backslashes would need escaping (refuse those) and empty fields must become \N.
    if "\\" in block or not simple_split_is_exact(block, "\t", "\n", tabs_per_record + 1):
        return None
    text = ("\n" + block).replace("\n\t", "\n\\N\t")
    text = text.replace("\t\t", "\t\\N\t").replace("\t\t", "\t\\N\t")  # twice: runs of empties
    return text.replace("\t\n", "\t\\N\n")[1:]


def _fast_mysql(
    block: str, file_format: FileFormat, columns: list[Column], tabs_per_record: int
) -> str | None:
    # MySQL's format is COPY text except: an escaped LF/TAB/CR is backslash + the raw character
    # (COPY wants \n \t \r), a raw CR may appear in data, and \0 \Z \b mean other things.
    if file_format.zero_dates == "null" and any(
        parse_type_name(c.pg_type)[0] in DATE_TYPES for c in columns
    ):
        if "0000-" in block or "-00" in block:
            return None
    text = block.replace("\\\\", "\0")  # now every backslash starts exactly one escape pair
    pairs = sum(text.count("\\" + c) for c in ("\n", "\t", "\r", "N", "n", "t", "r"))
    if text.count("\\") != pairs:
        return None
    text = (
        text.replace("\\\r", "\r")
        .replace("\r", "\\r")
        .replace("\\\n", "\\n")
        .replace("\\\t", "\\t")
    )
    # From here on, raw tabs and LFs are only separators.
    if text.count("\t") != tabs_per_record * text.count("\n"):
        return None
    if "\\N" in text and not _nulls_are_whole_fields(text):
        return None
    return text.replace("\0", "\\\\")


def _nulls_are_whole_fields(text: str) -> bool:
    # \N inside a longer field means "N" to both MySQL and COPY, but the per-row path would write
    # "N"; refuse such blocks so both paths stay byte-identical.
    spaced = ("\n" + text).replace("\t", "\t\t").replace("\n", "\n\n")
    whole = sum(spaced.count(a + "\\N" + b) for a in "\t\n" for b in "\t\n")
    return whole == text.count("\\N")
