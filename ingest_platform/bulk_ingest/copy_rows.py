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

Rows are read and written in chunks of ``_CHUNK_ROWS`` so that the per-row work runs in C: a chunk
whose items all name the open table is taken with ``map``/``itemgetter``, checked with ``set``/
``min``/``max`` (a chunk that fails a quick check is checked row by row, for the exact error), and
formatted by psycopg's own (compiled) row formatter under ``map``. Numeric columns are encoded a
chunk at a time (``numeric_binary``, ~4x cheaper than psycopg's per-value dumper) and passed as
ready-made fields; they go last in the COPY's column list, so a row is the other values plus them.

A batch item whose second part is a whole input (Arrow data, a CSV file, a dump table: see
``bulk_sources``) ends the open COPY and is COPYed on its own, after the rows of its table that
wait in a buffer, so each table's rows keep their order.

An upsert into an empty table may COPY straight into the live table (``TableTarget.direct``, see
``upsert.py``): what each COPY sent is then kept (``TableTarget.replays``: the bytes in a spool
file, or the file to read again), and if the server refuses it (a key repeated in the batch, or
already there) the COPY is rolled back to a savepoint and every COPY of the batch replayed into a
staging table, so the batch loads exactly as through staging, with the same errors.
"""

from __future__ import annotations

import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice, repeat
from operator import itemgetter
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq, sql
from psycopg.types.string import BytesBinaryDumper

from ingest_platform.bulk_ingest.bulk_sources import BulkInput, Replay, bulk_input
from ingest_platform.bulk_ingest.numeric_binary import encode_decimals
from ingest_platform.errors import IngestError, first_line
from ingest_platform.postgres import catalog

_INT_RANGES = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1)}
_FLUSH_BYTES = 1 << 17
_CHUNK_ROWS = 1024  # rows read, checked, encoded and formatted at a time
_NUMERIC_OID = 1700
_BYTEA_OID = 17  # numeric fields made here are sent through the bytes dumper
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_ROW_TYPES = {tuple, list}
# psycopg's compiled row formatter, a private module: psycopg 3.3 has no public function that
# formats a row into a buffer of ours (Copy.write_row costs a Python call per row and buffers on
# its own), and this keeps the per-row work in C. Confined here; without it write_row does the same.
try:
    from psycopg._copy_base import _binary_signature as _BINARY_SIGNATURE
    from psycopg._copy_base import _binary_trailer as _BINARY_TRAILER
    from psycopg._copy_base import format_row_binary as _format_row_binary
except ImportError:  # pragma: no cover
    _format_row_binary = None
_CLIENT_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    AttributeError,
    psycopg.DataError,
    psycopg.ProgrammingError,
)


@dataclass
class TableTarget:
    """One table of the metadata, as the loader writes to it."""

    table: sa.Table
    display: str  # schema.table, for messages and metadata
    qualified: sql.Composed
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    type_oids: tuple[int, ...]
    type_names: tuple[str, ...]
    binary: bool
    range_checks: tuple[tuple[int, int, int], ...]  # (column index, low, high)
    numeric: tuple[int, ...] = ()  # numeric columns encoded here (binary COPY only)
    destination: sql.Composable | None = None  # where this batch's COPY goes
    rows: int = 0  # rows of the current batch
    # Upsert straight into the live table (see upsert.py): this batch's COPYs go to the live table
    # under a savepoint, each kept in `replays` to be sent into staging if one of them fails.
    direct: bool = False
    replays: list[Replay] | None = field(default=None, repr=False)
    direct_ok: bool = True  # False once a direct COPY failed (this call)
    maybe_empty: bool | None = None  # None: not looked at yet
    diverted: bool = False  # this batch's direct COPY was replayed

    @property
    def can_go_direct(self) -> bool:
        return (
            bool(self.primary_key)
            and self.binary
            and _format_row_binary is not None
            and self.direct_ok
        )

    @property
    def copy_order(self) -> tuple[int, ...]:
        """Column indexes in the order of the COPY: the numeric columns last."""
        return tuple(i for i in range(len(self.columns)) if i not in self.numeric) + self.numeric

    def column_list(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)


def describe_target(conn: psycopg.Connection, table: sa.Table, schema: str) -> TableTarget:
    """Column types of the live table (after migration), in the order of the SQLAlchemy columns."""
    columns = tuple(c.name for c in table.columns)
    qualified = catalog.qualified(schema, table.name)
    # Type oids and names for the binary dumpers and range checks: COPY's own read of the catalog.
    found = {
        name: (oid, typname)
        for name, oid, typname in conn.execute(
            "SELECT a.attname, a.atttypid, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = "
            "a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (qualified.as_string(conn),),
        )
    }
    oids = tuple(found[c][0] for c in columns)
    names = tuple(found[c][1] for c in columns)
    binary = True
    for oid in oids:
        try:
            conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
        except psycopg.ProgrammingError:
            binary = False
    checks = (
        tuple((i, *_INT_RANGES[n]) for i, n in enumerate(names) if n in _INT_RANGES)
        if binary
        else ()
    )
    numeric = tuple(i for i, oid in enumerate(oids) if oid == _NUMERIC_OID) if binary else ()
    return TableTarget(
        table,
        f"{schema}.{table.name}",
        qualified,
        columns,
        tuple(c.name for c in table.primary_key.columns),
        oids,
        names,
        binary,
        checks,
        numeric,
    )


class BatchCopier:
    """Routes the rows of a batch to COPY statements, one open at a time."""

    def __init__(
        self,
        conn: psycopg.Connection,
        targets: list[TableTarget],
        buffer_rows: int,
        divert: Callable[[TableTarget], sql.Composable] | None = None,
    ):
        self.conn = conn
        self.targets = targets
        self.buffer_rows = buffer_rows
        self.divert = (
            divert  # rolls a failed direct COPY back, returns the staging table to replay into
        )
        self._by_id = {id(t.table): t for t in targets}
        self._by_key = {t.table.key: t for t in targets}

    def resolve(self, table: Any) -> TableTarget:
        target = self._by_id.get(id(table))
        if target is None:
            key = (
                table.key
                if isinstance(table, sa.Table)
                else table
                if isinstance(table, str)
                else None
            )
            target = self._by_key.get(key) if key is not None else None
            if target is None:
                known = ", ".join(sorted(self._by_key)) or "none"
                raise IngestError(
                    f"The batch names the table {key or table!r}, which is not in the metadata "
                    f"passed to ingest() (its tables: {known}). Add it to the metadata or fix the "
                    f"batch."
                )
            # Not cached by id(): only the metadata's own tables live as long as the copier; the id
            # of a freed key string or Table could come back as another table's.
        return target

    def copy_batch(self, rows: Iterable) -> None:
        """COPY every row to its target's destination; counts land in ``target.rows``."""
        buffers: dict[int, list] = {}
        source = _Items(iter(rows))
        step = self._next(source, buffers)
        while step is not None:
            target, whole = step
            if whole is None:
                step = self._copy_stream(target, buffers.pop(id(target)), source, buffers)
                continue
            waiting = buffers.pop(id(target), None)
            if waiting:  # the table's earlier rows first
                self._copy_stream(target, waiting, _Items(iter(())), buffers)
            self._copy_whole(target, whole)
            step = self._next(source, buffers)
        for target in self.targets:  # what is left in the buffers
            pending = buffers.pop(id(target), None)
            if pending:
                self._copy_stream(target, pending, _Items(iter(())), buffers)

    def _next(self, source: _Items, buffers: dict) -> _Step | None:
        """What to COPY next: the table of the next item (its row put in its buffer), or a whole
        input; None at the end of the batch."""
        items = source.take()
        if not items:
            return None
        table, row = _split(items[0])
        source.leftover = items[1:]
        target = self.resolve(table)
        whole = bulk_input(row)
        if whole is None:
            buffers.setdefault(id(target), []).append(row)
        return target, whole

    def _copy_whole(self, target: TableTarget, whole: BulkInput) -> None:
        """COPY a whole input into the target's destination of this batch."""
        if target.destination is None:
            raise AssertionError("a target's destination is set when its batch begins")
        try:
            rows = whole.copy(
                self.conn, target, target.destination, target.replays, self._rows_into(target)
            )
        except psycopg.Error as exc:
            if not (target.direct and self.divert is not None):
                raise whole.error(target, exc) from None
            rows = self._replay(target)
        target.rows += rows

    def _rows_into(self, target: TableTarget) -> Callable[[list[tuple]], int]:
        """Writes Python rows into the target (the Arrow values of a table arrow_copy cannot
        encode)."""

        def write(rows: list[tuple]) -> int:
            before = target.rows
            self._copy_stream(target, rows, _Items(iter(())), {})
            return target.rows - before

        return write

    def _copy_stream(
        self, target: TableTarget, pending: list, source: _Items, buffers: dict
    ) -> _Step | None:
        """One COPY into `target`: its pending rows, then rows from `source` while they are its own.
        Returns what to COPY next (a table whose buffer filled up, or a whole input), or None when
        the batch is done."""
        start = target.rows
        written = 0
        switch_to = None
        failed: list[psycopg.Error] = []
        spool = None
        if target.direct and target.replays is not None:
            spool = new_spool()
            target.replays.append(
                SpooledCopy(
                    spool,
                    lambda destination: self._statement(target, destination),
                    lambda exc: self._server_error(target, start, exc),
                )
            )
        try:
            with self.conn.cursor() as cursor:
                if target.numeric and _BYTEA_OID not in target.type_oids:
                    # The fields made by numeric_binary pass through as bytes, in C (psycopg's
                    # default
                    # bytea dumper by oid is Python; kept for tables with bytea columns: it also
                    # takes
                    # psycopg.Binary).
                    cursor.adapters.register_dumper(None, BytesBinaryDumper)
                with cursor.copy(self._statement(target)) as copy:
                    if target.binary:
                        copy.set_types(
                            [
                                _BYTEA_OID if i in target.numeric else target.type_oids[i]
                                for i in target.copy_order
                            ]
                        )
                    format_row, transformer, out, flush = _row_writer(
                        copy, target.binary, spool, failed
                    )
                    write = _ChunkWriter(
                        target,
                        format_row,
                        transformer,
                        out,
                        flush,
                        lambda row, number: self._check(target, row, start + number),
                        self.conn.adapters.get_dumper_by_oid(_NUMERIC_OID, pq.Format.BINARY)(
                            Decimal, self.conn
                        )
                        if target.numeric
                        else None,
                    )
                    try:
                        written, switch_to = self._route(target, pending, source, buffers, write)
                    except _CLIENT_ERRORS as exc:
                        number, row = (
                            exc.args[-1] if exc.args and type(exc.args[-1]) is _At else (None, None)
                        )
                        if number is None:
                            raise
                        exc.args = exc.args[:-1]
                        if isinstance(exc, psycopg.Error) and exc.diag.sqlstate:
                            raise  # the server's, surfaced while sending
                        self._check(target, row, start + number)
                        raise self._value_error(target, row, start + number, exc) from None
                    flush(out, final=True)
                    if failed:
                        raise failed[0]
        except psycopg.Error as exc:
            if target.direct and self.divert is not None:
                self._replay(target)
            else:
                raise self._server_error(target, start, exc) from None
        finally:
            target.rows = start + written
        return switch_to

    def _route(
        self, target: TableTarget, pending: list, source: _Items, buffers: dict, write: _ChunkWriter
    ) -> tuple[int, _Step | None]:
        """Write `pending`, then the rows of `target` from `source`, a chunk at a time, keeping the
        rows of other tables in their buffers. Returns (rows written, what to COPY next: a target
        whose buffer filled up, or a whole input; None at the end)."""
        own = target.table
        written = 0
        for start in range(0, len(pending), _CHUNK_ROWS):
            written += write(pending[start : start + _CHUNK_ROWS], written)
        while items := source.take():
            rows = _rows_of(items, own)
            if rows is not None:  # the usual case: every item of the chunk is a row of `own`
                written += write(rows, written)
                continue
            rows = []
            switch_to: _Step | None = None
            try:
                for index, item in enumerate(items):
                    table, row = _split(item)
                    if type(row) is not tuple:
                        whole = bulk_input(row)
                        if whole is not None:
                            other = self._by_id.get(id(table)) or self.resolve(table)
                            source.leftover, switch_to = items[index + 1 :], (other, whole)
                            break
                    if table is not own:
                        other = self._by_id.get(id(table)) or self.resolve(table)
                        if other is not target:
                            buffer = buffers.get(id(other))
                            if buffer is None:
                                buffer = buffers[id(other)] = []
                            buffer.append(row)
                            if len(buffer) >= self.buffer_rows:
                                source.leftover, switch_to = items[index + 1 :], (other, None)
                                break
                            continue
                    rows.append(row)
            except IngestError:
                write(rows, written)  # the errors of earlier rows first
                raise
            written += write(rows, written)
            if switch_to is not None:
                return written, switch_to
        return written, None

    def _replay(self, target: TableTarget) -> int:
        """A direct COPY of `target` failed: roll the batch's COPYs back and send them again, in
        order, into a staging table. Returns the rows of the last one (the one that failed)."""
        if self.divert is None:
            raise AssertionError("a direct COPY needs a divert to replay into staging")
        replays, target.replays = target.replays or [], None
        target.destination = self.divert(target)
        target.direct, target.direct_ok, target.diverted = False, False, True
        rows = 0
        try:
            for replay in replays:
                rows = replay.replay(self.conn, target.destination)
        finally:
            for replay in replays:
                replay.close()
        return rows

    def _statement(
        self, target: TableTarget, destination: sql.Composable | None = None
    ) -> sql.Composed:
        columns = sql.SQL(", ").join(sql.Identifier(target.columns[i]) for i in target.copy_order)
        return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            destination or target.destination,
            columns,
            sql.SQL(" (FORMAT BINARY)" if target.binary else ""),
        )

    # ------------------------------------------------------------------ errors

    def _check(self, target: TableTarget, row: Any, number: int) -> None:
        """The slow path of a row that failed a quick check: raise if it is really wrong."""
        if not isinstance(row, (tuple, list)):
            raise IngestError(
                f"Row {number:,} of {target.display} in this batch is a {type(row).__name__}, "
                f"not a tuple of {len(target.columns)} values ({', '.join(target.columns)})."
            )
        if len(row) != len(target.columns):
            raise IngestError(
                f"Row {number:,} of {target.display} in this batch has {len(row)} values, the "
                f"table has "
                f"{len(target.columns)} columns ({', '.join(target.columns)}): give one value per "
                f"column, in "
                "this order (None for NULL)."
            )
        for index, low, high in target.range_checks:
            value = row[index]
            if value is None or isinstance(value, int) and low <= value <= high:
                continue
            if isinstance(value, int):
                raise IngestError(
                    f"Row {number:,} of {target.display} in this batch: column "
                    f'"{target.columns[index]}" '
                    f"({target.type_names[index]}) cannot hold {value!r}: out of range."
                )
            raise IngestError(
                f"Row {number:,} of {target.display} in this batch: column "
                f'"{target.columns[index]}" '
                f"({target.type_names[index]}) takes int, not {type(value).__name__} "
                f"({value!r:.80})."
            )

    def _value_error(
        self, target: TableTarget, row: Any, number: int, exc: Exception
    ) -> IngestError:
        column = ""
        if isinstance(row, (tuple, list)) and target.binary:
            for name, oid, typname, value in zip(
                target.columns, target.type_oids, target.type_names, row, strict=False
            ):
                if value is None:
                    continue
                try:
                    self.conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)(
                        type(value), self.conn
                    ).dump(value)
                except Exception:  # whatever the dumper raises: the column cannot take it
                    column = (
                        f' column "{name}" ({typname}) cannot take the {type(value).__name__} '
                        f"{value!r:.80}:"
                    )
                    break
        return IngestError(
            f"Row {number:,} of {target.display} in this batch:{column} {exc}. Give each column a "
            "value of the Python type its PostgreSQL type takes (e.g. int, Decimal, str, "
            "datetime), or None."
        )

    def _server_error(self, target: TableTarget, start: int, error: psycopg.Error) -> IngestError:
        exc: BaseException = error
        if isinstance(error, psycopg.errors.QueryCanceled) and error.__cause__ is not None:
            exc = error.__cause__
        context = (exc.diag.context or "") if isinstance(exc, psycopg.Error) else ""
        where = ""
        line = re.search(r"line (\d+)(?:, column ([^:]+))?", context)
        if line:
            where = f"row {start + int(line.group(1)):,} of {target.display} in this batch"
            if line.group(2):
                where += f', column "{line.group(2)}"'
        else:
            where = f"rows of {target.display} in this batch"
        return IngestError(
            f"{where}: {first_line(exc)}. Fix the rows or the table definition; the batch was "
            "rolled back."
        )


def _row_writer(copy: Any, binary: bool, spool: Any, failed: list[psycopg.Error]):
    """(format_row, transformer, out, flush): the fast path formats binary rows with psycopg's own
    (compiled) row formatter into our buffer, saving two Python calls a row; else ``write_row``.
    With a `spool` (a direct COPY) every chunk is also written there, and a failed send is recorded
    in `failed` instead of raised, so that the rest of the rows still reach the spool."""
    if binary and _format_row_binary is not None:
        out = bytearray(_BINARY_SIGNATURE)

        if spool is None:

            def flush(buffer: bytearray, final: bool = False) -> None:
                if final:
                    buffer += _BINARY_TRAILER
                copy.write(bytes(buffer))
                buffer.clear()
        else:

            def flush(buffer: bytearray, final: bool = False) -> None:
                if final:
                    buffer += _BINARY_TRAILER
                data = bytes(buffer)
                buffer.clear()
                spool.write(data)
                if not failed:
                    try:
                        copy.write(data)
                    except psycopg.Error as exc:
                        failed.append(exc)

        return _format_row_binary, copy.formatter.transformer, out, flush

    def format_row(row, transformer, out) -> None:
        copy.write_row(row)

    return format_row, None, bytearray(), lambda buffer, final=False: None


# What to COPY next: a table's buffered rows (None) or a whole input of the table.
_Step = tuple[TableTarget, BulkInput | None]


class _At(tuple):
    """(row number in this COPY, row), appended to the args of a client error in the row loop."""


class _Items:
    """The batch's items, read a chunk at a time; `leftover`: items read but not yet routed."""

    def __init__(self, iterator: Iterator[Any]) -> None:
        self.iterator = iterator
        self.leftover: list = []

    def take(self) -> list:
        items, self.leftover = self.leftover, []
        return items or list(islice(self.iterator, _CHUNK_ROWS))


def _rows_of(items: list, own: sa.Table) -> list | None:
    """The rows of `items` if every item is a pair naming the table `own` itself and holding a
    tuple or list (not a whole input), else None."""
    try:
        if set(map(len, items)) == {2} and set(map(id, map(_FIRST, items))) == {id(own)}:
            rows = list(map(_SECOND, items))
            if set(map(type, rows)) <= _ROW_TYPES:
                return rows
    except (TypeError, LookupError):
        pass
    return None


class _ChunkWriter:
    """Checks, encodes and formats lists of rows of one table into one COPY. ``write(rows, offset)``
    returns len(rows); `offset` is the number of rows this COPY wrote before them. A client error
    carries ``_At((row number in this COPY, row))`` as its last arg."""

    def __init__(
        self,
        target: TableTarget,
        format_row,
        transformer,
        out: bytearray,
        flush,
        check,
        numeric_dumper,
    ):
        self.target = target
        self.width = len(target.columns)
        self.format_row, self.transformer, self.out, self.flush, self.check = (
            format_row,
            transformer,
            out,
            flush,
            check,
        )
        self.numeric_dumper = numeric_dumper
        self.widths: dict[
            int, int
        ] = {}  # numeric column -> width of its last chunk (encode_decimals)
        self.others = [i for i in target.copy_order if i not in target.numeric]

    def __call__(self, rows: list, offset: int) -> int:
        if not rows:
            return 0
        if not self._quick_check(rows):
            for number, row in enumerate(rows, offset + 1):
                self.check(row, number)  # raises for a row that is really wrong
        numeric = None
        ready: Iterable[Any] = rows
        if self.target.numeric:
            numeric = [self._encode(rows, index, offset) for index in self.target.numeric]
            ready = self._with_fields(rows, numeric)
        try:
            deque(map(self.format_row, ready, repeat(self.transformer), repeat(self.out)), 0)
        except _CLIENT_ERRORS:
            self._find_bad_row(rows, numeric, offset)
            raise
        if len(self.out) > _FLUSH_BYTES:
            self.flush(self.out)
        return len(rows)

    def _quick_check(self, rows: list) -> bool:
        """True if every row is a tuple of the right length with its smallint/integer values in
        range (a value of another type that compares with ints is left to the dumper, which refuses
        it)."""
        if set(map(type, rows)) != {tuple} or set(map(len, rows)) != {self.width}:
            return False
        try:
            for index, low, high in self.target.range_checks:
                values = list(map(itemgetter(index), rows))
                try:
                    smallest, largest = min(values), max(values)
                except TypeError:  # NULLs among them (or values that do not compare)
                    values = [v for v in values if v is not None]
                    if not values:
                        continue
                    smallest, largest = min(values), max(values)
                if smallest < low or largest > high:
                    return False
        except (TypeError, ValueError):  # not comparable with ints
            return False
        return True

    def _encode(self, rows: list, index: int, offset: int) -> list | tuple:
        """The binary fields of column `index` of `rows` (None for NULL)."""
        values = list(map(itemgetter(index), rows))
        kinds = set(map(type, values))
        if kinds == {Decimal}:
            encoded = encode_decimals(values, self.widths.get(index, 0))
            if encoded is not None:
                fields, self.widths[index] = encoded
                return fields
        elif kinds == {Decimal, type(None)}:
            encoded = encode_decimals(
                [v for v in values if v is not None], self.widths.get(index, 0)
            )
            if encoded is not None:
                fields, self.widths[index] = encoded
                present = iter(fields)
                return [None if v is None else next(present) for v in values]
        # Anything else (int, NaN, Infinity, exponents, mixed scales, a wrong type): psycopg, one
        # by one.
        dump = self.numeric_dumper.dump
        dumped: list[Any] = []
        for number, value in enumerate(values):
            try:
                dumped.append(None if value is None else dump(value))
            except _CLIENT_ERRORS as exc:
                exc.args = (*exc.args, _At((offset + number + 1, rows[number])))
                raise
        return dumped

    def _with_fields(self, rows: list, numeric: list) -> Iterable[tuple]:
        """The rows in COPY order: the values of the other columns, then the numeric fields."""
        others = self.others
        values: Iterable[tuple[Any, ...]]
        if len(others) > 1:
            values = map(itemgetter(*others), rows)
        else:  # itemgetter of one index gives the value, not a tuple
            values = (
                zip(map(itemgetter(others[0]), rows), strict=False)
                if others
                else repeat((), len(rows))
            )
        return map(tuple.__add__, values, zip(*numeric, strict=False))

    def _find_bad_row(self, rows: list, numeric: list | None, offset: int) -> None:
        """After the formatter failed on a chunk: raise its error again, naming the row."""
        ready = rows if numeric is None else list(self._with_fields(rows, numeric))
        for number, row in enumerate(ready):
            try:
                self.format_row(row, self.transformer, bytearray())
            except _CLIENT_ERRORS as exc:
                exc.args = (*exc.args, _At((offset + number + 1, rows[number])))
                raise


def new_spool():
    """Where a direct COPY keeps its bytes (memory up to 8 MiB, then a temporary file)."""
    return tempfile.SpooledTemporaryFile(max_size=1 << 23)


class SpooledCopy:
    """The bytes of one direct COPY, to send again into another destination."""

    def __init__(
        self,
        spool: Any,
        statement: Callable[[sql.Composable], sql.Composed],
        error: Callable[[psycopg.Error], IngestError],
    ):
        self.spool, self.statement, self.error = spool, statement, error

    def replay(self, conn: psycopg.Connection, destination: sql.Composable) -> int:
        self.spool.seek(0)
        try:
            with conn.cursor() as cursor:
                with cursor.copy(self.statement(destination)) as copy:
                    while chunk := self.spool.read(_FLUSH_BYTES):
                        copy.write(chunk)
                return cursor.rowcount
        except psycopg.Error as exc:
            raise self.error(exc) from None

    def close(self) -> None:
        self.spool.close()


def _split(item: Any) -> tuple[Any, Any]:
    try:
        table, row = item
    except (TypeError, ValueError):
        raise IngestError(f"A batch item is {item!r:.80}, not a (table, row_tuple) pair.") from None
    return table, row
