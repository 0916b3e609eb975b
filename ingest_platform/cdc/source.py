"""The source side of CDC: the safe horizon, validation of change-log rows, the staging COPY query.

The safe horizon (why not "id > last id")
-----------------------------------------
Change ids come from a sequence when a transaction INSERTs its change-log row, but transactions
commit in any order: T1 takes id 10, T2 takes id 11 and commits, T1 commits a second later. A
reader between the two commits sees 11 without 10; a watermark "id > 11" would skip 10 forever.

The pipeline therefore never trusts an id above which a not-yet-committed row could still hide.
Each run, before it takes its snapshot, it reads in *one* statement

    q = max(id) of the change log                        (the statement's snapshot, time t0)
    V = the virtual transaction ids of every transaction holding a lock on the change log
        other than AccessShareLock (pg_locks, read during that statement, after t0)

Any transaction holding an id below q called nextval before the transaction of q did, inside an
INSERT into the change log, so it has held a RowExclusiveLock on the change log since then and
until it ends: at t0 it is finished or running, so it is in V or finished. Once no vxid of V
appears in pg_locks any more, every id <= q is committed (or rolled back, or never used) and a
snapshot taken *afterwards* sees all of them: q is a **safe horizon**. The run waits (up to
``wait_seconds``, polling pg_locks) for V to end, then starts its REPEATABLE READ transaction and
collects exactly the ids in (previous horizon, q]. Every committed id falls into exactly one such
interval: nothing is skipped, nothing applied twice. A candidate (q, V) that does not clear in
time (a long transaction wrote to the change log) is kept in the watermark row and checked again
by the next run; the horizon stays put meanwhile (reported as `blocked_by`), so a long writer
delays, and never loses, the changes after it.

Assumptions, checked where possible: ids are assigned by the INSERT into the change log (a column
default or identity, as Django does), from a sequence with CACHE 1 (checked; Django's default).
Read-only sessions on the change log (AccessShareLock) never hold the horizon back.

Everything else in a run reads one REPEATABLE READ snapshot of the source: the validation, the
reduction to the last action per object and the current rows, so the staged rows are the source
as of one instant that includes every change up to the horizon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ingest_platform.cdc.config import CdcTable, ChangeLog
from ingest_platform.cdc.errors import ChangeLogError
from ingest_platform.errors import ConfigError
from ingest_platform.postgres import catalog
from ingest_platform.postgres.catalog import parsed_type, qualified
from ingest_platform.postgres.connection import one_row, scalar
from ingest_platform.postgres.planner import (  # noqa: F401 (the pipeline calls them as src.*)
    estimated_rows,
    few_of,
    index_lookup_joins,
    set_planner,
)

ACTIONS = ("added", "changed", "deleted")
MAX_CANDIDATES = 20
MAX_REPORTED_IDS = 1000
_STRING_TYPES = {"char", "varchar", "text"}
_INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_UUID_PATTERN = r"^\s*\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?\s*$"


def set_session(conn: psycopg.Connection) -> None:
    """Output and input formats that are the same on both servers (COPY text, row hashes)."""
    with conn.transaction():
        conn.execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
            "SET extra_float_digits = 1"
        )


def table_activity(conn: psycopg.Connection, schema: str, table: str) -> tuple[int, int] | None:
    """(live rows, rows inserted + updated + deleted since statistics began) from the statistics
    collector: an estimate and a counter that moves on every write, read without touching the
    table; None when the table has no statistics."""
    return conn.execute(
        "SELECT n_live_tup, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = %s",
        (schema, table),
    ).fetchone()


# ----------------------------------------------------------------------------- change log


@dataclass(frozen=True)
class ChangeLogInfo:
    oid: int
    change_table: sql.Composed
    content_type_table: sql.Composed


def change_log_info(conn: psycopg.Connection, log: ChangeLog, table_name: str) -> ChangeLogInfo:
    oid = catalog.relation_oid(conn, log.schema, log.change_table)
    if oid is None:
        raise ChangeLogError(
            f'the source has no change-log table "{log.schema}"."{log.change_table}"; check '
            "INGEST_CDC_SOURCE_DSN and [change_log] in INGEST_CDC_CONFIG",
            table=table_name,
        )
    cache = conn.execute(
        "SELECT s.seqcache FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid "
        "WHERE d.refobjid = %s AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "LIMIT 1",
        (oid,),
    ).fetchone()
    if cache and cache[0] > 1:
        raise ConfigError(
            f'The id sequence of "{log.schema}"."{log.change_table}" has CACHE {cache[0]}: ids are '
            f"then "
            "not handed out in order and the CDC horizon cannot be safe. ALTER SEQUENCE .. CACHE 1."
        )
    return ChangeLogInfo(
        oid,
        qualified(log.schema, log.change_table),
        qualified(log.schema, log.content_type_table),
    )


@dataclass
class Horizon:
    """The outcome of `advance_horizon`: the new safe horizon and what holds the next one back."""

    previous_id: int
    horizon_id: int
    max_id: int  # the largest change id visible when the run started
    candidates: list[dict] = field(
        default_factory=list
    )  # [{"q": id, "vxids": [...]}], not yet safe
    blocked_by_pids: list[int] = field(default_factory=list)


def advance_horizon(
    conn: psycopg.Connection,
    log: ChangeLogInfo,
    horizon_id: int,
    candidates: list[dict],
    wait_seconds: float,
) -> Horizon:
    """The new safe horizon (see the module docstring). `conn` must be in autocommit mode, and the
    snapshot that reads up to the horizon must be taken after this returns."""
    q, vxids = one_row(
        conn,
        sql.SQL(
            "SELECT (SELECT max(id) FROM {log}), ARRAY(SELECT DISTINCT virtualtransaction FROM "
            "pg_locks "
            "WHERE locktype = 'relation' AND relation = %s AND mode <> 'AccessShareLock' "
            "AND pid IS DISTINCT FROM pg_backend_pid())"
        ).format(log=log.change_table),
        (log.oid,),
    )
    max_id = q if q is not None else horizon_id
    if max_id <= horizon_id and not candidates:
        return Horizon(horizon_id, horizon_id, max_id)
    pending = [c for c in candidates if c["q"] > horizon_id]
    if max_id > horizon_id:
        pending.append({"q": max_id, "vxids": sorted(vxids)})
    deadline = time.monotonic() + wait_seconds
    delay = 0.005
    while True:
        everyone = sorted({v for c in pending for v in c["vxids"]})
        live = set(_live_vxids(conn, everyone)) if everyone else set()
        clear = [c for c in pending if not live.intersection(c["vxids"])]
        newest_clear = bool(pending) and pending[-1] in clear
        if newest_clear or not pending or time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    new_id = max([horizon_id] + [c["q"] for c in clear])
    waiting = [c for c in pending if c not in clear and c["q"] > new_id][-MAX_CANDIDATES:]
    blocked = []
    if waiting:
        blocked = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT pid FROM pg_locks WHERE virtualtransaction = ANY(%s) AND pid IS "
                "NOT NULL ORDER BY 1",
                (sorted({v for c in waiting for v in c["vxids"]}),),
            )
        ]
    return Horizon(horizon_id, new_id, max_id, waiting, blocked)


def _live_vxids(conn: psycopg.Connection, vxids: list[str]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT virtualtransaction FROM pg_locks WHERE virtualtransaction = ANY(%s)",
            (vxids,),
        )
    ]


def content_type_id(conn: psycopg.Connection, log: ChangeLogInfo, table: CdcTable) -> int | None:
    row = conn.execute(
        sql.SQL("SELECT id FROM {} WHERE app_label = %s AND model = %s").format(
            log.content_type_table
        ),
        (table.app_label, table.model),
    ).fetchone()
    return row[0] if row else None


# ----------------------------------------------------------------------------- source table


@dataclass(frozen=True)
class SourceTable:
    columns: tuple[tuple[str, str], ...]  # (name, type as format_type prints it), in table order
    primary_key: str

    @property
    def key_type(self) -> str:
        return dict(self.columns)[self.primary_key]


def read_source_table(
    conn: psycopg.Connection, table: CdcTable, change_ids: list[int]
) -> SourceTable:
    where = f'source table "{table.source_schema}"."{table.source_table}"'
    oid = catalog.relation_oid(conn, table.source_schema, table.source_table)
    if oid is None:
        raise ChangeLogError(
            f"{where} does not exist; fix the table's source_table/source_schema in "
            "INGEST_CDC_CONFIG",
            table=table.name,
            change_ids=change_ids,
        )
    columns = tuple((c.name, c.type) for c in catalog.columns(conn, oid))
    key = catalog.primary_key(conn, oid)
    if len(key) != 1:
        problem = (
            "has no primary key" if not key else f"has a composite primary key ({', '.join(key)})"
        )
        raise ChangeLogError(
            f"{where} {problem}; change-log object ids name rows by a single-column primary key, "
            "so add one (ALTER TABLE .. ADD PRIMARY KEY) or stop tracking the table",
            table=table.name,
            change_ids=change_ids,
        )
    return SourceTable(columns, key[0])


def key_cast_type(source: SourceTable) -> sql.SQL:
    """The type object_id (text) is cast to. String keys compare as text: a cast to varchar(n)
    would silently truncate an over-long object_id onto another row's key."""
    parsed = parsed_type(source.key_type)
    return sql.SQL(
        "text" if parsed.name in _STRING_TYPES and not parsed.array_dims else str(parsed)
    )


# ----------------------------------------------------------------------------- validation


def _range(lo: int, hi: int) -> sql.Composed:
    return sql.SQL("c.id > {} AND c.id <= {}").format(sql.Literal(lo), sql.Literal(hi))


def change_ids_in_range(
    conn, log: ChangeLogInfo, ct_id: int | None, lo: int, hi: int, limit: int = MAX_REPORTED_IDS
) -> list[int]:
    if ct_id is None:
        return []
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT c.id FROM {log} c WHERE c.content_type_id = %s AND {rng} "
                "ORDER BY c.id LIMIT %s"
            ).format(log=log.change_table, rng=_range(lo, hi)),
            (ct_id, limit),
        )
    ]


def tracked_content_type_ids(conn: psycopg.Connection, log: ChangeLogInfo, tables) -> list[int]:
    pairs = [(t.app_label, t.model) for t in tables]
    return [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT id FROM {} WHERE (app_label, model) IN ({})").format(
                log.content_type_table, sql.SQL(", ").join(sql.SQL("(%s, %s)") for _ in pairs)
            ),
            [x for p in pairs for x in p],
        )
    ]


def validate_changes(
    conn: psycopg.Connection,
    log: ChangeLogInfo,
    table: CdcTable,
    ct_id: int | None,
    source: SourceTable | None,
    lo: int,
    hi: int,
    tracked_ids: list[int] | None = None,
    content_types: bool = True,
) -> None:
    """ChangeLogError naming the change ids in (lo, hi] that cannot be applied. With `tracked_ids`
    (untracked_content_types = "error"), a content type outside it is unknown too.
    `content_types=False` skips the content-type check (an earlier call in the same snapshot made
    it)."""
    if content_types:
        _validate_content_types(conn, log, table, lo, hi, tracked_ids)
    if ct_id is None or source is None:
        return
    mine = sql.SQL("c.content_type_id = {} AND {}").format(sql.Literal(ct_id), _range(lo, hi))
    bad_actions = _ids(
        conn,
        sql.SQL(
            "SELECT c.id FROM {log} c WHERE {mine} AND (c.action IS NULL OR c.action <> "
            "ALL({actions})) "
            "ORDER BY c.id LIMIT {n}"
        ).format(
            log=log.change_table,
            mine=mine,
            actions=sql.Literal(list(ACTIONS)),
            n=sql.Literal(MAX_REPORTED_IDS),
        ),
    )
    if bad_actions:
        raise ChangeLogError(
            f"unknown action (expected one of {', '.join(ACTIONS)})",
            table=table.name,
            change_ids=bad_actions,
        )
    bad_keys = _uncastable_object_ids(conn, log, mine, source)
    if bad_keys:
        raise ChangeLogError(
            f'object_id is empty or does not cast to the primary key "{source.primary_key}" '
            f"({source.key_type})",
            table=table.name,
            change_ids=bad_keys,
        )


def _validate_content_types(
    conn: psycopg.Connection,
    log: ChangeLogInfo,
    table: CdcTable,
    lo: int,
    hi: int,
    tracked_ids: list[int] | None,
) -> None:
    untracked = (
        sql.SQL(" OR c.content_type_id <> ALL({})").format(sql.Literal(tracked_ids))
        if tracked_ids is not None
        else sql.SQL("")
    )
    dangling = _ids(
        conn,
        sql.SQL(
            "SELECT c.id FROM {log} c WHERE {rng} AND (c.content_type_id IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM {ct} t WHERE t.id = c.content_type_id){untracked}) ORDER BY c.id LIMIT "
            "{n}"
        ).format(
            log=log.change_table,
            ct=log.content_type_table,
            rng=_range(lo, hi),
            untracked=untracked,
            n=sql.Literal(MAX_REPORTED_IDS),
        ),
    )
    if dangling:
        raise ChangeLogError(
            "change-log rows have an unknown content type (missing from django_content_type, or "
            "not a tracked table): add the table to INGEST_CDC_CONFIG, or set [change_log] "
            'untracked_content_types = "ignore"',
            table=table.name,
            change_ids=dangling,
        )


def _ids(conn, query) -> list[int]:
    return [r[0] for r in conn.execute(query)]


def _uncastable_object_ids(
    conn: psycopg.Connection, log: ChangeLogInfo, mine: sql.Composable, source: SourceTable
) -> list[int]:
    cast = key_cast_type(source)
    limit = sql.Literal(MAX_REPORTED_IDS)
    # The usual case, in one cheap pass: every object_id casts (a savepoint keeps the snapshot).
    try:
        with conn.transaction():
            if not scalar(
                conn,
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE c.object_id IS NULL OR c.object_id::{t} IS "
                    "NULL) "
                    "FROM {log} c WHERE {mine}"
                ).format(t=cast, log=log.change_table, mine=mine),
            ):
                return []
    except psycopg.DataError:
        pass
    # Some do not: name them (a per-row test, slower).
    if conn.info.server_version >= 160000:
        return _ids(
            conn,
            sql.SQL(
                "SELECT c.id FROM {log} c WHERE {mine} AND (c.object_id IS NULL OR NOT "
                "pg_input_is_valid(c.object_id, {type})) ORDER BY c.id LIMIT {n}"
            ).format(
                log=log.change_table, mine=mine, type=sql.Literal(cast.as_string(conn)), n=limit
            ),
        )
    name = cast.as_string(conn)
    if name in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[name]
        predicate: sql.Composable = sql.SQL(
            "c.object_id !~ '^\\s*[-+]?[0-9]{{1,30}}\\s*$' OR "
            "NOT (CASE WHEN c.object_id ~ '^\\s*[-+]?[0-9]{{1,30}}\\s*$' THEN "
            "trim(c.object_id)::numeric BETWEEN {lo} AND {hi} END)"
        ).format(lo=sql.Literal(low), hi=sql.Literal(high))
    elif name == "uuid":
        predicate = sql.SQL("c.object_id !~ {}").format(sql.Literal(_UUID_PATTERN))
    elif name == "text":
        predicate = sql.SQL("false")
    else:
        return _probe_casts(conn, log, mine, cast)
    return _ids(
        conn,
        sql.SQL(
            "SELECT c.id FROM {log} c WHERE {mine} AND (c.object_id IS NULL OR {p}) "
            "ORDER BY c.id LIMIT {n}"
        ).format(log=log.change_table, mine=mine, p=predicate, n=limit),
    )


def _probe_casts(
    conn: psycopg.Connection, log: ChangeLogInfo, mine: sql.Composable, cast: sql.SQL
) -> list[int]:
    """PostgreSQL < 16 and a key type without a pattern: try the cast of all, then one by one."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("SELECT count(c.object_id::{t}) FROM {log} c WHERE {mine}").format(
                    t=cast, log=log.change_table, mine=mine
                )
            )
        return _ids(
            conn,
            sql.SQL(
                "SELECT c.id FROM {log} c WHERE {mine} AND c.object_id IS NULL ORDER BY c.id"
            ).format(log=log.change_table, mine=mine),
        )
    except psycopg.DataError:
        pass
    bad = []
    for change_id, object_id in conn.execute(
        sql.SQL("SELECT c.id, c.object_id FROM {log} c WHERE {mine} ORDER BY c.id").format(
            log=log.change_table, mine=mine
        )
    ).fetchall():
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SELECT %s::{}").format(cast), (object_id,))
            if object_id is None:
                bad.append(change_id)
        except psycopg.DataError:
            bad.append(change_id)
        if len(bad) >= MAX_REPORTED_IDS:
            break
    return bad


# ----------------------------------------------------------------------------- collection


def changes_by_action(
    conn: psycopg.Connection, log: ChangeLogInfo, ct_id: int | None, lo: int, hi: int
) -> tuple[dict[str, int], datetime | None, int | None]:
    """({action: number of change-log rows}, newest date_created, largest id) in (lo, hi] for the
    table."""
    counts = {a: 0 for a in ACTIONS}
    if ct_id is None:
        return counts, None, None
    newest: datetime | None = None
    last_id: int | None = None
    for action, count, latest, largest in conn.execute(
        sql.SQL(
            "SELECT c.action, count(*), max(c.date_created), max(c.id) FROM {log} c WHERE "
            "c.content_type_id = %s "
            "AND {rng} GROUP BY c.action"
        ).format(log=log.change_table, rng=_range(lo, hi)),
        (ct_id,),
    ):
        counts[action] = count
        newest = latest if newest is None or (latest is not None and latest > newest) else newest
        last_id = largest if last_id is None else max(last_id, largest)
    return counts, newest, last_id


def change_rows_query(log: ChangeLogInfo, ct_id: int, lo: int, hi: int) -> sql.Composed:
    """COPY of the table's change-log rows in (lo, hi], every one (not reduced): the change
    history's ``_change_id, _action, object_id, changed_at``."""
    return sql.SQL(
        "COPY (SELECT c.id, c.action, c.object_id, c.date_created FROM {log} c "
        "WHERE c.content_type_id = {ct} AND {rng}) TO STDOUT"
    ).format(log=log.change_table, ct=sql.Literal(ct_id), rng=_range(lo, hi))


def copy_out_query(
    log: ChangeLogInfo, table: CdcTable, source: SourceTable, ct_id: int, lo: int, hi: int
) -> sql.Composed:
    """COPY of the reduced changes joined to the current rows, in the staging table's column order:
    _change_id, _action, _row_found, then the source columns (the key from the change log, so a
    row that is gone still names its object)."""
    pk = sql.Identifier(source.primary_key)
    others = [
        sql.SQL("s.{}").format(sql.Identifier(name))
        for name, _ in source.columns
        if name != source.primary_key
    ]
    return sql.SQL(
        "COPY (WITH r AS (SELECT DISTINCT ON (k) c.object_id::{cast} AS k, c.id, c.action FROM "
        "{log} c "
        "WHERE c.content_type_id = {ct} AND {rng} ORDER BY k, c.id DESC) "
        "SELECT r.id, r.action, s.{pk} IS NOT NULL, r.k{comma}{others} FROM r LEFT JOIN {src} s ON "
        "s.{pk} = r.k) "
        "TO STDOUT"
    ).format(
        cast=key_cast_type(source),
        log=log.change_table,
        ct=sql.Literal(ct_id),
        rng=_range(lo, hi),
        pk=pk,
        comma=sql.SQL(", " if others else ""),
        others=sql.SQL(", ").join(others),
        src=qualified(table.source_schema, table.source_table),
    )
