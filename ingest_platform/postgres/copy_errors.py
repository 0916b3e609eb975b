"""Turn a COPY failure into a FormatError that names the data file, record, column and value."""

from __future__ import annotations

import re

import psycopg

from ingest_platform.errors import FormatError

# PostgreSQL's CONTEXT for COPY errors: 'COPY t, line 5, column id: "abc"' (column part optional).
_CONTEXT = re.compile(r'COPY [^,]+, line (\d+)(?:, column (.+?): "(.*)")?', re.DOTALL)


class CopyRejected(Exception):
    """PostgreSQL rejected a COPY stream (``versioned_tables.copy_into``).

    `line`: the 1-based line of the whole stream (which may span several COPY statements), or None.
    `bad_encoding`: the bytes were not valid UTF-8 (the reader leaves that check to the server).
    """

    def __init__(self, message: str, context: str, line: int | None, bad_encoding: bool):
        super().__init__(f"{message} ({context})" if context else message)
        self.message, self.context = message, context
        self.line, self.bad_encoding = line, bad_encoding

    def __reduce__(self):
        return type(self), (self.message, self.context, self.line, self.bad_encoding)


def copy_error_details(error: psycopg.Error) -> tuple[str, str]:
    """(message, context) of a COPY error."""
    return (error.diag.message_primary or str(error)).strip(), error.diag.context or ""


def copy_error_line(context: str) -> int | None:
    """The 1-based line of the COPY stream that PostgreSQL rejected, if it says."""
    match = _CONTEXT.search(context)
    return int(match.group(1)) if match else None


def copy_error_place(context: str) -> tuple[str | None, str | None]:
    """(column, value) of the rejected line, where PostgreSQL names them."""
    match = _CONTEXT.search(context)
    return (match.group(2), match.group(3)) if match else (None, None)


def copy_format_error(
    message: str,
    context: str,
    file: str,
    record: int | None,
    outcome: str = "nothing was loaded for this version",
) -> FormatError:
    """A FormatError for a rejected COPY, placed at `record` (the record number in `file`);
    `outcome` says what became of the load."""
    column, value = copy_error_place(context)
    detail = f"record {record}: {message}" if record is not None else message
    if value is not None:
        detail += f" (value {value!r})"
    return FormatError(f"{detail}; {outcome}", file=file, line=record, column=column)
