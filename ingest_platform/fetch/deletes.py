"""Deleted rows of an incrementally pulled table, found from per-bucket key counts.

Both sides group the keys into buckets (an integer key: ``key DIV 4096``; other keys: the first
two hex digits of md5 of the key's text) and return, per bucket, ``count(*)`` and a sum (the keys
themselves; or 28 bits of their md5). Only the buckets whose (count, sum) differ have their keys
fetched from both sides; the keys the warehouse holds and the source lacks are soft-deleted.

Why counts are enough (and cheap: one scan of the key per side, no hash of any row): the source is
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

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ingest_platform.consistency.compare import _settings
from ingest_platform.dumps.schema import TableSchema
from ingest_platform.fetch.sources import BUCKET_KEYS, MySQLSource, PostgresSource
from ingest_platform.postgres import catalog

DELETED_COLUMN = "_deleted_at"
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_TEXT_COMPARABLE = {"smallint", "integer", "bigint", "numeric", "text", "varchar", "char"}
# The bucket queries group a million keys into a few hundred buckets, but the planner expects a
# group per row: it JIT-compiles the plan (~50 ms here) for a query that runs ~150 ms, and given
# parallel workers (as the engine's hashes are) it sorts the rows for them: slower (200k rows:
# 85 ms serial, 125-170 ms parallel on 2 cores).
_FAST = {"jit": "off"}


@dataclass
class DeleteScan:
    deleted: int = 0
    missed: list[Any] = field(default_factory=list)  # in the source, not in the warehouse
    source_rows: int = 0
    warehouse_rows: int = 0  # live rows, after the soft deletes
    buckets: int = 0
    differing_buckets: int = 0


def integer_key(schema: TableSchema, key: Sequence[str]) -> bool:
    """One key column of an integer type (as the warehouse holds it): buckets by key range."""
    types = {c.name: catalog.parsed_type(c.pg_type).name for c in schema.columns}
    return len(key) == 1 and types[key[0]] in _INTEGER_TYPES


def text_comparable(schema: TableSchema, key: Sequence[str]) -> bool:
    """Key columns whose text is the same in MySQL and PostgreSQL (integers, strings)."""
    types = {c.name: catalog.parsed_type(c.pg_type).name for c in schema.columns}
    return all(
        types[k] in _TEXT_COMPARABLE or types[k].startswith(("character", "numeric")) for k in key
    )


def _pg_parts(key: Sequence[str], integer: bool) -> tuple[sql.Composable, ...]:
    """(bucket, sum, key value) expressions of a PostgreSQL table, equal to MySQLSource's."""
    if integer:
        k = sql.Identifier(key[0])
        return sql.SQL("{} / {}").format(k, sql.Literal(BUCKET_KEYS)), k, k
    text = sql.SQL("concat_ws('|', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    )
    return (
        sql.SQL("left(md5({}), 2)").format(text),
        sql.SQL("('x' || substr(md5({}), 3, 7))::bit(28)::int").format(text),
        text,
    )


def pg_key_buckets(
    conn: psycopg.Connection, relation: sql.Composable, where: sql.Composable, key, integer: bool
) -> dict[Any, tuple[int, int]]:
    bucket, summed, _ = _pg_parts(key, integer)
    with _settings(conn, _FAST):
        rows = conn.execute(
            sql.SQL("SELECT {}, count(*), sum({}) FROM {}{} GROUP BY 1").format(
                bucket, summed, relation, where
            )
        ).fetchall()
    return {b: (int(n), int(total)) for b, n, total in rows}


def pg_keys_in(
    conn: psycopg.Connection,
    relation: sql.Composable,
    where: sql.Composable,
    key,
    integer: bool,
    buckets: Sequence[Any],
) -> set[Any]:
    bucket, _, value = _pg_parts(key, integer)
    glue = sql.SQL(" AND ") if where.as_string(conn) else sql.SQL(" WHERE ")
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {}{}{}{} = ANY({})").format(
            value, relation, where, glue, bucket, sql.Literal(list(buckets))
        )
    ).fetchall()
    return {r[0] for r in rows}


def find_deleted(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    table: str,
    app: str,
    child: str,
    key: Sequence[str],
    integer: bool,
) -> DeleteScan:
    """Soft-delete the child's live rows whose keys the source (in its current snapshot) lacks;
    committed in the warehouse. The source's connection stays in its snapshot."""
    target = catalog.qualified(app, child)
    live = sql.SQL(" WHERE {} IS NULL").format(sql.Identifier(DELETED_COLUMN))

    def theirs_buckets() -> dict[Any, tuple[int, int]]:
        if isinstance(source, MySQLSource):
            return source.key_buckets(table, key, integer)
        relation = catalog.qualified(source.config.schema, table)
        return source._guard(
            lambda: pg_key_buckets(source.conn, relation, sql.SQL(""), key, integer), table
        )

    # Both databases compute their buckets at the same time.
    with ThreadPoolExecutor(max_workers=1) as pool, wh.transaction():
        pending = pool.submit(theirs_buckets)
        ours = pg_key_buckets(wh, target, live, key, integer)
        theirs = pending.result()
    scan = DeleteScan(
        source_rows=sum(n for n, _ in theirs.values()),
        warehouse_rows=sum(n for n, _ in ours.values()),
        buckets=len(set(ours) | set(theirs)),
    )
    differing = sorted(b for b in set(ours) | set(theirs) if ours.get(b) != theirs.get(b))
    scan.differing_buckets = len(differing)
    if not differing:
        return scan
    if isinstance(source, MySQLSource):
        present = source.keys_in(table, key, integer, differing)
    else:
        relation = catalog.qualified(source.config.schema, table)
        present = source._guard(
            lambda: pg_keys_in(source.conn, relation, sql.SQL(""), key, integer, differing),
            table,
        )
    with wh.transaction():
        mine = pg_keys_in(wh, target, live, key, integer, differing)
        gone = sorted(mine - present)
        scan.missed = sorted(present - mine)
        if gone:
            _, _, value = _pg_parts(key, integer)
            cur = wh.execute(
                sql.SQL("UPDATE ONLY {} SET {} = now(){} AND {} = ANY({})").format(
                    target, sql.Identifier(DELETED_COLUMN), live, value, sql.Literal(gone)
                )
            )
            scan.deleted = cur.rowcount
    scan.warehouse_rows -= scan.deleted
    return scan
