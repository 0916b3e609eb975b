"""Log-based CDC: PostgreSQL logical decoding of a slot -> the same staging -> merged tables.

The second CDC source kind (``kind = "logical"`` in the CDC config). Instead of a change log
written by the application, the source's write-ahead log is decoded through a logical replication
slot; the staging table, the merge, the watermark row and the checks are the change-log kind's.

Why pgoutput over SQL, not wal2json, test_decoding or a replication connection
---------------------------------------------------------------------------
- wal2json is an extension that neither the embedded server nor a stock Debian PostgreSQL ships;
  pgoutput and test_decoding are built into every PostgreSQL >= 10.
- test_decoding prints ``col[type]:'value'`` text meant for humans: quoting rules per type, no
  escape for a column name containing ``:`` or ``[``, no table filter on the server.
- pgoutput is the protocol logical replication itself uses: length-prefixed values (no parsing
  ambiguity), an explicit marker for an unchanged TOAST value ('u'), relation messages with
  column names, key flags and type OIDs, and the publication filters the tables on the server.
- psycopg 3 has no replication-protocol connection, so the slot is read with
  ``pg_logical_slot_peek_binary_changes(slot, upto_lsn, upto_nchanges, 'proto_version', '1',
  'publication_names', pub)`` on an ordinary connection. Peek does not move the slot; the
  position is confirmed with ``pg_replication_slot_advance`` only after the merge committed.

Exactly once
------------
The merged table's watermark row (``_cdc_watermark.horizon_id``) holds, per table, the WAL
position (an LSN as bigint) up to which every change is merged; the merge moves it in the same
transaction as the rows. The slot is advanced to the smallest watermark of the config's tables
afterwards (``confirm_slot``). A crash between merge and confirm leaves the slot behind the
watermark: the next run confirms first, and skips every transaction that ends at or before the
table's watermark anyway, so a batch is never applied twice and never lost. Rows carry the
commit LSN of their last change as ``_last_change_id``.

A run decodes whole transactions up to ``pg_current_wal_flush_lsn()`` read before the peek (or
``max_changes_per_run`` rows, then up to the last whole transaction) and stages their changes of
this table reduced to the last image per key. When the peek was not cut short the watermark moves
to that flush position even without a change of the table, so a slot whose tables are quiet does
not hold the WAL other tables write (pgoutput sends nothing for a transaction that changed no
published table).

UPDATEs and unchanged TOAST values
----------------------------------
An UPDATE that does not change a TOASTed value (a large text, jsonb, bytea) does not write it to
the WAL again, so pgoutput marks it unchanged ('u') instead of sending it. Staging records those
column names in ``_unchanged``; the merge fills them from the merged row before upserting
(``warehouse._fill_unchanged``). Within one batch, a later image inherits the value an earlier
image of the same key carried.

Change history and several tables
---------------------------------
The merge also writes ``<schema>."<table>__changes"`` (one row per decoded change, running ids:
``_stage_history``), as the change-log kind does. ``run_logical_all`` decodes the slot once for
all the config's tables and confirms it once, after every merge (the position is the smallest
watermark anyway, so a table merged alone never moves it past another's changes).

One slot, several processes
---------------------------
A slot serves one backend at a time: a peek or advance while another holds it fails at once
("replication slot ... is active for PID ..."). The steps of one CDC job can run at once in
several processes or on Celery workers (each table's staging peeks, each merge confirms), so both
wait for the slot (``_when_slot_free``) up to ``SLOT_BUSY_WAIT_SECONDS`` and then fail in one
line naming the slot and what to do.

A stalled slot
--------------
An unconsumed slot keeps every WAL segment since its ``restart_lsn``: the disk fills.
``slot_health`` measures ``pg_current_wal_lsn() - restart_lsn``; the merged tables' check
``slot_wal_retained`` fails above ``max_retained_wal_mb`` with the action to take.
(The server-side guard is ``max_slot_wal_keep_size``, which invalidates the slot instead:
then a full resync is needed.)

First run
---------
A table whose watermark is 0 gets an initial snapshot: every current source row merged (as the
change-log kind's full resync does) and its watermark set to the slot's confirmed position read
before the snapshot. Changes after that position are replayed over the snapshot; their row images
are absolute, so replaying one the snapshot already contains converges to the same row.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import sql

from ingest_platform.cdc import source as src
from ingest_platform.cdc import warehouse as wh
from ingest_platform.cdc.config import CdcConfig, CdcTable, LogicalSource
from ingest_platform.errors import ConfigError, IngestError
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect, scalar

if TYPE_CHECKING:
    from ingest_platform.cdc.pipeline import StageResult

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# How long a peek or advance waits for a slot another backend holds (a concurrent step of the
# same job holds it for the seconds its decoding takes).
SLOT_BUSY_WAIT_SECONDS = 120.0
T = TypeVar("T")


class LogicalDecodingError(IngestError):
    """The slot or publication is missing or unusable, or the WAL holds something the pipeline
    cannot apply. Nothing was merged; the slot did not move."""


# ----------------------------------------------------------------------------- pgoutput


@dataclass
class Relation:
    oid: int
    schema: str
    name: str
    columns: list[str]
    key_columns: list[str]


@dataclass
class Change:
    """One row change: `values` maps column -> text value or None; `unchanged` the columns an
    UPDATE did not send (unchanged TOAST values). `old_key`: the key before an UPDATE that changed
    it, or a DELETE's key."""

    action: str  # "added" | "changed" | "deleted"
    relation: Relation
    values: dict[str, str | None]
    unchanged: frozenset[str] = frozenset()
    old_key: dict[str, str | None] | None = None


@dataclass
class Transaction:
    end_lsn: int
    committed_at: datetime
    changes: list[Change] = field(default_factory=list)


# Precompiled: decoding runs once per message and once per column value (the hot loop of a run).
_STRUCTS: dict[str, struct.Struct] = {}
_INT32 = struct.Struct("!i").unpack_from
_INT16 = struct.Struct("!h").unpack_from
_UINT32 = struct.Struct("!I").unpack_from
_NULL, _UNCHANGED, _TEXT = ord("n"), ord("u"), ord("t")
_INSERT, _UPDATE, _DELETE = ord("I"), ord("U"), ord("D")
_OLD_MARKERS = (ord("K"), ord("O"))
_NONE: frozenset[str] = frozenset()


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        compiled = _STRUCTS.get(fmt)
        if compiled is None:
            compiled = _STRUCTS[fmt] = struct.Struct(fmt)
        (value,) = compiled.unpack_from(self.data, self.pos)
        self.pos += compiled.size
        return value

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def tuple(self, columns: list[str]) -> tuple[dict[str, str | None], frozenset[str]]:
        values, unchanged, self.pos = _tuple_at(self.data, self.pos, columns)
        return values, unchanged


def _tuple_at(
    data: bytes, pos: int, columns: list[str]
) -> tuple[dict[str, str | None], frozenset[str], int]:
    """A TupleData at `pos`: (values, unchanged column names, the position after it)."""
    (count,) = _INT16(data, pos)
    pos += 2
    values: dict[str, str | None] = {}
    unchanged: set[str] = set()
    for number in range(count):
        name = columns[number] if number < len(columns) else f"#{number}"
        kind = data[pos]
        pos += 1
        if kind == _TEXT:
            (length,) = _INT32(data, pos)
            pos += 4
            values[name] = data[pos : pos + length].decode()
            pos += length
        elif kind == _NULL:
            values[name] = None
        elif kind == _UNCHANGED:
            unchanged.add(name)
        else:
            raise LogicalDecodingError(f"pgoutput: unknown tuple value kind {bytes([kind])!r}")
    return values, frozenset(unchanged) if unchanged else _NONE, pos


def decode(rows, relations: dict[int, Relation] | None = None) -> list[Transaction]:
    """pgoutput protocol version 1 messages (the `data` of peek_binary_changes rows, in order) ->
    committed transactions with their row changes. Relation messages precede a relation's first
    change in each decoding call, so `relations` starts empty per call."""
    relations = {} if relations is None else relations
    done: list[Transaction] = []
    current: list[Change] = []
    for message in rows:
        data = bytes(message)
        first = data[0]
        if first in (_INSERT, _UPDATE, _DELETE):  # the hot path: one per row change
            # Int8 kind, Int32 relation oid, then 'N' new / 'K' key / 'O' old tuple(s).
            relation = relations[_UINT32(data, 1)[0]]
            marker, pos = data[5], 6
            old: dict[str, str | None] | None = None
            if first != _INSERT and marker in _OLD_MARKERS:
                old, _, pos = _tuple_at(data, pos, relation.columns)
                if first == _UPDATE:
                    pos += 1  # the 'N' of the new tuple
            if first == _DELETE:
                current.append(Change("deleted", relation, {}, old_key=old))
            else:
                values, unchanged, _ = _tuple_at(data, pos, relation.columns)
                action = "added" if first == _INSERT else "changed"
                current.append(Change(action, relation, values, unchanged, old))
            continue
        r = _Reader(data)
        kind = r.take("!c")
        if kind == b"B":
            current = []
        elif kind == b"C":
            r.take("!b")  # flags
            r.take("!q")  # commit LSN
            end_lsn = r.take("!q")
            micros = r.take("!q")
            done.append(Transaction(end_lsn, PG_EPOCH + timedelta(microseconds=micros), current))
            current = []
        elif kind == b"R":
            oid = r.take("!I")
            schema, name = r.string() or "pg_catalog", r.string()
            r.take("!b")  # replica identity
            columns, keys = [], []
            for _ in range(r.take("!h")):
                flags = r.take("!b")
                column = r.string()
                r.take("!I")  # type oid
                r.take("!i")  # typmod
                columns.append(column)
                if flags & 1:
                    keys.append(column)
            relations[oid] = Relation(oid, schema, name, columns, keys)
        elif kind == b"T":
            count = r.take("!i")
            r.take("!b")
            names = [
                f"{relations[o].schema}.{relations[o].name}" if o in relations else str(o)
                for o in (r.take("!I") for _ in range(count))
            ]
            raise LogicalDecodingError(
                f"the WAL holds a TRUNCATE of {', '.join(names)}, which CDC cannot replay row by "
                "row; publish without it (ALTER PUBLICATION .. SET (publish = 'insert, update, "
                "delete')), drop and recreate the slot, and run cdc_full_resync for the table"
            )
        # 'O' (origin), 'Y' (type) and others carry nothing the merge needs.
    return done


# ----------------------------------------------------------------------------- slot


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _lsn_int(conn: psycopg.Connection, expression: str, params=()) -> int | None:
    return scalar(conn, f"SELECT ({expression} - '0/0'::pg_lsn)::bigint", params)


@dataclass
class SlotHealth:
    slot: str
    retained_bytes: int  # pg_current_wal_lsn() - restart_lsn
    limit_bytes: int
    confirmed_lsn: int
    active: bool
    wal_status: str | None  # reserved / extended / unreserved / lost

    @property
    def passed(self) -> bool:
        return self.retained_bytes <= self.limit_bytes and self.wal_status != "lost"

    def describe(self) -> str:
        mb = self.retained_bytes / 1024 / 1024
        limit = self.limit_bytes / 1024 / 1024
        if self.wal_status == "lost":
            return (
                f"Replication slot {self.slot!r} was invalidated by the server (wal_status lost): "
                f"changes are gone. Drop and recreate the slot "
                f"(SELECT pg_drop_replication_slot('{self.slot}')), reset the tables' watermarks "
                "and run cdc_full_resync."
            )
        if self.passed:
            return f"Slot {self.slot!r} retains {mb:.1f} MB of WAL (limit {limit:.0f} MB)."
        return (
            f"Slot {self.slot!r} retains {mb:.1f} MB of WAL on the source, over the limit of "
            f"{limit:.0f} MB: CDC is not consuming it. Check that cdc_sync runs and succeeds "
            "(cdc_change_log_sensor on, last run's error); if the slot is abandoned, drop it "
            f"(SELECT pg_drop_replication_slot('{self.slot}')) before the source's disk fills, "
            "then recreate it and run cdc_full_resync."
        )


def _slot_row(conn: psycopg.Connection, logical: LogicalSource):
    row = conn.execute(
        "SELECT plugin, database = current_database(), "
        "(confirmed_flush_lsn - '0/0'::pg_lsn)::bigint, "
        "(pg_current_wal_lsn() - restart_lsn)::bigint, active, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s AND slot_type = 'logical'",
        (logical.slot,),
    ).fetchone()
    if row is None:
        raise LogicalDecodingError(
            f"the source has no logical replication slot {logical.slot!r}: create it with "
            f"SELECT pg_create_logical_replication_slot('{logical.slot}', 'pgoutput') "
            "(a role with REPLICATION), or fix [logical] slot in INGEST_CDC_CONFIG"
        )
    plugin, same_database = row[0], row[1]
    if plugin != "pgoutput" or not same_database:
        raise LogicalDecodingError(
            f"replication slot {logical.slot!r} "
            + (
                f"uses the plugin {plugin!r}, not pgoutput"
                if plugin != "pgoutput"
                else "belongs to another database than INGEST_CDC_SOURCE_DSN's"
            )
            + "; create a pgoutput slot in the source database and name it in [logical] slot"
        )
    return row


def slot_health(source_dsn: str, logical: LogicalSource) -> SlotHealth:
    with connect(source_dsn, autocommit=True) as conn:
        _, _, confirmed, retained, active, status = _slot_row(conn, logical)
    return SlotHealth(
        logical.slot,
        retained or 0,
        logical.max_retained_wal_bytes,
        confirmed or 0,
        bool(active),
        status,
    )


def _check_publication(conn: psycopg.Connection, logical: LogicalSource, table: CdcTable) -> None:
    if not scalar(
        conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (logical.publication,)
    ):
        raise LogicalDecodingError(
            f"the source has no publication {logical.publication!r}: create it with CREATE "
            f'PUBLICATION "{logical.publication}" FOR TABLE <tracked tables> WITH (publish = '
            "'insert, update, delete') (as the tables' owner), or fix [logical] publication"
        )
    if not scalar(
        conn,
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
        "AND tablename = %s",
        (logical.publication, table.source_schema, table.source_table),
    ):
        raise LogicalDecodingError(
            f'publication {logical.publication!r} does not include "{table.source_schema}".'
            f'"{table.source_table}": ALTER PUBLICATION "{logical.publication}" ADD TABLE '
            f'"{table.source_schema}"."{table.source_table}"'
        )


def _error(table: CdcTable, error: IngestError) -> IngestError:
    return type(error)(
        f"CDC table {table.name!r}: {error}. Nothing was merged and the slot did not move."
    )


def confirm_slot(source_dsn: str, warehouse_dsn: str, config: CdcConfig) -> int | None:
    """Advance the slot to the smallest watermark of the config's tables (every change up to it is
    merged); the new confirmed LSN, or None when no table has a watermark yet. Idempotent: a
    position at or before the slot's is left alone."""
    logical = _logical(config)
    with connect(warehouse_dsn, autocommit=True) as wconn:
        marks = wh.all_watermarks(wconn, config)
    horizons = [marks.get(t.name, 0) for t in config.tables]
    if not horizons or min(horizons) <= 0:
        return None
    target = min(horizons)
    with connect(source_dsn, autocommit=True) as sconn:
        confirmed = _slot_row(sconn, logical)[2] or 0
        if target > confirmed:
            _when_slot_free(
                logical,
                lambda: sconn.execute(
                    "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                    (logical.slot, lsn_text(target)),
                ),
            )
    return target


def _when_slot_free(
    logical: LogicalSource, action: Callable[[], T], wait_seconds: float | None = None
) -> T:
    """`action` (a peek or an advance of the slot), tried again while another backend holds the
    slot, for at most `wait_seconds` (default ``SLOT_BUSY_WAIT_SECONDS``)."""
    wait = SLOT_BUSY_WAIT_SECONDS if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        try:
            return action()
        except psycopg.errors.ObjectInUse as error:  # autocommit: the connection stays usable
            if time.monotonic() + pause > deadline:
                raise LogicalDecodingError(
                    f"slot {logical.slot!r} stayed in use by another process for {wait:.0f} s "
                    f"({error.diag.message_primary}): wait for the CDC sync that holds it, or "
                    "stop the other reader of the slot (pg_recvlogical, a subscription), then "
                    "run again"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _logical(config: CdcConfig) -> LogicalSource:
    if config.logical is None:
        raise ConfigError('This CDC config is not kind = "logical".')
    return config.logical


@dataclass
class Peeked:
    transactions: list[Transaction]
    upto: int  # every transaction ending at or before this was returned


def peek(
    sconn: psycopg.Connection,
    logical: LogicalSource,
    limit: int,
    wait_seconds: float | None = None,
) -> Peeked:
    """The committed transactions still in the slot (peek: the slot does not move); waits for a
    slot another backend holds (``_when_slot_free``)."""
    flush = _lsn_int(sconn, "pg_current_wal_flush_lsn()") or 0
    statement = (
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
        "'proto_version', '1', 'publication_names', %s)"
    )
    params = (logical.slot, lsn_text(flush), limit, logical.publication)
    try:
        rows = _when_slot_free(
            logical, lambda: [r[0] for r in sconn.execute(statement, params)], wait_seconds
        )
    except psycopg.errors.UndefinedObject as error:  # the publication, dropped meanwhile
        raise LogicalDecodingError(
            f"decoding slot {logical.slot!r} failed: {error.diag.message_primary}"
        ) from None
    except psycopg.errors.ObjectNotInPrerequisiteState as error:  # e.g. wal_level, invalidated
        raise LogicalDecodingError(
            f"decoding slot {logical.slot!r} failed: {error.diag.message_primary}"
        ) from None
    transactions = decode(rows)
    # Cut short by the row limit: only up to the last whole transaction is known complete.
    cut = len(rows) >= limit
    upto = transactions[-1].end_lsn if cut and transactions else flush
    if transactions:
        upto = max(upto, transactions[-1].end_lsn)
    return Peeked(transactions, upto)


# ----------------------------------------------------------------------------- stage


@dataclass
class _Image:
    action: str
    change_id: int
    values: dict[str, str | None]
    unchanged: set[str]


def reduce_changes(
    transactions: list[Transaction],
    table: CdcTable,
    key: str,
    after: int,
    history: list[tuple[str, str, datetime]] | None = None,
) -> tuple[dict[str, _Image], dict[str, int], datetime | None, int | None]:
    """The last image per key of `table`'s changes in transactions ending after `after`; an image
    inherits the values an earlier image of the key carried for columns it lacks. Returns
    (images, changes by action, newest commit time, last change LSN); `history` (when given)
    receives every change, not reduced, in commit order: (action, key, commit time)."""
    images: dict[str, _Image] = {}
    counts = {"added": 0, "changed": 0, "deleted": 0}
    newest: datetime | None = None
    last: int | None = None
    wanted = (table.source_schema, table.source_table)
    ours: dict[int, bool] = {}  # id(Relation) -> is it `table`
    for txn in transactions:
        if txn.end_lsn <= after:
            continue
        for change in txn.changes:
            relation = change.relation
            mine = ours.get(id(relation))
            if mine is None:
                mine = ours[id(relation)] = (relation.schema, relation.name) == wanted
            if not mine:
                continue
            counts[change.action] += 1
            newest, last = txn.committed_at, txn.end_lsn
            old_key = change.old_key.get(key) if change.old_key else None
            if change.action == "deleted":
                if old_key is None:
                    raise LogicalDecodingError(
                        f'a DELETE without the key column "{key}" (replica identity of '
                        f'"{relation.schema}"."{relation.name}" is not its primary key)'
                    )
                images[old_key] = _Image("deleted", txn.end_lsn, {key: old_key}, set())
                if history is not None:
                    history.append(("deleted", old_key, txn.committed_at))
                continue
            new_key = change.values.get(key)
            if new_key is None:
                raise LogicalDecodingError(
                    f'a row change without the primary key "{key}" in the decoded row'
                )
            if history is not None:
                history.append((change.action, new_key, txn.committed_at))
            if old_key is not None and old_key != new_key:  # the key itself changed
                images[old_key] = _Image("deleted", txn.end_lsn, {key: old_key}, set())
            previous = images.get(new_key)
            values, unchanged = change.values, set(change.unchanged)
            if previous is not None and previous.action != "deleted":
                if unchanged:
                    values = dict(values)  # the change's own dict stays as decoded
                for column in list(unchanged):
                    if column not in previous.unchanged and column in previous.values:
                        values[column] = previous.values[column]
                        unchanged.discard(column)
                if previous.action == "added" and change.action == "changed":
                    action = "added"
                else:
                    action = change.action
            else:
                action = change.action
            images[new_key] = _Image(action, txn.end_lsn, values, unchanged)
    return images, counts, newest, last


def stage_logical(
    source_dsn: str,
    warehouse_dsn: str,
    config: CdcConfig,
    table: CdcTable,
    peeked: Peeked | None = None,
):
    """Decode the slot and stage `table`'s changes past its watermark (the StageResult of the
    change-log kind; `watermark`/`staged_to` are LSNs as bigint). `peeked`: the slot's
    transactions, decoded once for several tables by `stage_logical_tables` (which confirmed the
    slot before); None: confirm a crashed run's merge, then peek here."""
    from ingest_platform.cdc.pipeline import StageResult, _watermark

    started = time.perf_counter()
    logical = _logical(config)
    schema = config.warehouse_schema
    if peeked is None:
        # A crash after a merge and before its confirm: confirm now (the merged watermark is
        # proof).
        confirm_slot(source_dsn, warehouse_dsn, config)
    with (
        connect(warehouse_dsn, autocommit=True) as wconn,
        connect(source_dsn, autocommit=True) as sconn,
    ):
        confirmed = _ensure_snapshot(wconn, sconn, source_dsn, warehouse_dsn, config, table)
        mark = _watermark(wconn, schema, table.name)
        if mark.horizon_id < confirmed:
            raise LogicalDecodingError(
                f"CDC table {table.name!r}: slot {logical.slot!r} is at {lsn_text(confirmed)}, "
                f"past the table's watermark {lsn_text(mark.horizon_id)}: changes in between "
                "were consumed elsewhere. Run cdc_full_resync for the table. Nothing was merged."
            )
        src.set_session(sconn)  # decoded values print in the source session's formats
        src.set_session(wconn)
        try:
            source = src.read_source_table(sconn, table, [])
            if peeked is None:
                peeked = peek(sconn, logical, logical.max_changes_per_run)
            history: list[tuple[str, str, datetime]] = []
            images, counts, newest, last = reduce_changes(
                peeked.transactions, table, source.primary_key, mark.horizon_id, history
            )
        except LogicalDecodingError as error:
            raise _error(table, error) from None
        hi = max(mark.horizon_id, peeked.upto)
        result = StageResult(table.name, mark.horizon_id, hi, peeked.upto, changes=counts)
        types, result.schema_changes = wh.evolve_merged_table(
            wconn, schema, table, source, config.terminate_blockers_after
        )
        info = {
            "last_change_id": last,
            "last_change_at": newest.isoformat() if newest else None,
            "changes": counts,
        }
        columns = [n for n, _ in source.columns]
        with wconn.transaction():
            current = _watermark(wconn, schema, table.name, for_update=True)
            if current.horizon_id != mark.horizon_id:
                raise IngestError(
                    f"CDC table {table.name!r}: another run moved the watermark meanwhile; "
                    "nothing was staged, run again."
                )
            wh.recreate_staging(wconn, schema, table, source, types)
            staging = qualified(schema, table.staging_table)
            wconn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} text[] NOT NULL DEFAULT '{{}}'").format(
                    staging, sql.Identifier(wh.UNCHANGED)
                )
            )
            names = ["_change_id", "_action", "_row_found", wh.UNCHANGED, *columns]
            with wconn.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(
                    staging, sql.SQL(", ").join(map(sql.Identifier, names))
                )
            ) as copy:
                known = set(columns)
                lines = []
                for image in images.values():
                    if not known.issuperset(image.values):
                        unknown = sorted(set(image.values) - known)
                        raise IngestError(
                            f"CDC table {table.name!r}: decoded rows have column(s) "
                            f"{', '.join(unknown)} the source table no longer has; run again."
                        )
                    lines.append(_copy_line(image, columns))
                    if len(lines) >= COPY_LINES_PER_WRITE:
                        copy.write("".join(lines))
                        lines.clear()
                copy.write("".join(lines))
            _stage_history(wconn, schema, table, history)
            wh.mark_staged(wconn, schema, table.name, mark.horizon_id, hi, info, [])
            wh.analyze_staging(wconn, schema, table)
        result.staged = wh.staging_counts(wconn, schema, table)
    result.seconds = time.perf_counter() - started
    return result


def _stage_history(
    wconn: psycopg.Connection,
    schema: str,
    table: CdcTable,
    history: list[tuple[str, str, datetime]],
) -> None:
    """(Inside the staging transaction.) Every decoded change of the batch, in commit order, for
    the change history. ``_change_id`` is the change's number within the batch: the merge adds
    the history's largest id (``warehouse.record_changes(renumber=True)``), so ids grow with
    every merge, as the BigQuery mirror's ``_change_id > max`` needs. (A change's WAL position
    is no such id: a transaction that commits later may have written its changes earlier, and one
    multi-row INSERT's rows share one WAL record.)"""
    wh.recreate_staging_changes(wconn, schema, table)
    with wconn.cursor().copy(
        sql.SQL("COPY {} (_change_id, _action, object_id, changed_at) FROM STDIN").format(
            qualified(schema, table.staging_changes_table)
        )
    ) as copy:
        lines = [
            f"{number}\t{action}\t{_copy_text(key)}\t{committed_at.isoformat()}\n"
            for number, (action, key, committed_at) in enumerate(history, 1)
        ]
        for start in range(0, len(lines), COPY_LINES_PER_WRITE):
            copy.write("".join(lines[start : start + COPY_LINES_PER_WRITE]))


# COPY text lines built here, not with write_row: the decoded values are text already, so a row
# is the values escaped and joined (write_row adapts each value in Python: about 3x slower).
COPY_LINES_PER_WRITE = 5000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_line(image: _Image, columns: list[str]) -> str:
    """The staging row of an image: _change_id, _action, _row_found, _unchanged, the columns."""
    unchanged = sorted(c for c in image.unchanged if c in columns)
    # A text[] literal: each name double-quoted, its quotes and backslashes escaped.
    array = (
        "{"
        + ",".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in unchanged)
        + "}"
    )
    values = image.values
    return (
        f"{image.change_id}\t{image.action}\t{'f' if image.action == 'deleted' else 't'}\t"
        + _copy_text(array)
        + "".join("\t" + _copy_text(values.get(c)) for c in columns)
        + "\n"
    )


def _initial_snapshot(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable, confirmed: int
) -> None:
    """Every current source row merged; then the watermark = the slot's position read before."""
    from ingest_platform.cdc.pipeline import full_resync

    full_resync(source_dsn, warehouse_dsn, config, table)
    with connect(warehouse_dsn, autocommit=True) as wconn, wconn.transaction():
        wconn.execute(
            sql.SQL(
                "UPDATE {} SET horizon_id = %s, applied_at = now() WHERE table_name = %s "
                "AND horizon_id = 0"
            ).format(qualified(config.warehouse_schema, wh.WATERMARK_TABLE)),
            (confirmed, table.name),
        )


def run_logical_table(source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable):
    """Stage, merge (one transaction with the watermark), then confirm the slot."""
    from ingest_platform.cdc.pipeline import merge_staged

    staged = stage_logical(source_dsn, warehouse_dsn, config, table)
    merged = merge_staged(warehouse_dsn, config, table)
    confirm_slot(source_dsn, warehouse_dsn, config)
    return staged, merged


def stage_logical_tables(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, tables: Sequence[CdcTable]
) -> dict[str, StageResult]:
    """Stage `tables` from one decoding of the slot: confirm a crashed run's merges, take the
    initial snapshots due, peek once, stage each table. {table name: StageResult}."""
    logical = _logical(config)
    confirm_slot(source_dsn, warehouse_dsn, config)
    with (
        connect(warehouse_dsn, autocommit=True) as wconn,
        connect(source_dsn, autocommit=True) as sconn,
    ):
        for table in tables:
            _ensure_snapshot(wconn, sconn, source_dsn, warehouse_dsn, config, table)
    with connect(source_dsn, autocommit=True) as sconn:
        src.set_session(sconn)  # decoded values print in the source session's formats
        try:
            _slot_row(sconn, logical)
            peeked = peek(sconn, logical, logical.max_changes_per_run)
        except LogicalDecodingError as error:
            raise LogicalDecodingError(
                f"{error}. Nothing was merged and the slot did not move."
            ) from None
    return {t.name: stage_logical(source_dsn, warehouse_dsn, config, t, peeked) for t in tables}


def run_logical_all(source_dsn: str, warehouse_dsn: str, config: CdcConfig):
    """Every table of the config in one pass over the slot (``stage_logical_tables``), each
    merged (one transaction with its watermark), then the slot confirmed once, to the smallest
    watermark. A crash after some tables merged leaves the slot at the others' position: the
    next run skips, per table, every transaction at or before that table's watermark, so each
    change is merged once. {table: (StageResult, MergeResult)}."""
    from ingest_platform.cdc.pipeline import merge_staged

    staged = stage_logical_tables(source_dsn, warehouse_dsn, config, config.tables)
    results = {
        t.name: (staged[t.name], merge_staged(warehouse_dsn, config, t)) for t in config.tables
    }
    confirm_slot(source_dsn, warehouse_dsn, config)
    return results


def _ensure_snapshot(
    wconn: psycopg.Connection,
    sconn: psycopg.Connection,
    source_dsn: str,
    warehouse_dsn: str,
    config: CdcConfig,
    table: CdcTable,
) -> int:
    """The initial snapshot of a table never merged (watermark 0), before the slot is decoded
    for it; the slot's confirmed position (the publication checked)."""
    from ingest_platform.cdc.pipeline import _watermark

    logical = _logical(config)
    try:
        confirmed = _slot_row(sconn, logical)[2] or 0
        _check_publication(sconn, logical, table)
    except LogicalDecodingError as error:
        raise _error(table, error) from None
    wh.ensure_watermark(wconn, config.warehouse_schema, table.name)
    if _watermark(wconn, config.warehouse_schema, table.name).horizon_id == 0:
        _initial_snapshot(source_dsn, warehouse_dsn, config, table, confirmed)
    return confirmed


def pending_logical_tables(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig
) -> dict[str, int]:
    """{table: watermark} for the tables with decoded changes past their watermark (for the
    sensor; decodes up to max_changes_per_run rows of the slot)."""
    logical = _logical(config)
    with connect(warehouse_dsn, autocommit=True) as wconn:
        marks = wh.all_watermarks(wconn, config)
    with connect(source_dsn, autocommit=True) as sconn:
        _slot_row(sconn, logical)
        peeked = peek(sconn, logical, logical.max_changes_per_run)
    pending = {}
    for table in config.tables:
        mark = marks.get(table.name, 0)
        if mark == 0 or any(
            c.relation.schema == table.source_schema and c.relation.name == table.source_table
            for txn in peeked.transactions
            if txn.end_lsn > mark
            for c in txn.changes
        ):
            pending[table.name] = mark
    return pending


def pending_keys(
    source_dsn: str, config: CdcConfig, table: CdcTable, source: src.SourceTable, after: int
) -> list[str] | None:
    """Keys (text) of `table` with decoded changes in transactions ending after `after` (the
    watermark the caller's snapshot of the merged table shows): left out of the `matches_source`
    comparison, as the change-log kind leaves out objects past its horizon. The peek runs after
    the caller's source snapshot began, so it sees at least every change that snapshot has.
    None when the slot's confirmed position passed `after` (a merge confirmed it since the
    caller's snapshot, so the peek no longer returns the changes in between): the caller compares
    again with new snapshots."""
    logical = _logical(config)
    with connect(source_dsn, autocommit=True) as sconn:
        src.set_session(sconn)
        peeked = peek(sconn, logical, logical.max_changes_per_run)
        # Read after the peek: the position only grows, so one at or before `after` now was so
        # when the peek started.
        if (_slot_row(sconn, logical)[2] or 0) > after:
            return None
    images, _, _, _ = reduce_changes(peeked.transactions, table, source.primary_key, after)
    return sorted(images)
