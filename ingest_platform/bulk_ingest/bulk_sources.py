"""Whole inputs in a batch, besides Python rows: Arrow data, CSV files, a dump table's COPY text.

A batch item ``(table, input)`` whose input is not a row tuple is COPYed as a whole into the
table's destination of the batch (the live table or the staging table, as ``upsert.py`` decides),
with no Python object per value:

- **Arrow** (``pyarrow.Table``, ``RecordBatch``, ``RecordBatchReader`` or any other iterator of
  RecordBatches): one binary COPY, encoded from the Arrow buffers (``arrow_copy``). Fields are
  matched to columns by name, one field per column. A table with a column type ``arrow_copy`` does
  not encode gets the values as Python objects, through the row path.
- **CSV** (``CsvFile``): the file's bytes go to ``COPY .. FROM STDIN (FORMAT csv)`` unread, and
  PostgreSQL parses them (the header names the columns, in any order; without one the fields are
  the table's columns in order).
- **A dump table** (``Dump.copy_source(table)``, the dump reader's ``CopySource``): its COPY text
  chunks, as the dump loader sends them; the dump's column names are the table's.

Errors name the place: table, record (1-based; a file's header is record 1) and column, and the
file for CSV and dumps (``postgres.copy_errors``). A direct COPY (``upsert.py``) that fails is
replayed into staging: files and Arrow tables are read again, an iterator of record batches is
kept in a spool as it is sent.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, groupby
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg import sql

from ingest_platform.dumps.copy_source import CopyChunks, CopySource
from ingest_platform.errors import FormatError, IngestError
from ingest_platform.postgres.copy_errors import (
    copy_error_details,
    copy_error_line,
    copy_format_error,
)

if TYPE_CHECKING:
    from ingest_platform.bulk_ingest.copy_rows import TableTarget

_READ_BYTES = 1 << 20
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # signature, flags, header extension length
_BINARY_TRAILER = b"\xff\xff"
_ROLLED_BACK = "the batch was rolled back"

# Writes Python rows of a target through the row path (the copier's); returns the rows written.
RowWriter = Callable[[list[tuple]], int]


class Replay(Protocol):
    """A COPY of a direct upsert, kept to be sent again into a staging table."""

    def replay(self, conn: psycopg.Connection, destination: sql.Composable) -> int: ...

    def close(self) -> None: ...


class BulkInput(Protocol):
    """A whole input of a batch (``bulk_input`` makes one of a batch item's second part)."""

    def copy(
        self,
        conn: psycopg.Connection,
        target: TableTarget,
        destination: sql.Composable,
        replays: list[Replay] | None,
        write_rows: RowWriter,
    ) -> int:
        """COPY the input into `destination`; returns the rows copied. A server error is raised as
        it is: the caller replays a direct COPY, or raises ``error(target, exc)``. When `replays`
        is a list (a direct COPY), what replays this COPY is appended to it before anything is
        sent."""
        ...

    def error(self, target: TableTarget, exc: psycopg.Error) -> IngestError: ...


def bulk_input(value: Any) -> BulkInput | None:
    """`value` as a whole input of a batch, or None if it is not one (a row, or bad input)."""
    if isinstance(value, (tuple, list)):
        return None
    if isinstance(value, CsvFile):
        return _CsvInput(value)
    if isinstance(value, CopySource):
        return _DumpInput(value)
    pa = sys.modules.get("pyarrow")  # Arrow data means pyarrow is loaded: never import it here
    if pa is not None:
        if isinstance(value, pa.Table):
            return _ArrowInput(value.to_batches, "Arrow table")
        if isinstance(value, pa.RecordBatch):
            return _ArrowInput(lambda: [value], "Arrow record batch")
        if isinstance(value, pa.RecordBatchReader):
            return _ArrowInput(None, "Arrow record batches", iter(value))
    if isinstance(value, Iterator):
        return _ArrowInput(None, "Arrow record batches", value)
    return None


class _Again:
    """Replays a whole input by reading it again (a file, an Arrow table)."""

    def __init__(self, whole: Any, target: TableTarget, write_rows: RowWriter):
        self.whole, self.target, self.write_rows = whole, target, write_rows

    def replay(self, conn: psycopg.Connection, destination: sql.Composable) -> int:
        try:
            return self.whole.send(conn, self.target, destination, self.write_rows)
        except psycopg.Error as exc:
            raise self.whole.error(self.target, exc) from None

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------ CSV


@dataclass(frozen=True)
class CsvFile:
    """A CSV file for ``ingest()``: ``(table, CsvFile("orders.csv"))`` in a batch.

    PostgreSQL parses it (``COPY .. (FORMAT csv)``): an unquoted empty field is NULL (`null`), a
    quoted one an empty string. `header`: the first line names the columns (in any order; every
    column of the table once); without one the fields are the table's columns in order.
    `encoding`: a Python codec name (``utf-8``, ``latin-1``, ``cp1252`` ...).
    """

    path: str | os.PathLike[str]
    header: bool = True
    delimiter: str = ","
    quote: str = '"'
    escape: str | None = None  # None: the quote character
    null: str = ""
    encoding: str = "utf-8"


class _CsvInput:
    def __init__(self, file: CsvFile):
        self.file = file
        self.path = str(file.path)

    def copy(self, conn, target, destination, replays, write_rows) -> int:
        if replays is not None:
            replays.append(_Again(self, target, write_rows))
        return self.send(conn, target, destination, write_rows)

    def send(self, conn, target, destination, write_rows) -> int:
        options = self._options()  # first: checks the encoding
        statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
            destination,
            sql.SQL(", ").join(map(sql.Identifier, self._columns(target))),
            sql.SQL(", ").join(options),
        )
        try:
            with open(self.file.path, "rb") as file, conn.cursor() as cursor:
                with cursor.copy(statement) as copy:
                    while data := file.read(_READ_BYTES):
                        copy.write(data)
                return cursor.rowcount
        except OSError as exc:
            raise self._unreadable(exc) from None

    def _options(self) -> list[sql.Composable]:
        file = self.file
        options = [
            sql.SQL("FORMAT csv"),
            sql.SQL("HEADER true" if file.header else "HEADER false"),
            sql.SQL("DELIMITER {}").format(sql.Literal(file.delimiter)),
            sql.SQL("QUOTE {}").format(sql.Literal(file.quote)),
            sql.SQL("NULL {}").format(sql.Literal(file.null)),
            sql.SQL("ENCODING {}").format(sql.Literal(self._pg_encoding())),
        ]
        if file.escape is not None:
            options.append(sql.SQL("ESCAPE {}").format(sql.Literal(file.escape)))
        return options

    def _columns(self, target: TableTarget) -> list[str]:
        """The COPY's column list: the header's names, or the table's columns."""
        file = self.file
        if not file.header:
            return list(target.columns)
        plain_quotes = file.escape in (None, file.quote)
        try:
            with open(file.path, encoding=file.encoding, newline="") as text:
                names = next(
                    csv.reader(
                        text,
                        delimiter=file.delimiter,
                        quotechar=file.quote,
                        escapechar=None if plain_quotes else file.escape,
                        doublequote=plain_quotes,
                    ),
                    None,
                )
        except OSError as exc:
            raise self._unreadable(exc) from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise FormatError(
                f"the header is not {file.encoding} CSV ({exc}); {_ROLLED_BACK}",
                file=self.path,
                line=1,
            ) from None
        if names is None:
            raise FormatError(
                f"the file is empty: no header names the columns of {target.display}; "
                f"{_ROLLED_BACK}",
                file=self.path,
            )
        _check_names(names, target, f"{self.path}: the header")
        return names

    def _unreadable(self, exc: OSError) -> IngestError:
        return IngestError(f"{self.path}: cannot read the CSV file ({exc.strerror}).")

    def _pg_encoding(self) -> str:
        # psycopg's table of Python and PostgreSQL encoding names.
        from psycopg._encodings import py2pgenc

        try:
            return py2pgenc(self.file.encoding).decode()
        except (LookupError, psycopg.NotSupportedError):
            raise IngestError(
                f"{self.path}: PostgreSQL does not read the encoding {self.file.encoding!r}; give "
                "a Python codec name it knows (utf-8, latin-1, cp1252 ...)."
            ) from None

    def error(self, target: TableTarget, exc: psycopg.Error) -> IngestError:
        message, context = copy_error_details(exc)
        return copy_format_error(
            message, context, self.path, copy_error_line(context), outcome=_ROLLED_BACK
        )


# ------------------------------------------------------------------------------------ dumps


class _DumpInput:
    """A dump table's data file as the dump loader COPYs it: text chunks, each run of chunks with
    one NULL string its own COPY."""

    def __init__(self, source: CopySource):
        self.source = source
        self._chunks: CopyChunks | None = None  # of the last COPY, to place a rejected line
        self._lines_before = 0  # lines of that COPY's earlier statements

    def copy(self, conn, target, destination, replays, write_rows) -> int:
        names = [c.name for c in self.source.columns]
        _check_names(names, target, f"{self.source.member}: the dump table")
        if replays is not None:
            replays.append(_Again(self, target, write_rows))
        return self.send(conn, target, destination, write_rows)

    def send(self, conn, target, destination, write_rows) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            destination, sql.SQL(", ").join(sql.Identifier(c.name) for c in self.source.columns)
        )
        rows = self._lines_before = 0
        self._chunks = self.source.chunks()
        with conn.cursor() as cursor:
            for null, group in groupby(self._chunks, key=lambda chunk: chunk[1]):
                with_null = sql.SQL("{} (NULL {})").format(statement, sql.Literal(null))
                with cursor.copy(with_null) as copy:
                    for data, _ in group:
                        copy.write(data)
                rows += cursor.rowcount
                self._lines_before = rows
        return rows

    def error(self, target: TableTarget, exc: psycopg.Error) -> IngestError:
        if isinstance(exc, psycopg.errors.CharacterNotInRepertoire):
            return self.source.find_error()  # names the column, which the server does not
        message, context = copy_error_details(exc)
        line = copy_error_line(context)
        record = None
        if line is not None and self._chunks is not None:
            record = self._chunks.record_of(self._lines_before + line)
        return copy_format_error(message, context, self.source.member, record, _ROLLED_BACK)


# ------------------------------------------------------------------------------------ Arrow


class _ArrowInput:
    """Record batches of one Arrow schema, COPYed in binary (``arrow_copy``)."""

    def __init__(
        self,
        again: Callable[[], Iterable[Any]] | None,
        what: str,
        once: Iterator[Any] | None = None,
    ):
        self.again = again  # a fresh iterable of the batches at each call (a table), or None
        self.once = once  # the batches, readable once (an iterator, a reader)
        self.what = what  # "Arrow table", "Arrow record batches" ...
        self.records = 0  # records sent before the current batch

    def copy(self, conn, target, destination, replays, write_rows) -> int:
        spool = None
        if replays is not None:
            if self.again is not None:
                replays.append(_Again(self, target, write_rows))
            else:
                from ingest_platform.bulk_ingest.copy_rows import new_spool

                spool = new_spool()
        return self.send(conn, target, destination, write_rows, spool, replays)

    def send(self, conn, target, destination, write_rows, spool=None, replays=None) -> int:
        import pyarrow as pa

        from ingest_platform.bulk_ingest.arrow_copy import ArrowEncoder, ArrowValueError

        batches = iter(self.again() if self.again is not None else self.once or ())
        first = next(batches, None)
        if first is None:
            return 0
        if not isinstance(first, pa.RecordBatch):
            raise IngestError(
                f"{target.display}: the batch gives an iterator of {type(first).__name__}, not of "
                "pyarrow RecordBatches. Give rows as tuples, or Arrow data (a Table, "
                f"RecordBatches); {_ROLLED_BACK}."
            )
        _check_names(first.schema.names, target, f"{target.display}: the {self.what}", "field")
        batches = chain([first], batches)
        try:
            encoder = ArrowEncoder.of(first.schema, target.columns, target.type_names)
        except ArrowValueError as error:
            raise self._value_error(target, error) from None
        if encoder is None or not target.binary:
            return self._through_rows(target, batches, write_rows)
        column_list = sql.SQL(", ").join(map(sql.Identifier, encoder.columns))

        def statement(into: sql.Composable) -> sql.Composed:
            return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(into, column_list)

        if spool is not None and replays is not None:
            from ingest_platform.bulk_ingest.copy_rows import SpooledCopy

            replays.append(SpooledCopy(spool, statement, lambda exc: self.error(target, exc)))
        failed: list[psycopg.Error] = []
        self.records = 0
        with conn.cursor() as cursor:
            with cursor.copy(statement(destination)) as copy:
                send = _sender(copy, spool, failed)
                send(_BINARY_SIGNATURE)
                for batch in batches:
                    if batch.schema != first.schema:
                        raise IngestError(
                            f"{target.display}: the {self.what} change their schema after "
                            f"{self.records:,} records; give every record batch the same fields "
                            f"and types; {_ROLLED_BACK}."
                        )
                    try:
                        for buffer in encoder.encode(batch):
                            send(buffer)
                    except ArrowValueError as error:
                        raise self._value_error(target, error) from None
                    self.records += batch.num_rows
                send(_BINARY_TRAILER)
                if failed:
                    raise failed[0]
            return cursor.rowcount

    def _through_rows(self, target: TableTarget, batches: Iterable, write_rows: RowWriter) -> int:
        """A table with a column type arrow_copy does not encode: the values as Python objects."""
        rows = 0
        for batch in batches:
            columns = [batch.column(name).to_pylist() for name in target.columns]
            rows += write_rows(list(zip(*columns, strict=True)))
        return rows

    def _value_error(self, target: TableTarget, error: Any) -> IngestError:
        where = f"{target.display}, {self.what}"
        if error.record >= 0:
            where += f", record {self.records + error.record + 1:,}"
        return IngestError(f'{where}, column "{error.column}": {error.message}; {_ROLLED_BACK}.')

    def error(self, target: TableTarget, exc: psycopg.Error) -> IngestError:
        message, context = copy_error_details(exc)
        where = f"{target.display}, {self.what}"
        line = copy_error_line(context)
        if line is not None:
            where += f", record {line:,}"
            column = re.search(r"line \d+, column ([^:]+)", context)
            if column:
                where += f', column "{column.group(1)}"'
        return IngestError(f"{where}: {message}. Fix the data or the table; {_ROLLED_BACK}.")


def _sender(copy: Any, spool: Any, failed: list[psycopg.Error]) -> Callable[[Any], None]:
    """Writes to the COPY, and to `spool` if there is one; with a spool, a failed send is kept in
    `failed` and the rest still reaches the spool (it is all replayed)."""
    if spool is None:
        return copy.write

    def send(data: Any) -> None:
        spool.write(data)
        if not failed:
            try:
                copy.write(data)
            except psycopg.Error as exc:
                failed.append(exc)

    return send


def _check_names(names: list[str], target: TableTarget, what: str, noun: str = "column") -> None:
    """`names` must be the target's columns, each once, in any order."""
    missing = [c for c in target.columns if c not in names]
    unknown = [n for i, n in enumerate(names) if n not in target.columns or n in names[:i]]
    if not (missing or unknown):
        return
    problems = []
    if missing:
        problems.append("lacks " + ", ".join(f'"{c}"' for c in missing))
    if unknown:
        problems.append("has " + ", ".join(f'"{n}"' for n in unknown) + " too many")
    raise IngestError(
        f"{what} {' and '.join(problems)}: give each column of {target.display} one {noun}, by "
        f"name ({', '.join(target.columns)}); {_ROLLED_BACK}."
    )
