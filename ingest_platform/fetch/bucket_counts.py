"""The warehouse's side of the delete detection (``fetch.deletes``), kept instead of scanned.

Per child of an incrementally pulled table, ``<app>._fetch_key_buckets`` holds per key bucket the
count and the sum of the live (not soft-deleted) keys, and ``<app>._fetch_key_bucket_state`` how
they were bucketed. They change in the SAME warehouse transaction as the rows they count: the
first incremental pull after a snapshot pull builds them from its scan of the child's keys
(``rebuild``; a snapshot pull does not: building them there cost 1-1.3 s per 1M keys, a third
of the pull, which the goal of a pull as fast as psql's COPY pipe cannot spare); each
incremental chunk adds its rows and subtracts the live rows it replaces (``upsert_chunk``); each
soft delete subtracts its keys (``soft_delete``). So the incremental pulls after that first one
scan only the source's keys.

Trusted only while provably current; otherwise ``read`` says why and the caller scans the
child's keys and rebuilds them (``rebuild``), with a log line:
- the state's ``format`` is not FORMAT (written by another version of this code);
- the child's relation oid differs (the child was replaced: a snapshot pull, a dump loaded over
  it);
- the stored position differs from the watermark's (a pull that moved the watermark without
  keeping the counts: deletes off, or older code);
- integer keys outgrew the stored bucket width (more than GROWTH x MAX_BUCKETS buckets).
And every differing bucket's kept count and sum are verified against the keys ``fetch.deletes``
reads anyway, and every key a bucket's sums name (``fetch.key_arrays``) must be live: a mismatch
is drift (a hand edit of the child) and gets the same rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from ingest_platform.bulk_ingest import watermarks
from ingest_platform.fetch.key_arrays import int8_array
from ingest_platform.fetch.key_buckets import MAX_BUCKETS, Bucketing, pg_parts
from ingest_platform.postgres import catalog

FORMAT = 1  # raise when what the tables hold or how buckets are computed changes
GROWTH = 4  # integer keys may span GROWTH x MAX_BUCKETS buckets before a rebuild widens them
COUNTS_TABLE = "_fetch_key_buckets"
STATE_TABLE = "_fetch_key_bucket_state"
DELETED_COLUMN = "_deleted_at"


@dataclass(frozen=True)
class Kept:
    """The counts are current, bucketed so (they are compared in the warehouse: ``compare``)."""

    bucketing: Bucketing


def _counts(app: str) -> sql.Composable:
    return catalog.qualified(app, COUNTS_TABLE)


def _state(app: str) -> sql.Composable:
    return catalog.qualified(app, STATE_TABLE)


def ensure_tables(conn: psycopg.Connection, app: str) -> None:
    """In the caller's transaction (the schema exists)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (child text NOT NULL, bucket text NOT NULL,"
            " n bigint NOT NULL, total numeric NOT NULL, PRIMARY KEY (child, bucket))"
        ).format(_counts(app))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (child text PRIMARY KEY, relation oid NOT NULL,"
            " format int NOT NULL, integer_key boolean NOT NULL, width int NOT NULL,"
            " digits int NOT NULL, watermark_key text, position jsonb)"
        ).format(_state(app))
    )


def rebuild(
    conn: psycopg.Connection,
    app: str,
    child: str,
    key: Sequence[str],
    bucketing: Bucketing,
    watermark_key: str,
) -> dict[Any, tuple[int, int]]:
    """Count the child's live keys (a scan) as its buckets, in the caller's transaction; the
    state takes the child's oid and the watermark's current position."""
    ensure_tables(conn, app)
    bucket, summed, _ = pg_parts(key, bucketing)
    conn.execute(sql.SQL("DELETE FROM {} WHERE child = %s").format(_counts(app)), (child,))
    # Counts of children that are gone (a dropped version) would stay forever: dropped here.
    gone = sql.SQL(
        "SELECT child FROM {} WHERE child <> %s"
        " AND NOT EXISTS (SELECT FROM pg_class WHERE oid = relation)"
    ).format(_state(app))
    conn.execute(sql.SQL("DELETE FROM {} WHERE child IN ({})").format(_counts(app), gone), (child,))
    conn.execute(sql.SQL("DELETE FROM {} WHERE child IN ({})").format(_state(app), gone), (child,))
    # Grouped by the bucket's own value, cast to text per bucket, not per row: grouping an
    # integer is 2.5x faster than grouping its text (1M keys: 164 against 437 ms).
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT %s, b::text, n, s FROM (SELECT {} AS b, count(*) AS n,"
            " sum({}) AS s FROM ONLY {} WHERE {} IS NULL GROUP BY 1) AS grouped"
        ).format(
            _counts(app),
            bucket,
            summed,
            catalog.qualified(app, child),
            sql.Identifier(DELETED_COLUMN),
        ),
        (child,),
    )
    oid = catalog.relation_oid(conn, app, child)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, NULL) ON CONFLICT (child) DO"
            " UPDATE SET relation = EXCLUDED.relation, format = EXCLUDED.format, integer_key ="
            " EXCLUDED.integer_key, width = EXCLUDED.width, digits = EXCLUDED.digits,"
            " watermark_key = EXCLUDED.watermark_key, position = NULL"
        ).format(_state(app)),
        (child, oid, FORMAT, bucketing.integer, bucketing.width, bucketing.digits, watermark_key),
    )
    if catalog.relation_oid(conn, app, watermarks.WATERMARK_TABLE):
        sync_position(conn, app, child)
    return read_counts(conn, app, child, bucketing)


def sync_position(conn: psycopg.Connection, app: str, child: str) -> None:
    """The state records the watermark's position: written with it, in the same transaction."""
    conn.execute(
        sql.SQL(
            "UPDATE {} s SET position = (SELECT w.watermark FROM {} w WHERE w.key ="
            " s.watermark_key) WHERE s.child = %s"
        ).format(_state(app), catalog.qualified(app, watermarks.WATERMARK_TABLE)),
        (child,),
    )


def read(
    conn: psycopg.Connection,
    app: str,
    child: str,
    watermark_key: str,
    integer: bool,
    span: int | None = None,
) -> Kept | str:
    """The kept counts, or why they cannot be trusted (see the module's docstring). `span`: the
    child's integer key range (max - min + 1), to find keys that outgrew the buckets."""
    if catalog.relation_oid(conn, app, STATE_TABLE) is None:
        return "no kept key-bucket counts"
    row = conn.execute(
        sql.SQL(
            "SELECT s.relation, s.format, s.integer_key, s.width, s.digits, s.watermark_key,"
            " s.position IS NOT DISTINCT FROM (SELECT w.watermark FROM {} w WHERE w.key = %s)"
            " FROM {} s WHERE s.child = %s"
        ).format(catalog.qualified(app, watermarks.WATERMARK_TABLE), _state(app)),
        (watermark_key, child),
    ).fetchone()
    if row is None:
        return "no kept key-bucket counts"
    relation, format_, integer_key, width, digits, kept_key, same_position = row
    if format_ != FORMAT:
        return f"kept key-bucket counts of format {format_}, this code reads {FORMAT}"
    if relation != catalog.relation_oid(conn, app, child):
        return "kept key-bucket counts of a replaced child table"
    if integer_key != integer:
        return "kept key-bucket counts of another key type"
    if kept_key != watermark_key or not same_position:
        return "kept key-bucket counts behind the watermark"
    bucketing = Bucketing(integer, width, digits)
    if integer and span is not None and span / width > GROWTH * MAX_BUCKETS:
        return "keys outgrew the kept key buckets"
    return Kept(bucketing)


def read_counts(
    conn: psycopg.Connection, app: str, child: str, bucketing: Bucketing
) -> dict[Any, tuple[int, int]]:
    rows = conn.execute(
        sql.SQL("SELECT bucket, n, total FROM {} WHERE child = %s AND n <> 0").format(_counts(app)),
        (child,),
    ).fetchall()
    # The sums stay Decimals: equal to the source's ints and hashed alike (Python's numeric
    # hash), and converting 65k of them costs more than the comparison.
    if bucketing.integer:
        return {int(b): (n, total) for b, n, total in rows}
    return {b: (n, total) for b, n, total in rows}


def _add(
    app: str, child: str, delta: sql.Composable, bucketing: Bucketing, key: Sequence[str]
) -> sql.Composable:
    """INSERT adding per bucket the signed count and sum of `delta` (the key columns and _sign,
    +1 or -1 per row) to the child's counts. Buckets whose delta is nil are left alone: an
    update under its key is -1 and +1 (1M rows, 10k updated: 10k upserts of the counts saved)."""
    bucket, summed, _ = pg_parts(key, bucketing)
    return sql.SQL(
        "INSERT INTO {counts} AS c SELECT {child}, ({bucket})::text, sum(_sign),"
        " sum(_sign::numeric * ({summed})) FROM {delta} AS d GROUP BY 1, 2"
        " HAVING sum(_sign) <> 0 OR sum(_sign::numeric * ({summed})) <> 0"
        " ON CONFLICT (child, bucket) DO UPDATE SET n = c.n + EXCLUDED.n,"
        " total = c.total + EXCLUDED.total"
    ).format(
        counts=_counts(app), child=sql.Literal(child), bucket=bucket, summed=summed, delta=delta
    )


def _keys(key: Sequence[str], prefix: str = "") -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(sql.Identifier(k)) for k in key)


def upsert_chunk(
    cur: psycopg.Cursor,
    app: str,
    child: str,
    stage: sql.Composable,
    key: Sequence[str],
    bucketing: Bucketing | None,
) -> None:
    """Delete the child's rows of the stage's keys (the caller then inserts the stage's rows),
    in the caller's transaction. With `bucketing` (the counts are kept), the same statement
    subtracts the live rows deleted and adds the stage's rows (live: the source has no
    _deleted_at): a soft-deleted row re-inserted under its key counts once, an update of a row
    keeps its key's count."""
    replace = sql.SQL("DELETE FROM ONLY {} t USING {} s WHERE ({}) = ({})").format(
        catalog.qualified(app, child), stage, _keys(key, "t."), _keys(key, "s.")
    )
    if bucketing is None:
        cur.execute(replace)
        return
    cur.execute(
        sql.SQL(
            "WITH gone AS ({replace} RETURNING {tkeys}, t.{deleted} AS _was_deleted),"
            " delta AS (SELECT {keys}, 1 AS _sign FROM {stage} UNION ALL"
            " SELECT {keys}, -1 FROM gone WHERE _was_deleted IS NULL) {add}"
        ).format(
            replace=replace,
            tkeys=_keys(key, "t."),
            deleted=sql.Identifier(DELETED_COLUMN),
            keys=_keys(key),
            stage=stage,
            add=_add(app, child, sql.SQL("delta"), bucketing, key),
        )
    )


def soft_delete(
    conn: psycopg.Connection,
    app: str,
    child: str,
    key: Sequence[str],
    bucketing: Bucketing,
    gone: Sequence[Any],
    kept: bool,
) -> int:
    """Soft-delete the live rows whose key value (``pg_parts``'s third expression) is in `gone`,
    in the caller's transaction; `kept`: their keys subtracted from the counts in the same
    statement. The rows deleted."""
    _, _, value = pg_parts(key, bucketing)
    update = sql.SQL(
        "UPDATE ONLY {} SET {} = now() WHERE {} IS NULL AND {} = ANY(%s::{}[])"
    ).format(
        catalog.qualified(app, child),
        sql.Identifier(DELETED_COLUMN),
        sql.Identifier(DELETED_COLUMN),
        value,
        sql.SQL("bigint" if bucketing.integer else "text"),
    )
    if not kept:
        return conn.execute(update, (list(gone),)).rowcount
    row = conn.execute(
        sql.SQL(
            "WITH gone AS ({} RETURNING {}), counted AS ({} RETURNING 1) SELECT count(*) FROM gone"
        ).format(
            update,
            _keys(key),
            _add(app, child, sql.SQL("(SELECT *, -1 AS _sign FROM gone)"), bucketing, key),
        ),
        (list(gone),),
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass
class Compared:
    """The kept counts against the source's, compared in the warehouse."""

    differing: list[Any]  # buckets whose (count, sum) differ
    kept: dict[Any, tuple[int, int]]  # the kept (count, sum) of the differing buckets
    source_rows: int
    warehouse_rows: int
    buckets: int


def compare(
    conn: psycopg.Connection, app: str, child: str, source_copy: bytes, bucketing: Bucketing
) -> Compared:
    """Compare the kept counts with the source's (`source_copy`: COPY text rows of bucket,
    count, sum, as ``copy_text`` writes them) in the warehouse, in the caller's
    transaction: only the differing buckets come back to Python (65k rows parsed and compared
    there cost ~0.25 s per pull)."""
    theirs = sql.Identifier("_fetch_source_buckets")
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (bucket text, n bigint, total numeric) ON COMMIT DROP"
        ).format(theirs)
    )
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(theirs)) as copy:
        copy.write(source_copy)
    totals = conn.execute(
        sql.SQL(
            "SELECT (SELECT coalesce(sum(n), 0) FROM {s}), (SELECT coalesce(sum(n), 0) FROM {k}"
            " WHERE child = %s), (SELECT count(*) FROM {s})"
        ).format(s=theirs, k=_counts(app)),
        (child,),
    ).fetchone()
    rows = conn.execute(
        sql.SQL(
            "SELECT coalesce(k.bucket, s.bucket), k.n, k.total, s.bucket IS NULL FROM (SELECT"
            " bucket, n, total FROM {} WHERE child = %s AND n <> 0) k FULL JOIN {} s"
            " ON s.bucket = k.bucket WHERE k.n IS DISTINCT FROM s.n"
            " OR k.total IS DISTINCT FROM s.total"
        ).format(_counts(app), theirs),
        (child,),
    ).fetchall()
    read = int if bucketing.integer else str
    source_rows, warehouse_rows, source_buckets = totals or (0, 0, 0)
    return Compared(
        differing=sorted(read(b) for b, _, _, _ in rows),
        kept={read(b): (n, total) for b, n, total, _ in rows if n is not None},
        source_rows=int(source_rows),
        warehouse_rows=int(warehouse_rows),
        # both sides' buckets: the source's, and the kept ones the source lacks
        buckets=int(source_buckets) + sum(1 for *_, only_kept in rows if only_kept),
    )


def read_integer(
    conn: psycopg.Connection, app: str, child: str, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept (bucket, count, sum of ``key - bucket * width``) of the child's integer buckets,
    as int64 arrays for ``key_arrays.compare`` (one row back: three binary arrays)."""
    row: Any = conn.execute(
        sql.SQL(
            "SELECT array_send(array_agg(b)), array_send(array_agg(n)),"
            " array_send(array_agg((total - b::numeric * %s * n)::bigint))"
            " FROM (SELECT bucket::bigint AS b, n, total FROM {} WHERE child = %s AND n <> 0) AS k"
        ).format(_counts(app)),
        (width, child),
        binary=True,
    ).fetchone()
    return int8_array(row[0]), int8_array(row[1]), int8_array(row[2])


def copy_text(buckets: dict[Any, tuple[int, int]]) -> bytes:
    """Buckets read in Python (a MySQL source's) as the COPY text rows ``compare`` takes (bucket
    names are integers or hex digits: nothing to escape)."""
    return "".join(f"{b}\t{n}\t{total}\n" for b, (n, total) in buckets.items()).encode()
