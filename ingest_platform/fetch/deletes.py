"""Deleted rows of an incrementally pulled table, found from per-bucket key counts.

Both sides group the keys into buckets (``key_buckets.Bucketing``: an integer key by its value
divided by 64 or more (16 where its keys are not read); other keys by the first three hex digits
of md5 of the key's text) and count, per bucket, ``count(*)`` and a sum (the keys themselves; or
28 bits of their md5). The warehouse's counts are not scanned but kept by the pulls themselves
(``fetch.bucket_counts``). An integer key's values are read from the source (one array; a
PostgreSQL source's by a second connection in the pull's snapshot while the chunks are copied)
and counted and compared in numpy, where a bucket with one key fewer names that key by its sum
(``fetch.key_arrays``); other keys' buckets are counted by the source and compared in the
warehouse. Only the other differing buckets have their keys fetched (an integer key's by index
ranges); the keys the warehouse holds and the source lacks are soft-deleted.

Why counts are enough (and cheap: one read of the source's keys, no hash of any row): the source is
read in ONE snapshot S for the whole incremental pull (its chunks and this comparison). The pull
copied every row of S whose (cursor, key) is past the stored position, and every earlier row was
copied by an earlier pull; a row inserted or re-inserted gets a cursor past the position (the
cursor's contract). So after the pull, the live keys of the warehouse W contain every key of S,
and per bucket ``count(W_b) - count(S_b) = |W_b minus S_b|``, exactly the deleted keys of the
bucket. An insert and a delete in the same bucket do not cancel out: the insert is in S AND in W
(the pull copied it from the same snapshot), the delete only in W, so W's count is one higher.

The sums guard that contract: a row committed late with a cursor older than the position (a long
transaction writing updated_at before it commits), or restored from a backup, is in S but not in
W. Alone it shows as a count difference; with a delete in the same bucket the counts could match,
but the sums differ (another key). Its bucket's keys are then fetched and the row is reported as
missed (``DeleteScan.missed``; the checks fail and ask for a full pull). Several such rows whose
keys sum to those of as many deleted ones in one bucket would go unnoticed: the bucket hashes of
a snapshot pull's checks, which read every row, are the backstop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ingest_platform.consistency.compare import _settings
from ingest_platform.dumps.schema import TableSchema
from ingest_platform.fetch import bucket_counts, key_arrays
from ingest_platform.fetch.key_buckets import (
    MIN_WIDTH,
    SOLVING_WIDTH,
    Bucketing,
    integer_bucketing,
    pg_parts,
)
from ingest_platform.fetch.sources import MySQLSource, PostgresSource
from ingest_platform.postgres import catalog

LOGGER = logging.getLogger(__name__)
DELETED_COLUMN = "_deleted_at"
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_TEXT_COMPARABLE = {"smallint", "integer", "bigint", "numeric", "text", "varchar", "char"}
# The bucket queries group a million keys into a few hundred buckets, but the planner expects a
# group per row: it JIT-compiles the plan (~50 ms here) for a query that runs ~150 ms, and given
# parallel workers (as the engine's hashes are) it sorts the rows for them: slower (200k rows:
# 85 ms serial, 125-170 ms parallel on 2 cores). And with the default work_mem (4MB) it plans the
# hash aggregate of those million groups in 32 partitions that spill: 530-690 ms for 1M keys in
# 62k buckets; with 64MB (the 62k groups take a few MB) 255-300 ms, whether by a sequential or
# an index-only scan.
_FAST = {"jit": "off", "work_mem": "64MB"}


@dataclass
class DeleteScan:
    deleted: int = 0
    missed: list[Any] = field(default_factory=list)  # in the source, not in the warehouse
    source_rows: int = 0
    warehouse_rows: int = 0  # live rows, after the soft deletes
    buckets: int = 0
    differing_buckets: int = 0
    solved: int = 0  # deleted keys named by their bucket's count and sum (key_arrays), not read
    drifted: list[Any] = field(default_factory=list)  # buckets whose kept counts were wrong


def integer_key(schema: TableSchema, key: Sequence[str]) -> bool:
    """One key column of an integer type (as the warehouse holds it): buckets by key range."""
    types = {c.name: catalog.parsed_type(c.pg_type).name for c in schema.columns}
    return len(key) == 1 and types[key[0]] in _INTEGER_TYPES


def kept_counts(
    source: PostgresSource | MySQLSource, schema: TableSchema, key: Sequence[str]
) -> bool:
    """Deletes of this table are found by key buckets (``find_deleted``), whose warehouse side
    is kept (``fetch.bucket_counts``); other keys of PostgreSQL sources go through the comparison
    engine's key hashes."""
    return integer_key(schema, key) or (
        isinstance(source, MySQLSource) and text_comparable(schema, key)
    )


def text_comparable(schema: TableSchema, key: Sequence[str]) -> bool:
    """Key columns whose text is the same in MySQL and PostgreSQL (integers, strings)."""
    types = {c.name: catalog.parsed_type(c.pg_type).name for c in schema.columns}
    return all(
        types[k] in _TEXT_COMPARABLE or types[k].startswith(("character", "numeric")) for k in key
    )


def pg_key_buckets(
    conn: psycopg.Connection,
    relation: sql.Composable,
    where: sql.Composable,
    key: Sequence[str],
    bucketing: Bucketing,
) -> dict[Any, tuple[int, int]]:
    bucket, summed, _ = pg_parts(key, bucketing)
    with _settings(conn, _FAST):
        rows = conn.execute(
            sql.SQL("SELECT {}, count(*), sum({}) FROM {}{} GROUP BY 1").format(
                bucket, summed, relation, where
            )
        ).fetchall()
    return {b: (n, total) for b, n, total in rows}  # Decimal sums: see bucket_counts


def pg_keys_in(
    conn: psycopg.Connection,
    relation: sql.Composable,
    where: sql.Composable,
    key: Sequence[str],
    bucketing: Bucketing,
    buckets: Sequence[Any],
) -> set[Any]:
    bucket, _, value = pg_parts(key, bucketing)
    glue = sql.SQL(" AND ") if where.as_string(conn) else sql.SQL(" WHERE ")
    if bucketing.integer:
        # A join with the buckets' key ranges: an index range scan per bucket.
        ranges = bucketing.ranges(buckets)
        statement = sql.SQL(
            "SELECT t.{k} FROM unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
            " JOIN {rel} AS t ON t.{k} BETWEEN r.lo AND r.hi{where}"
        ).format(
            k=sql.Identifier(key[0]),
            rel=relation,
            where=sql.SQL(" AND t.{} IS NULL").format(sql.Identifier(DELETED_COLUMN))
            if where.as_string(conn)
            else sql.SQL(""),
        )
        params: tuple = ([lo for lo, _ in ranges], [hi for _, hi in ranges])
    else:
        statement = sql.SQL("SELECT {} FROM {}{}{}{} = ANY(%s::text[])").format(
            value, relation, where, glue, bucket
        )
        params = (list(buckets),)
    return {r[0] for r in conn.execute(statement, params).fetchall()}


def source_buckets(
    source: PostgresSource | MySQLSource, table: str, key: Sequence[str], bucketing: Bucketing
) -> dict[Any, tuple[int, int]]:
    """The source's (count, sum) per key bucket, in its connection's snapshot."""
    if isinstance(source, MySQLSource):
        return source.key_buckets(table, key, bucketing)
    relation = catalog.qualified(source.config.schema, table)
    return source._guard(
        lambda: pg_key_buckets(source.conn, relation, sql.SQL(""), key, bucketing), table
    )


def find_deleted(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    table: str,
    app: str,
    child: str,
    key: Sequence[str],
    integer: bool,
    watermark_key: str,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    source_keys: Callable[[], key_arrays.SourceKeys | None] | None = None,
) -> DeleteScan:
    """Soft-delete the child's live rows whose keys the source (in its current snapshot) lacks;
    committed in the warehouse. The source's connection stays in its snapshot. The warehouse's
    buckets are the kept ones (``fetch.bucket_counts``); missing, stale or found drifted, they
    are rebuilt by a scan of the child's keys, with a log line saying why. `source_keys`: reads
    an integer key's values from the source (in the same snapshot, perhaps being read already:
    ``key_arrays.read_source_keys``), compared in numpy; other keys' buckets (and keys too many
    to read) are counted by the source and compared in the warehouse."""
    target = catalog.qualified(app, child)
    low = high = None
    if integer:
        with wh.transaction():  # the child's key index answers
            low, high = wh.execute(
                sql.SQL("SELECT min({0}), max({0}) FROM ONLY {1}").format(
                    sql.Identifier(key[0]), target
                )
            ).fetchone() or (None, None)
    span = None if low is None or high is None else high - low + 1
    with wh.transaction():
        kept = bucket_counts.read(wh, app, child, watermark_key, integer, span)

    def scanned() -> DeleteScan:  # against a scan of the child, which rebuilds the kept counts
        # Buckets that name a deleted key by count and sum are wider than those whose keys are
        # read: where the source's keys will be read (the span suggests they are not too many).
        least = SOLVING_WIDTH if (span or 0) <= key_arrays.MAX_KEYS else MIN_WIDTH
        bucketing = integer_bucketing(low, high, least) if integer else Bucketing(False)
        return _find_deleted(wh, source, table, app, child, key, bucketing, None, watermark_key)

    if isinstance(kept, str):
        logger.info(
            f"{app}.{child}: {kept}; scanning the warehouse's keys for the delete detection "
            "and keeping their bucket counts from now on"
        )
        return scanned()
    scan = None
    if source_keys is not None and kept.bucketing.integer:
        scan = _from_keys(wh, app, child, key, kept.bucketing, source_keys)
    if scan is None:
        theirs = bucket_counts.copy_text(source_buckets(source, table, key, kept.bucketing))
        scan = _find_deleted(
            wh, source, table, app, child, key, kept.bucketing, kept, watermark_key, theirs
        )
    if scan.drifted:
        logger.warning(
            f"{app}.{child}: the kept key-bucket counts differ from the keys in "
            f"{len(scan.drifted)} bucket(s) (first: {scan.drifted[0]}); scanning the "
            "warehouse's keys and rebuilding them"
        )
        again = scanned()
        again.deleted += scan.deleted
        return again
    logger.debug(
        f"{app}.{child}: {scan.differing_buckets} key bucket(s) differ; {scan.solved} named "
        f"their deleted key by count and sum, the others' keys were read; {scan.deleted} deleted"
    )
    return scan


def _from_keys(
    wh: psycopg.Connection,
    app: str,
    child: str,
    key: Sequence[str],
    bucketing: Bucketing,
    source_keys: Callable[[], key_arrays.SourceKeys | None],
) -> DeleteScan | None:
    """The source's integer keys (being read) against the kept counts (``key_arrays``):
    solved keys and the unsolved buckets' keys soft-deleted, in one warehouse transaction. None:
    the source has too many keys to read, or they span too far for the comparison in numpy. A
    solved key that is not live means the kept numbers of its bucket are wrong: nothing is
    deleted and ``DeleteScan.drifted`` names them."""
    target = catalog.qualified(app, child)
    live = sql.SQL(" WHERE {} IS NULL").format(sql.Identifier(DELETED_COLUMN))
    width = bucketing.width
    drift = False
    with wh.transaction():
        kept = bucket_counts.read_integer(wh, app, child, width)  # while the source reads
        keys = source_keys()
        compared = None if keys is None else key_arrays.compare(keys, *kept, width)
        if compared is None:
            return None
        scan = DeleteScan(
            source_rows=compared.source_rows,
            warehouse_rows=compared.warehouse_rows,
            buckets=compared.buckets,
            differing_buckets=compared.differing,
        )
        gone = list(compared.solved)
        scan.solved = len(gone)
        if compared.unsolved:
            mine = pg_keys_in(wh, target, live, key, bucketing, compared.unsolved)
            scan.drifted = _drifted(mine, bucketing, compared.unsolved, compared.kept)
            if scan.drifted:
                return scan
            present = set().union(*compared.source_keys.values())
            gone += sorted(mine - present)
            scan.missed = sorted(present - mine)
        if gone:
            scan.deleted = bucket_counts.soft_delete(wh, app, child, key, bucketing, gone, True)
            if scan.deleted != len(gone):
                drift = True
                raise psycopg.Rollback()
    if drift:  # after the rollback: which solved keys were not live
        with wh.transaction():
            not_live = wh.execute(
                sql.SQL(
                    "SELECT k FROM unnest(%s::bigint[]) AS k WHERE NOT EXISTS (SELECT FROM ONLY"
                    " {} AS t WHERE t.{} = k AND t.{} IS NULL)"
                ).format(target, sql.Identifier(key[0]), sql.Identifier(DELETED_COLUMN)),
                (compared.solved,),
            ).fetchall()
        scan.drifted = sorted({bucketing.bucket_of(k)[0] for (k,) in not_live}) or ["?"]
        scan.deleted = scan.solved = 0
        return scan
    scan.warehouse_rows -= scan.deleted
    return scan


def _find_deleted(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    table: str,
    app: str,
    child: str,
    key: Sequence[str],
    bucketing: Bucketing,
    kept: bucket_counts.Kept | None,
    watermark_key: str,
    counted: bytes | None = None,
) -> DeleteScan:
    """With `kept`: the source's buckets (`counted`, COPY text) against the kept counts, the
    differing buckets' counts checked against the child's keys (``DeleteScan.drifted``: nothing
    deleted then); without: against a scan of the child, which rebuilds the kept counts in the
    same transaction."""
    target = catalog.qualified(app, child)
    live = sql.SQL(" WHERE {} IS NULL").format(sql.Identifier(DELETED_COLUMN))

    if kept is not None and counted is not None:  # compared in the warehouse
        with wh.transaction():
            compared = bucket_counts.compare(wh, app, child, counted, bucketing)
        ours = compared.kept
        differing = compared.differing
        scan = DeleteScan(
            source_rows=compared.source_rows,
            warehouse_rows=compared.warehouse_rows,
            buckets=compared.buckets,
        )
    else:
        # Both databases compute their buckets at the same time.
        with ThreadPoolExecutor(max_workers=1) as pool, wh.transaction():
            pending = pool.submit(source_buckets, source, table, key, bucketing)
            with _settings(wh, _FAST):
                ours = bucket_counts.rebuild(wh, app, child, key, bucketing, watermark_key)
            theirs = pending.result()
        scan = DeleteScan(
            source_rows=sum(n for n, _ in theirs.values()),
            warehouse_rows=sum(n for n, _ in ours.values()),
            buckets=len(set(ours) | set(theirs)),
        )
        differing = sorted({b for b, _ in set(ours.items()) ^ set(theirs.items())})
    scan.differing_buckets = len(differing)
    if not differing:
        return scan

    def theirs_keys() -> set[Any]:
        if isinstance(source, MySQLSource):
            return source.keys_in(table, key, bucketing, differing)
        relation = catalog.qualified(source.config.schema, table)
        return source._guard(
            lambda: pg_keys_in(source.conn, relation, sql.SQL(""), key, bucketing, differing),
            table,
        )

    with ThreadPoolExecutor(max_workers=1) as pool, wh.transaction():
        pending_keys = pool.submit(theirs_keys)
        mine = pg_keys_in(wh, target, live, key, bucketing, differing)
        present = pending_keys.result()
        if kept is not None:
            scan.drifted = _drifted(mine, bucketing, differing, ours)
            if scan.drifted:
                return scan
        gone = sorted(mine - present)
        scan.missed = sorted(present - mine)
        if gone:
            scan.deleted = bucket_counts.soft_delete(wh, app, child, key, bucketing, gone, True)
    scan.warehouse_rows -= scan.deleted
    return scan


def _drifted(
    keys: set[Any],
    bucketing: Bucketing,
    buckets: Sequence[Any],
    kept: dict[Any, tuple[int, int]],
) -> list[Any]:
    """The buckets whose kept (count, sum) differ from those of the child's live `keys`."""
    found: dict[Any, tuple[int, int]] = {b: (0, 0) for b in buckets}
    for k in keys:
        bucket, summand = bucketing.bucket_of(k)
        n, total = found.get(bucket, (0, 0))
        found[bucket] = (n + 1, total + summand)
    return [b for b in buckets if found[b] != kept.get(b, (0, 0))]
