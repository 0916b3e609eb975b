"""The platform's one exception family. A message tells the user what to do next."""

from __future__ import annotations

from functools import partial


class IngestError(Exception):
    """Base class for every error the platform raises on purpose."""


class ConfigError(IngestError):
    """A setting or environment variable is missing or wrong."""


class ServiceUnavailableError(IngestError):
    """A configured server (PostgreSQL, BigQuery) does not answer."""


class DumpError(IngestError):
    """A dump archive cannot be read (corrupt, unsafe member name, wrong key)."""


class SchemaError(IngestError):
    """A table schema is missing, unreadable or incompatible with an earlier version."""


class FormatError(IngestError):
    """A data file does not match its declared format; carries where it went wrong."""

    def __init__(
        self, message: str, *, file: str, line: int | None = None, column: str | int | None = None
    ):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # Picklable with its place: load workers raise it in the main process.
        place = {"file": self.file, "line": self.line, "column": self.column}
        return partial(type(self), **place), (self.message,)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (psycopg's carry DETAIL/HINT lines after it), or
    its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
