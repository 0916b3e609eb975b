"""Consistency checks of a merged table against its source and its change log.

- ``compare_with_source``: live (``NOT is_deleted``) merged rows == source rows, by count and by
  per-row hash (md5 of the row's text form, the merged columns cast back to the source's types,
  both sessions in UTC/ISO). Rows are grouped into buckets by key; only buckets whose count or
  hash sum differ are fetched key by key, to name up to 20 differing keys. Objects with changes
  past the watermark (not merged yet by design) are left out on both sides, so the check holds
  while the application keeps writing.
- ``live_deleted_objects``: objects whose last action up to the watermark is 'deleted' must not be
  live in the merged table (soft-deleted, or absent when the merged table never saw them alive).
- ``staging_row_count`` (warehouse): 0 after a successful run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ingest_platform.cdc import source as src
from ingest_platform.cdc import warehouse as wh
from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.postgres.catalog import columns_of, parsed_type, qualified
from ingest_platform.postgres.connection import connect

MAX_KEYS = 20
BUCKETS = 256


@dataclass
class MatchReport:
    source_rows: int
    merged_rows: int  # live rows
    differing_keys: list[str] = field(default_factory=list)  # up to MAX_KEYS, as text
    mismatched_buckets: int = 0
    excluded_keys: int = 0  # objects with changes past the watermark

    @property
    def passed(self) -> bool:
        return self.source_rows == self.merged_rows and not self.mismatched_buckets

    def describe(self) -> str:
        if self.passed:
            return f"{self.merged_rows} live rows match the source."
        keys = ", ".join(self.differing_keys) or "none found"
        return (
            f"source has {self.source_rows} rows, the merged table {self.merged_rows} live rows; "
            f"{self.mismatched_buckets} of {BUCKETS} hash buckets differ; differing keys: {keys}."
        )


def _hash(columns: list[tuple[str, str | None]], alias: str) -> sql.Composed:
    parts = [
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n))
        if t is None
        else sql.SQL("{}.{}::{}").format(sql.Identifier(alias), sql.Identifier(n), sql.SQL(t))
        for n, t in columns
    ]
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(parts))


def compare_with_source(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable
) -> MatchReport:
    schema = config.warehouse_schema
    with connect(warehouse_dsn) as wconn, connect(source_dsn) as sconn:
        for conn in (wconn, sconn):
            src.set_session(conn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        mark = wh.read_watermark(wconn, schema, table.name)
        merged_columns = columns_of(wconn, schema, table.merged_table)
        horizon = mark.horizon_id if mark else 0
        log = src.change_log_info(sconn, config.change_log, table.name)
        source = src.read_source_table(sconn, table, [])
        ct_id = src.content_type_id(sconn, log, table)
        excluded = (
            [
                r[0]
                for r in sconn.execute(
                    sql.SQL(
                        "SELECT DISTINCT object_id FROM {} WHERE content_type_id = %s AND id > %s"
                    ).format(log.change_table),
                    (ct_id, horizon),
                )
            ]
            if ct_id is not None
            else []
        )
        if not merged_columns:
            count = sconn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    qualified(table.source_schema, table.source_table)
                )
            ).fetchone()[0]
            return MatchReport(count, 0, [], BUCKETS if count else 0, len(excluded))
        common = [(n, t) for n, t in source.columns if n in merged_columns]
        key = sql.Identifier(source.primary_key)
        queries = {
            "source": (
                sconn,
                qualified(table.source_schema, table.source_table),
                _hash([(n, None) for n, _ in common], "s"),
                sql.SQL("true"),
            ),
            "merged": (
                wconn,
                qualified(schema, table.merged_table),
                _hash(
                    [
                        (
                            n,
                            None
                            if merged_columns[n].parsed == parsed_type(t)
                            else str(parsed_type(t)),
                        )
                        for n, t in common
                    ],
                    "s",
                ),
                sql.SQL("NOT s.{}").format(sql.Identifier(wh.IS_DELETED)),
            ),
        }
        buckets, totals = {}, {}
        for side, (conn, relation, row_hash, live) in queries.items():
            rows = conn.execute(
                sql.SQL(
                    "SELECT b, count(*), sum(h) FROM (SELECT abs(hashtext(s.{key}::text)) %% {n} AS b, "
                    "('x' || substr({row_hash}, 1, 15))::bit(60)::bigint AS h FROM {rel} s WHERE {live} "
                    "AND s.{key}::text NOT IN (SELECT unnest(%s::text[]))) x GROUP BY b"
                ).format(
                    key=key, n=sql.Literal(BUCKETS), row_hash=row_hash, rel=relation, live=live
                ),
                (excluded,),
            ).fetchall()
            buckets[side] = {b: (c, h) for b, c, h in rows}
            totals[side] = sum(c for _, c, _ in rows)
        differing = sorted(
            b
            for b in set(buckets["source"]) | set(buckets["merged"])
            if buckets["source"].get(b) != buckets["merged"].get(b)
        )
        report = MatchReport(totals["source"], totals["merged"], [], len(differing), len(excluded))
        for bucket in differing:
            if len(report.differing_keys) >= MAX_KEYS:
                break
            rows = {}
            for side, (conn, relation, row_hash, live) in queries.items():
                rows[side] = dict(
                    conn.execute(
                        sql.SQL(
                            "SELECT s.{key}::text, {row_hash} FROM {rel} s WHERE {live} AND abs(hashtext(s.{key}::text)) %% {n} = %s "
                            "AND s.{key}::text NOT IN (SELECT unnest(%s::text[]))"
                        ).format(
                            key=key,
                            n=sql.Literal(BUCKETS),
                            row_hash=row_hash,
                            rel=relation,
                            live=live,
                        ),
                        (bucket, excluded),
                    ).fetchall()
                )
            keys = sorted(
                k
                for k in set(rows["source"]) | set(rows["merged"])
                if rows["source"].get(k) != rows["merged"].get(k)
            )
            report.differing_keys += keys[: MAX_KEYS - len(report.differing_keys)]
        return report


@dataclass
class DeletedReport:
    deleted_objects: int  # objects whose last action up to the watermark is 'deleted'
    live_keys: list[str] = field(
        default_factory=list
    )  # of those, live in the merged table (up to MAX_KEYS)
    live_count: int = 0

    @property
    def passed(self) -> bool:
        return self.live_count == 0


def live_deleted_objects(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable
) -> DeletedReport:
    schema = config.warehouse_schema
    with connect(warehouse_dsn) as wconn, connect(source_dsn) as sconn:
        mark = wh.read_watermark(wconn, schema, table.name)
        log = src.change_log_info(sconn, config.change_log, table.name)
        ct_id = src.content_type_id(sconn, log, table)
        if mark is None or ct_id is None or not columns_of(wconn, schema, table.merged_table):
            return DeletedReport(0)
        source = src.read_source_table(sconn, table, [])
        cast = src.key_cast_type(source)
        deleted = [
            r[0]
            for r in sconn.execute(
                sql.SQL(
                    "SELECT k::text FROM (SELECT DISTINCT ON (c.object_id::{cast}) c.object_id::{cast} AS k, c.action FROM {log} c "
                    "WHERE c.content_type_id = %s AND c.id <= %s ORDER BY c.object_id::{cast}, c.id DESC) x "
                    "WHERE action = 'deleted'"
                ).format(cast=cast, log=log.change_table),
                (ct_id, mark.horizon_id),
            )
        ]
        live = [
            r[0]
            for r in wconn.execute(
                sql.SQL(
                    "SELECT {key}::text FROM {merged} WHERE NOT {is_deleted} AND {key}::text = ANY(%s) ORDER BY 1"
                ).format(
                    key=sql.Identifier(source.primary_key),
                    merged=qualified(schema, table.merged_table),
                    is_deleted=sql.Identifier(wh.IS_DELETED),
                ),
                (deleted,),
            )
        ]
        return DeletedReport(len(deleted), live[:MAX_KEYS], len(live))


def staging_row_count(warehouse_dsn: str, config: CdcConfig, table: CdcTable) -> int:
    with connect(warehouse_dsn, autocommit=True) as wconn:
        return wh.staging_row_count(wconn, config.warehouse_schema, table)
