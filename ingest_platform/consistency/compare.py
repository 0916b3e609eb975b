"""Compare two sides of a table by hash buckets and name the differing keys: the one engine.

A *side* is a table (or a slice of it) that can answer, for the same columns and key, bucket
fingerprints for a key-hash prefix and (key, row hash) pairs: ``PostgresSide`` (any PostgreSQL
connection and table) and ``BigQuerySide`` (a mirror table). PostgreSQL vs BigQuery checks a
mirror; PostgreSQL vs PostgreSQL (``postgres_sides``) checks a CDC merged table against its
source, or any two databases that should agree.

1. Both sides compute, per bucket (the first ``d`` hex digits of md5(key canonical form)),
   ``count(*)`` and the sums of four 28-bit chunks of the row hashes (hex digits 1-7, 8-14,
   15-21, 22-28 read as integers: the same integers on both sides). Sums need no sort, and
   28-bit values summed over fewer than 2**35 rows cannot overflow INT64. Only these aggregates
   cross the network (``16**d`` rows at most). The two sides run their queries at the same time.
   ``d`` is chosen so that a bucket holds about ``rows_per_bucket`` rows, from the left side's
   estimate (PostgreSQL: the planner's, from its statistics, no scan; else a count).
2. Buckets that differ are narrowed (bisection): while they hold more than ``leaf_rows`` rows, the
   same aggregation runs one hex digit deeper, restricted to them; then the (key, row hash) pairs
   of the remaining differing buckets are fetched from both sides and compared.
3. Up to ``max_keys`` differing keys are reported: missing on one side or the other, or
   different (same key, other values: with the columns that differ; or a different number of
   rows).

A source without a key is keyed by its row hash: then a changed row shows up as one row missing
on each side. Row counts (all rows, rows not deleted, per group such as ``_version``) come from
one aggregate query per side.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

import psycopg
from psycopg import sql

from ingest_platform.bigquery.source import MirrorSource
from ingest_platform.bigquery.types import MirrorColumn, comparable_column, quote_bq_column
from ingest_platform.consistency.canonical import (
    bq_canonical_of,
    bq_text,
    needs_length,
    parse_canonical,
    pg_canonical_of,
    pg_text,
    readable,
)
from ingest_platform.errors import SchemaError
from ingest_platform.postgres import catalog

DIFFERENT = "different"
MAX_DEPTH = 8
# A bucket's fingerprint: count(*) and the sums of four 28-bit chunks (7 hex digits) of its row
# hashes (112 of the 128 bits). Sums do not depend on row order (no sort), and 28-bit values summed
# over fewer than 2**35 rows fit INT64. Both sides parse the hex digits into the same integers.
CHUNK_DIGITS = 7
CHUNK_STARTS = (1, 8, 15, 22)

Buckets = dict[str, tuple[int, ...]]

# The bucket query hashes every row: CPU-bound, and the planner's default costs (md5 counts as one
# operator) rarely make it parallel. Costs set to zero for that statement let PostgreSQL split the
# scan over its parallel workers (`max_parallel_workers_per_gather`, 2 by default): 100k rows x 10
# columns 0.70 -> 0.41 s here. Workers remain capped by the server's own settings.
PARALLEL_SCAN = {
    "parallel_setup_cost": "0",
    "parallel_tuple_cost": "0",
    "min_parallel_table_scan_size": "0",
}


def missing_in(side: str) -> str:
    """The status of a key one side lacks: ``missing in BigQuery``."""
    return f"missing in {side}"


class Side(Protocol):
    """One side of a comparison. Keys are canonical texts (``canonical.parse_canonical``)."""

    name: str  # for reports: "PostgreSQL", "BigQuery", "source", "merged table"
    source: MirrorSource  # the columns compared and the key
    columns: list[MirrorColumn]

    def counts(self, group: str | None = None, deleted: str | None = None) -> dict: ...

    def estimated_rows(self) -> float: ...

    def buckets(self, depth: int, within: list[str] | None) -> Buckets: ...

    def leaves(self, prefixes: list[str]) -> dict[str, Counter]: ...

    def fields(self, key: str) -> list[tuple]: ...


@dataclass(frozen=True)
class Difference:
    key: dict  # key column -> value as canonical text (None = NULL); {"row_hash": h} without key
    status: str  # missing_in(side name) or DIFFERENT
    detail: str = ""


@dataclass
class Comparison:
    what: str
    left: str  # side names
    right: str
    left_rows: int
    right_rows: int
    buckets: int = 0
    differing_buckets: int = 0
    depth: int = 0
    differences: list[Difference] = field(default_factory=list)
    more_differences: bool = False
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.differing_buckets == 0 and self.left_rows == self.right_rows

    def markdown(self) -> str:
        lines = [
            f"Compared {self.what}: {self.left} {self.left_rows} rows, {self.right} "
            f"{self.right_rows} rows; {self.buckets} buckets, {self.differing_buckets} differ; "
            f"{self.seconds:.2f} s."
        ]
        if self.differences:
            columns = list(self.differences[0].key)
            lines += [
                "",
                "| " + " | ".join(columns + ["status", "detail"]) + " |",
                "|" + "---|" * (len(columns) + 2),
            ]
            for d in self.differences:
                values = [
                    "NULL" if d.key.get(c) is None else str(d.key.get(c)).replace("|", "\\|")
                    for c in columns
                ]
                lines.append("| " + " | ".join(values + [d.status, d.detail]) + " |")
            if self.more_differences:
                lines.append(f"\nOnly the first {len(self.differences)} differing keys are listed.")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the two sides


class PostgresSide:
    """A PostgreSQL table (``source``: columns, key, filters) on a connection. ``cast_to`` reads
    some columns as another type first: the type the other side holds them in (a merged table
    that widened a column is compared as the source's type)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        source: MirrorSource,
        columns: Sequence[MirrorColumn] | None = None,
        *,
        name: str = "PostgreSQL",
        cast_to: Mapping[str, str] | None = None,
    ):
        self.conn, self.source, self.name = conn, source, name
        self.columns = list(columns or source.columns)
        casts = cast_to or {}

        def text(column: MirrorColumn) -> sql.Composable:
            ref = sql.Identifier(column.name)
            if column.name not in casts:
                return pg_text(column, ref)
            # A type as format_type printed it: quoted where needed.
            return pg_text(column, sql.SQL("({})::{}").format(ref, sql.SQL(casts[column.name])))

        # Unlike BigQuerySide, the field texts are written in place: computing them once in a
        # subquery (OFFSET 0) costs PostgreSQL more than evaluating each text twice.
        self.texts = [text(c) for c in self.columns]
        self.lengths = [needs_length(c) for c in self.columns]
        self.row_expr = sql.SQL("md5({})").format(pg_canonical_of(self.texts, self.lengths))
        key_columns = [source.column(k) for k in source.key]
        self.key_text = (
            pg_canonical_of([text(c) for c in key_columns], [needs_length(c) for c in key_columns])
            if key_columns
            else self.row_expr
        )
        # Every statement below holds its values as literals and runs without parameters: psycopg
        # would read a "%" in a column name ("%s") as a placeholder if parameters were passed.
        self.filtered = bool(source.filters)
        self.from_ = sql.SQL("{}{}").format(
            catalog.qualified(source.schema, source.table), source.where()
        )
        self.base = sql.SQL("SELECT {} AS k, md5({}) AS kh, {} AS rh FROM {}").format(
            self.key_text, self.key_text, self.row_expr, self.from_
        )

    def estimated_rows(self) -> float:
        """The planner's estimate of the rows compared (filters included), without reading them;
        a count where the table has no statistics yet."""
        plan = self.conn.execute(
            sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(self.from_)
        ).fetchone()
        estimate = plan[0][0]["Plan"]["Plan Rows"] if plan else 0
        if estimate > 1:  # the planner says 1 for a table it knows nothing about
            return estimate
        return sum(n for n, _ in self.counts().values())

    def counts(self, group: str | None = None, deleted: str | None = None) -> dict:
        deleted_expr = (
            sql.SQL("count(*) FILTER (WHERE NOT coalesce({}, false))").format(
                sql.Identifier(deleted)
            )
            if deleted
            else sql.SQL("count(*)")
        )
        group_expr = sql.SQL("{}::text").format(sql.Identifier(group)) if group else sql.SQL("''")
        rows = self.conn.execute(
            sql.SQL("SELECT {} AS g, count(*), {} FROM {} GROUP BY 1").format(
                group_expr, deleted_expr, self.from_
            )
        ).fetchall()
        return {g: (n, live) for g, n, live in rows}

    def buckets(self, depth: int, within: list[str] | None) -> Buckets:
        restrict: sql.Composable = sql.SQL("")
        if within is not None:
            restrict = sql.SQL(" WHERE substr(kh, 1, {}) = ANY({})").format(
                sql.Literal(len(within[0])), sql.Literal(within)
            )
        # OFFSET 0 keeps the subquery from being flattened: otherwise PostgreSQL would compute the
        # row hash once per chunk.
        sums = sql.SQL(", ").join(
            sql.SQL("sum(('x' || substr(rh, {}, {}))::bit({})::int)").format(
                sql.Literal(start), sql.Literal(CHUNK_DIGITS), sql.Literal(CHUNK_DIGITS * 4)
            )
            for start in CHUNK_STARTS
        )
        statement = sql.SQL(
            "SELECT b, count(*), {} FROM (SELECT substr(kh, 1, {}) AS b, rh FROM ({}) AS s{}"
            " OFFSET 0) AS t GROUP BY 1"
        ).format(sums, sql.Literal(depth), self.base, restrict)
        with _settings(self.conn, PARALLEL_SCAN):
            rows = self.conn.execute(statement).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def fields(self, key: str) -> list[tuple]:
        """Each column's canonical text of the rows with this key (to say which columns differ)."""
        glue = sql.SQL(" AND ") if self.filtered else sql.SQL(" WHERE ")
        statement = sql.SQL("SELECT {} FROM {}{}{} = {}").format(
            sql.SQL(", ").join(
                pg_canonical_of([t], [n]) for t, n in zip(self.texts, self.lengths, strict=True)
            ),
            self.from_,
            glue,
            self.key_text,
            sql.Literal(key),
        )
        return [tuple(r) for r in self.conn.execute(statement)]

    def leaves(self, prefixes: list[str]) -> dict[str, Counter]:
        statement = sql.SQL("SELECT k, rh FROM ({}) AS s WHERE substr(kh, 1, {}) = ANY({})").format(
            self.base, sql.Literal(len(prefixes[0])), sql.Literal(prefixes)
        )
        found: dict[str, Counter] = {}
        for k, rh in self.conn.execute(statement):
            found.setdefault(k, Counter())[rh] += 1
        return found


@contextmanager
def _settings(conn: psycopg.Connection, settings: Mapping[str, str]) -> Iterator[None]:
    """Planner settings for the statements inside, the connection's own ones restored after (in or
    out of a transaction: session settings, not SET LOCAL, which would outlive the block)."""
    names = list(settings)
    before = conn.execute(
        "SELECT current_setting(n) FROM unnest(%s::text[]) AS n", [names]
    ).fetchall()
    conn.execute(
        "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)",
        [names, list(settings.values())],
    )
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute(
                "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)",
                [names, [v for (v,) in before]],
            )


def postgres_table(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    *,
    columns: Sequence[str] | None = None,
    key: Sequence[str] | None = None,
    filters: Sequence[tuple[str, str, object]] = (),
) -> MirrorSource:
    """A PostgreSQL table to compare: the given columns (default: all) in that order, keyed by
    ``key`` (default: the primary key). BigQuery's limits do not apply."""
    oid = catalog.relation_oid(conn, schema, table)
    if oid is None:
        raise SchemaError(f'Table "{schema}"."{table}" does not exist in PostgreSQL.')
    types = {c.name: c.type for c in catalog.columns(conn, oid)}
    names = list(types) if columns is None else list(columns)
    missing = [n for n in names if n not in types]
    if missing:
        raise SchemaError(f"{schema}.{table}: column(s) {', '.join(missing)} not found.")
    key = tuple(key) if key is not None else catalog.primary_key(conn, oid)
    return MirrorSource(
        schema,
        table,
        tuple(comparable_column(n, types[n]) for n in names),
        key,
        tuple(filters),
    )


def postgres_sides(
    left: tuple[psycopg.Connection, str, str],
    right: tuple[psycopg.Connection, str, str],
    *,
    columns: Sequence[str] | None = None,
    key: Sequence[str] | None = None,
    left_filters: Sequence[tuple[str, str, object]] = (),
    right_filters: Sequence[tuple[str, str, object]] = (),
    names: tuple[str, str] = ("left", "right"),
) -> tuple[PostgresSide, PostgresSide]:
    """Two PostgreSQL tables, (connection, schema, table) each, compared on the same columns
    (default: all of the left's) and key (default: the left's primary key). A column the right
    holds in another type is read as the left's type."""
    a = postgres_table(*left, columns=columns, key=key, filters=left_filters)
    b = postgres_table(
        *right, columns=[c.name for c in a.columns], key=a.key, filters=right_filters
    )
    casts = {
        x.name: x.pg_type
        for x, y in zip(a.columns, b.columns, strict=True)
        if catalog.parsed_type(x.pg_type) != catalog.parsed_type(y.pg_type)
    }
    b = MirrorSource(b.schema, b.table, a.columns, a.key, b.filters)  # the left's kinds
    return (
        PostgresSide(left[0], a, name=names[0]),
        PostgresSide(right[0], b, name=names[1], cast_to=casts),
    )


class BigQuerySide:
    """A BigQuery mirror table of ``source`` (its columns by their BigQuery names)."""

    name = "BigQuery"

    def __init__(
        self,
        client,
        table_ref: str,
        source: MirrorSource,
        columns: Sequence[MirrorColumn] | None = None,
    ):
        self.client, self.table_ref, self.source = client, table_ref, source
        self.columns = list(columns or source.columns)
        key_columns = [source.column(k) for k in source.key]
        # Each field text is computed once, in a subquery (see PostgresSide).
        needed = list({c.name: c for c in self.columns + key_columns}.values())
        alias = {c.name: f"_c{i}" for i, c in enumerate(needed)}
        self.where, self.params = self._where()
        texts = ", ".join(f"{bq_text(c)} AS {alias[c.name]}" for c in needed)
        self.texts = f"(SELECT {texts} FROM {table_ref}{self.where})"
        self.field_refs = [alias[c.name] for c in self.columns]
        self.lengths = [needs_length(c) for c in self.columns]
        self.row_expr = f"TO_HEX(MD5({bq_canonical_of(self.field_refs, self.lengths)}))"
        self.key_text = (
            bq_canonical_of(
                [alias[c.name] for c in key_columns], [needs_length(c) for c in key_columns]
            )
            if key_columns
            else self.row_expr
        )
        self.key_hash = f"TO_HEX(MD5({self.key_text}))"
        self.base = (
            f"SELECT {self.key_text} AS k, {self.key_hash} AS kh, {self.row_expr} AS rh"
            f" FROM {self.texts}"
        )

    def _where(self):
        from google.cloud import bigquery

        parts, params = [], []
        for i, (column, op, value) in enumerate(self.source.filters):
            name = f"f{i}"
            ref = quote_bq_column(self.source.column(column).bq_name)
            if op == "not in":
                parts.append(f"CAST({ref} AS STRING) NOT IN UNNEST(@{name})")
                params.append(bigquery.ArrayQueryParameter(name, "STRING", list(value)))
                continue
            parts.append(f"{ref} {op} @{name}")
            kind = "INT64" if isinstance(value, int) and not isinstance(value, bool) else "STRING"
            params.append(bigquery.ScalarQueryParameter(name, kind, value))
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def _run(self, statement: str, extra=()):
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=list(self.params) + list(extra))
        # jobs.query: one request for a query whose result comes back within its timeout (a job,
        # then its polls, cost a round trip each).
        return [tuple(r.values()) for r in self.client.query_and_wait(statement, job_config=config)]

    def estimated_rows(self) -> float:
        return sum(n for n, _ in self.counts().values())

    def counts(self, group: str | None = None, deleted: str | None = None) -> dict:
        q = quote_bq_column
        live = (
            f"COUNTIF(NOT COALESCE({q(self.source.column(deleted).bq_name)}, FALSE))"
            if deleted
            else "COUNT(*)"
        )
        group_expr = f"CAST({q(self.source.column(group).bq_name)} AS STRING)" if group else "''"
        rows = self._run(
            f"SELECT {group_expr} AS g, COUNT(*), {live}"
            f" FROM {self.table_ref}{self.where} GROUP BY 1"
        )
        return {g: (n, live) for g, n, live in rows}

    def buckets(self, depth: int, within: list[str] | None) -> Buckets:
        from google.cloud import bigquery

        extra, restrict = [], ""
        if within is not None:
            restrict = (
                f" WHERE SUBSTR({self.key_hash}, 1, {int(len(within[0]))}) IN UNNEST(@within)"
            )
            extra = [bigquery.ArrayQueryParameter("within", "STRING", within)]
        sums = ", ".join(
            f"SUM(CAST(CONCAT('0x', SUBSTR(rh, {start}, {CHUNK_DIGITS})) AS INT64))"
            for start in CHUNK_STARTS
        )
        # One subquery level fewer than over `base`: at 100k rows most of the emulator's time
        # goes to translating the SQL, not running it, and the nesting adds ~10% to that.
        bucket = f"SUBSTR({self.key_hash}, 1, {int(depth)})"
        rows = self._run(
            f"SELECT b, COUNT(*), {sums} FROM (SELECT {bucket} AS b, {self.row_expr} AS rh"
            f" FROM {self.texts}{restrict}) GROUP BY b",
            extra,
        )
        return {r[0]: tuple(r[1:]) for r in rows}

    def fields(self, key: str) -> list[tuple]:
        from google.cloud import bigquery

        statement = (
            "SELECT "
            + ", ".join(
                bq_canonical_of([r], [n])
                for r, n in zip(self.field_refs, self.lengths, strict=True)
            )
            + f" FROM {self.texts}"
            f" WHERE {self.key_text} = @key"
        )
        return self._run(statement, [bigquery.ScalarQueryParameter("key", "STRING", key)])

    def leaves(self, prefixes: list[str]) -> dict[str, Counter]:
        from google.cloud import bigquery

        extra = [bigquery.ArrayQueryParameter("prefixes", "STRING", prefixes)]
        found: dict[str, Counter] = {}
        statement = (
            f"SELECT k, rh FROM ({self.base})"
            f" WHERE SUBSTR(kh, 1, {int(len(prefixes[0]))}) IN UNNEST(@prefixes)"
        )
        for k, rh in self._run(statement, extra):
            found.setdefault(k, Counter())[rh] += 1
        return found


# ----------------------------------------------------------------------------- comparing


def choose_depth(rows: int, rows_per_bucket: int = 1000) -> int:
    """Hex digits of the first bucket level: about `rows_per_bucket` rows per bucket, at least
    16 buckets."""
    if rows <= rows_per_bucket * 16:
        return 1
    return min(MAX_DEPTH - 2, max(1, math.ceil(math.log(rows / rows_per_bucket, 16))))


def compare_hashes(
    left: Side,
    right: Side,
    *,
    what: str = "",
    max_keys: int = 20,
    rows_per_bucket: int = 1000,
    leaf_rows: int = 20_000,
) -> Comparison:
    """Compare two sides of the same columns and key (see the module's docstring)."""
    started = time.perf_counter()
    depth = choose_depth(max(int(left.estimated_rows()), 1), rows_per_bucket)
    ours, theirs = _both(lambda: left.buckets(depth, None), lambda: right.buckets(depth, None))
    result = Comparison(
        what or left.source.label,
        left.name,
        right.name,
        sum(v[0] for v in ours.values()),
        sum(v[0] for v in theirs.values()),
        buckets=len(set(ours) | set(theirs)),
        depth=depth,
    )
    differing = _differing(ours, theirs)
    result.differing_buckets = len(differing)
    # Narrow, depth first: a differing bucket with more than `leaf_rows` rows is split one hex
    # digit deeper; small ones are fetched as (key, row hash) pairs, a batch at a time, until
    # `max_keys` differing keys are found.
    pending = [(b, _size(ours, theirs, b)) for b in differing]
    while pending and len(result.differences) < max_keys:
        bucket, size = pending.pop(0)
        if size > leaf_rows and len(bucket) < MAX_DEPTH:
            deeper = len(bucket) + 1
            ours, theirs = _both(
                partial(left.buckets, deeper, [bucket]), partial(right.buckets, deeper, [bucket])
            )
            result.depth = max(result.depth, deeper)
            pending = [(b, _size(ours, theirs, b)) for b in _differing(ours, theirs)] + pending
            continue
        batch, rows = [bucket], size
        while (
            pending
            and len(pending[0][0]) == len(bucket)
            and pending[0][1] <= leaf_rows
            and rows + pending[0][1] <= leaf_rows
        ):
            rows += pending[0][1]
            batch.append(pending.pop(0)[0])
        _collect(left, right, batch, result, max_keys)
    if pending:
        result.more_differences = True
    result.seconds = time.perf_counter() - started
    return result


T = TypeVar("T")
U = TypeVar("U")


def _both(on_left: Callable[[], T], on_right: Callable[[], U]) -> tuple[T, U]:
    """Run the two sides' queries at the same time (each waits on its own server)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        right_future = pool.submit(on_right)
        left_result = on_left()
        return left_result, right_future.result()


def _size(a: Buckets, b: Buckets, bucket: str) -> int:
    return max(a.get(bucket, (0,))[0], b.get(bucket, (0,))[0])


def _differing(a: Buckets, b: Buckets) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _collect(
    left: Side, right: Side, prefixes: list[str], result: Comparison, max_keys: int
) -> None:
    ours, theirs = _both(lambda: left.leaves(prefixes), lambda: right.leaves(prefixes))
    key_names = list(left.source.key)
    key_lengths = [needs_length(left.source.column(k)) for k in key_names]
    for key in sorted(set(ours) | set(theirs)):
        here, there = ours.get(key), theirs.get(key)
        if here == there:
            continue
        if len(result.differences) >= max_keys:
            result.more_differences = True
            return
        # Without a key, k is the row hash itself.
        fields = parse_canonical(key, key_lengths) if key_names else []
        values = (
            {
                name: readable(left.source.column(name), text)
                for name, text in zip(key_names, fields, strict=True)
            }
            if key_names
            else {"row_hash": key}
        )
        if there is None:
            result.differences.append(Difference(values, missing_in(right.name)))
        elif here is None:
            result.differences.append(Difference(values, missing_in(left.name)))
        elif sum(here.values()) == sum(there.values()):
            detail = _differing_columns(left, right, key)
            result.differences.append(Difference(values, DIFFERENT, detail))
        else:
            detail = (
                f"{sum(here.values())} rows in {left.name}, {sum(there.values())} in {right.name}"
            )
            result.differences.append(Difference(values, DIFFERENT, detail))


def _differing_columns(left: Side, right: Side, key: str) -> str:
    a, b = left.fields(key), right.fields(key)
    if len(a) != 1 or len(b) != 1:
        return ""
    names = [c.name for c, x, y in zip(left.columns, a[0], b[0], strict=True) if x != y]
    return "columns: " + ", ".join(names) if names else ""


# ----------------------------------------------------------------------------- counts


@dataclass
class CountComparison:
    what: str
    groups: dict  # group -> {"pg": (all, live), "bq": (all, live)}
    seconds: float

    @property
    def passed(self) -> bool:
        return all(v["pg"] == v["bq"] for v in self.groups.values())

    def totals(self) -> dict:
        pg_all = sum(v["pg"][0] for v in self.groups.values())
        bq_all = sum(v["bq"][0] for v in self.groups.values())
        pg_live = sum(v["pg"][1] for v in self.groups.values())
        bq_live = sum(v["bq"][1] for v in self.groups.values())
        return {
            "pg_rows": pg_all,
            "bq_rows": bq_all,
            "pg_rows_not_deleted": pg_live,
            "bq_rows_not_deleted": bq_live,
        }

    def markdown(self, group_name: str = "group") -> str:
        lines = [
            f"Row counts of {self.what} ({self.seconds:.2f} s):",
            "",
            f"| {group_name} | PostgreSQL rows | BigQuery rows | PostgreSQL not deleted | BigQuery "
            f"not deleted | |",
            "|---|---|---|---|---|---|",
        ]
        for g, v in sorted(self.groups.items()):
            ok = "ok" if v["pg"] == v["bq"] else "DIFFERENT"
            lines.append(
                f"| {g or '(all)'} | {v['pg'][0]} | {v['bq'][0]} | {v['pg'][1]} | {v['bq'][1]} | "
                f"{ok} |"
            )
        return "\n".join(lines)


def compare_counts(
    pg: Side,
    bq: Side,
    *,
    group: str | None = None,
    deleted: str | None = None,
    what: str = "",
) -> CountComparison:
    started = time.perf_counter()
    a, b = pg.counts(group, deleted), bq.counts(group, deleted)
    groups = {g: {"pg": a.get(g, (0, 0)), "bq": b.get(g, (0, 0))} for g in set(a) | set(b)}
    return CountComparison(what or pg.source.label, groups, time.perf_counter() - started)
