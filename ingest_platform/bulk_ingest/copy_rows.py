"""COPY the rows of one batch into their tables: binary COPY, rows checked on the way.

A batch is an iterable of ``(table, row_tuple)``; rows of several tables may interleave. Rows of the
table whose COPY is open stream straight into it; a row of another table waits in that table's
buffer, and when a buffer holds ``buffer_rows`` rows the open COPY ends and one for that table
starts (so memory stays bounded by tables x buffer_rows, whatever the batch size). Each table's
rows go to its *destination*: the live table (append) or a staging table (upsert, ``upsert.py``).

Values are sent in PostgreSQL's binary format with the dumper of each column's type (psycopg
``set_types``), so a value of the wrong Python type fails in the client, naming table, row and
column; the server checks the rest (NOT NULL, lengths, ranges). A smallint/integer value out of
range is caught here (the binary dumpers would wrap it). Tables with a column type psycopg has no
binary dumper for use text COPY.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq, sql

from ingest_platform.errors import IngestError

_INT_RANGES = {"int2": (-2**15, 2**15 - 1), "int4": (-2**31, 2**31 - 1)}
_FLUSH_BYTES = 1 << 17
try:   # psycopg's compiled row formatter (a private name: without it, write_row does the same, slower)
    from psycopg._copy_base import _binary_signature as _BINARY_SIGNATURE
    from psycopg._copy_base import _binary_trailer as _BINARY_TRAILER
    from psycopg._copy_base import format_row_binary as _format_row_binary
except ImportError:   # pragma: no cover
    _format_row_binary = None
_CLIENT_ERRORS = (TypeError, ValueError, OverflowError, AttributeError, psycopg.DataError, psycopg.ProgrammingError)


@dataclass
class TableTarget:
    """One table of the metadata, as the loader writes to it."""

    table: sa.Table
    display: str                    # schema.table, for messages and metadata
    qualified: sql.Composed
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    type_oids: tuple[int, ...]
    type_names: tuple[str, ...]
    binary: bool
    range_checks: tuple[tuple[int, int, int], ...]    # (column index, low, high)
    in_range: Any = field(default=None, repr=False)    # compiled from range_checks
    destination: sql.Composed | None = None           # where this batch's COPY goes
    rows: int = 0                                      # rows of the current batch
    copy_statement: sql.Composed | None = field(default=None, repr=False)

    def column_list(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)


def describe_target(conn: psycopg.Connection, table: sa.Table, schema: str) -> TableTarget:
    """Column types of the live table (after migration), in the order of the SQLAlchemy columns."""
    columns = tuple(c.name for c in table.columns)
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
    found = dict((name, (oid, typname)) for name, oid, typname in conn.execute(
        "SELECT a.attname, a.atttypid, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (qualified.as_string(conn),)))
    oids = tuple(found[c][0] for c in columns)
    names = tuple(found[c][1] for c in columns)
    binary = True
    for oid in oids:
        try:
            conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
        except psycopg.ProgrammingError:
            binary = False
    checks = tuple((i, *_INT_RANGES[n]) for i, n in enumerate(names) if n in _INT_RANGES) if binary else ()
    return TableTarget(table, f"{schema}.{table.name}", qualified, columns,
                       tuple(c.name for c in table.primary_key.columns), oids, names, binary, checks,
                       _range_checker(checks))


class BatchCopier:
    """Routes the rows of a batch to COPY statements, one open at a time."""

    def __init__(self, conn: psycopg.Connection, targets: list[TableTarget], buffer_rows: int):
        self.conn = conn
        self.targets = targets
        self.buffer_rows = buffer_rows
        self._by_id = {id(t.table): t for t in targets}
        self._by_key = {t.table.key: t for t in targets}

    def resolve(self, table: Any) -> TableTarget:
        target = self._by_id.get(id(table))
        if target is None:
            key = table.key if isinstance(table, sa.Table) else table if isinstance(table, str) else None
            target = self._by_key.get(key)
            if target is None:
                known = ", ".join(sorted(self._by_key)) or "none"
                raise IngestError(f"The batch names the table {key or table!r}, which is not in the metadata "
                                  f"passed to ingest() (its tables: {known}). Add it to the metadata or fix the batch.")
            self._by_id[id(table)] = target
        return target

    def copy_batch(self, rows: Iterable) -> None:
        """COPY every row to its target's destination; counts land in ``target.rows``."""
        buffers: dict[int, list] = {}
        iterator = iter(rows)
        first = next(iterator, None)
        if first is None:
            return
        table, row = _split(first, 1)
        current = self.resolve(table)
        buffers[id(current)] = [row]
        while current is not None:
            current = self._copy_stream(current, buffers.pop(id(current)), iterator, buffers)
        for target in self.targets:     # what is left in the buffers
            pending = buffers.pop(id(target), None)
            if pending:
                self._copy_stream(target, pending, iter(()), buffers)

    def _copy_stream(self, target: TableTarget, pending: list, iterator, buffers: dict) -> TableTarget | None:
        """One COPY into `target`: its pending rows, then rows from `iterator` while they are its own.
        Returns the target whose buffer filled up (the next COPY), or None when the batch is done."""
        resolve, by_id, limit = self.resolve, self._by_id, self.buffer_rows
        width, in_range = len(target.columns), target.in_range
        start = target.rows
        written = 0
        switch_to = None
        row = None
        try:
            with self.conn.cursor() as cursor, cursor.copy(self._statement(target)) as copy:
                if target.binary:
                    copy.set_types(target.type_oids)
                format_row, transformer, out, flush = _row_writer(copy, target.binary)
                try:
                    for row in pending:
                        if type(row) is not tuple or len(row) != width or not in_range(row):
                            self._check(target, row, start + written + 1)
                        format_row(row, transformer, out)
                        written += 1
                        if len(out) > _FLUSH_BYTES:
                            flush(out)
                    for item in iterator:
                        table, row = item if type(item) is tuple and len(item) == 2 else _split(item, 0)
                        other = by_id.get(id(table)) or resolve(table)
                        if other is target:
                            if type(row) is not tuple or len(row) != width or not in_range(row):
                                self._check(target, row, start + written + 1)
                            format_row(row, transformer, out)
                            written += 1
                            if len(out) > _FLUSH_BYTES:
                                flush(out)
                            continue
                        buffer = buffers.setdefault(id(other), [])
                        buffer.append(row)
                        if len(buffer) >= limit:
                            switch_to = other
                            break
                except _CLIENT_ERRORS as exc:
                    raise self._value_error(target, row, start + written + 1, exc) from None
                flush(out, final=True)
        except psycopg.Error as exc:
            raise self._server_error(target, start, exc) from None
        finally:
            target.rows = start + written
        return switch_to

    def _statement(self, target: TableTarget) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            target.destination, target.column_list(), sql.SQL(" (FORMAT BINARY)" if target.binary else ""))

    # ------------------------------------------------------------------ errors

    def _check(self, target: TableTarget, row: Any, number: int) -> None:
        """The slow path of a row that failed a quick check: raise if it is really wrong."""
        if not isinstance(row, (tuple, list)):
            raise IngestError(f"Row {number:,} of {target.display} in this batch is a {type(row).__name__}, "
                              f"not a tuple of {len(target.columns)} values ({', '.join(target.columns)}).")
        if len(row) != len(target.columns):
            raise IngestError(
                f"Row {number:,} of {target.display} in this batch has {len(row)} values, the table has "
                f"{len(target.columns)} columns ({', '.join(target.columns)}): give one value per column, in "
                "this order (None for NULL).")
        for index, low, high in target.range_checks:
            value = row[index]
            if value is None or isinstance(value, int) and low <= value <= high:
                continue
            if isinstance(value, int):
                raise IngestError(
                    f'Row {number:,} of {target.display} in this batch: column "{target.columns[index]}" '
                    f"({target.type_names[index]}) cannot hold {value!r}: out of range.")
            raise IngestError(
                f'Row {number:,} of {target.display} in this batch: column "{target.columns[index]}" '
                f"({target.type_names[index]}) takes int, not {type(value).__name__} ({value!r:.80}).")

    def _value_error(self, target: TableTarget, row: Any, number: int, exc: Exception) -> IngestError:
        column = ""
        if isinstance(row, (tuple, list)) and target.binary:
            for name, oid, typname, value in zip(target.columns, target.type_oids, target.type_names, row):
                if value is None:
                    continue
                try:
                    self.conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)(type(value), self.conn).dump(value)
                except Exception:
                    column = f' column "{name}" ({typname}) cannot take the {type(value).__name__} {value!r:.80}:'
                    break
        return IngestError(f"Row {number:,} of {target.display} in this batch:{column} {exc}. Give each column a "
                           "value of the Python type its PostgreSQL type takes (e.g. int, Decimal, str, "
                           "datetime), or None.")

    def _server_error(self, target: TableTarget, start: int, exc: psycopg.Error) -> IngestError:
        if isinstance(exc, psycopg.errors.QueryCanceled) and exc.__cause__ is not None:
            exc = exc.__cause__
        context = (exc.diag.context or "") if hasattr(exc, "diag") else ""
        where = ""
        line = re.search(r"line (\d+)(?:, column ([^:]+))?", context)
        if line:
            where = f"row {start + int(line.group(1)):,} of {target.display} in this batch"
            if line.group(2):
                where += f', column "{line.group(2)}"'
        else:
            where = f"rows of {target.display} in this batch"
        return IngestError(f"{where}: {_first_line(exc)}. Fix the rows or the table definition; the batch was "
                           "rolled back.")


def _range_checker(checks: tuple[tuple[int, int, int], ...]):
    """A function row -> True if every smallint/integer value is an int in range (compiled once)."""
    if not checks:
        return lambda row: True
    condition = " and ".join(f"{low} <= row[{index}] <= {high}" for index, low, high in checks)
    namespace: dict = {}
    exec(f"def in_range(row):\n try:\n  return {condition}\n except TypeError:\n  return False\n", namespace)
    return namespace["in_range"]


def _row_writer(copy, binary: bool):
    """(format_row, transformer, out, flush): the fast path formats binary rows with psycopg's own
    (compiled) row formatter into our buffer, saving two Python calls a row; else ``write_row``."""
    if binary and _format_row_binary is not None:
        out = bytearray(_BINARY_SIGNATURE)

        def flush(buffer: bytearray, final: bool = False) -> None:
            if final:
                buffer += _BINARY_TRAILER
            copy.write(bytes(buffer))
            buffer.clear()

        return _format_row_binary, copy.formatter.transformer, out, flush

    def format_row(row, transformer, out) -> None:
        copy.write_row(row)

    return format_row, None, bytearray(), lambda buffer, final=False: None


def _split(item: Any, number: int) -> tuple[Any, Any]:
    try:
        table, row = item
    except (TypeError, ValueError):
        raise IngestError(f"A batch item is {item!r:.80}, not a (table, row_tuple) pair.") from None
    return table, row


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
