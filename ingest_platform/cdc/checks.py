"""Consistency checks of a merged table against its source and its change log.

- ``compare_with_source``: live (``NOT is_deleted``) merged rows == source rows, compared by the
  one engine of ``consistency.compare`` (PostgreSQL vs PostgreSQL): bucket fingerprints of the
  row hashes, differing buckets split deeper, up to 20 differing keys named (missing in the
  source, missing in the merged table, or different with the columns that differ). Columns the
  merged table widened are read as the source's type. Objects with changes past the watermark
  (not merged yet by design) are left out on both sides, so the check holds while the
  application keeps writing.
- ``live_deleted_objects``: objects whose last action up to the watermark is 'deleted' must not be
  live in the merged table (soft-deleted, or absent when the merged table never saw them alive).
- ``staging_row_count`` (warehouse): 0 after a successful run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ingest_platform.cdc import logical
from ingest_platform.cdc import source as src
from ingest_platform.cdc import warehouse as wh
from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.consistency.compare import Difference, compare_hashes, postgres_sides
from ingest_platform.errors import IngestError
from ingest_platform.postgres import catalog
from ingest_platform.postgres.connection import connect

MAX_KEYS = 20


@dataclass
class MatchReport:
    source_rows: int
    merged_rows: int  # live rows
    differences: list[Difference] = field(default_factory=list)  # up to MAX_KEYS
    mismatched_buckets: int = 0
    buckets: int = 0
    excluded_keys: int = 0  # objects with changes past the watermark

    @property
    def passed(self) -> bool:
        return self.source_rows == self.merged_rows and not self.mismatched_buckets

    @property
    def differing_keys(self) -> list[str]:
        """``17 (missing in merged table)``, ``5 (different: columns: qty)``."""
        return [
            ", ".join(str(v) for v in d.key.values())
            + f" ({d.status}{': ' + d.detail if d.detail else ''})"
            for d in self.differences
        ]

    def describe(self) -> str:
        if self.passed:
            return f"{self.merged_rows} live rows match the source."
        keys = "; ".join(self.differing_keys) or "none found"
        return (
            f"source has {self.source_rows} rows, the merged table {self.merged_rows} live rows; "
            f"{self.mismatched_buckets} of {self.buckets} hash buckets differ; "
            f"differing keys: {keys}."
        )


# The logical kind's check starts again when a merge confirmed the slot during it (see below).
LOGICAL_ATTEMPTS = 5


def compare_with_source(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable
) -> MatchReport:
    for _ in range(LOGICAL_ATTEMPTS if config.logical is not None else 1):
        with connect(warehouse_dsn) as wconn, connect(source_dsn) as sconn:
            for conn in (wconn, sconn):
                src.set_session(conn)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            # The warehouse snapshot: the watermark and the merged rows the comparison reads.
            mark = wh.read_watermark(wconn, config.warehouse_schema, table.name)
            report = compare_in_snapshot(
                source_dsn, wconn, sconn, config, table, mark.horizon_id if mark else 0
            )
            if report is not None:
                return report
    raise IngestError(
        f"CDC table {table.name!r}: a merge confirmed slot "
        f"{config.logical.slot if config.logical else ''!r} during each of "
        f"{LOGICAL_ATTEMPTS} attempts of the source comparison; run the check again when "
        "cdc_sync is idle."
    )


def compare_in_snapshot(
    source_dsn: str,
    wconn: psycopg.Connection,
    sconn: psycopg.Connection,
    config: CdcConfig,
    table: CdcTable,
    horizon: int,
) -> MatchReport | None:
    """Compare in `wconn`'s snapshot, which shows the watermark `horizon`, and `sconn`'s (taken
    here, after it). Objects with changes past `horizon` are left out. The logical kind finds
    them by peeking the slot, which returns only what lies past the slot's confirmed position: a
    merge that committed and confirmed the slot after the warehouse snapshot hides changes the
    source snapshot has and the merged rows lack (a false mismatch). Then None: start again."""
    schema = config.warehouse_schema
    source = src.read_source_table(sconn, table, [])
    if config.logical is not None:  # keys with decoded changes past the watermark
        pending = logical.pending_keys(source_dsn, config, table, source, horizon)
        if pending is None:
            return None
        excluded = pending
    else:
        excluded = _pending_objects(sconn, config, table, horizon)
    merged_oid = catalog.relation_oid(wconn, schema, table.merged_table)
    if merged_oid is None:
        (count,) = sconn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                catalog.qualified(table.source_schema, table.source_table)
            )
        ).fetchone() or (0,)
        return MatchReport(count, 0, [], 1 if count else 0, 1, len(excluded))
    merged = {c.name for c in catalog.columns(wconn, merged_oid)}
    not_pending = (source.primary_key, "not in", excluded)
    source_side, merged_side = postgres_sides(
        (sconn, table.source_schema, table.source_table),
        (wconn, schema, table.merged_table),
        columns=[n for n, _ in source.columns if n in merged],
        key=[source.primary_key],
        left_filters=[not_pending],
        right_filters=[(wh.IS_DELETED, "=", False), not_pending],
        names=("source", "merged table"),
    )
    result = compare_hashes(source_side, merged_side, max_keys=MAX_KEYS)
    return MatchReport(
        result.left_rows,
        result.right_rows,
        result.differences,
        result.differing_buckets,
        result.buckets,
        len(excluded),
    )


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


def _pending_objects(
    sconn: psycopg.Connection, config: CdcConfig, table: CdcTable, horizon: int
) -> list[str]:
    """Object ids with change-log rows past the watermark (in sconn's snapshot)."""
    log = src.change_log_info(sconn, config.change_log, table.name)
    ct_id = src.content_type_id(sconn, log, table)
    if ct_id is None:
        return []
    return [
        r[0]
        for r in sconn.execute(
            sql.SQL(
                "SELECT DISTINCT object_id FROM {} WHERE content_type_id = %s AND id > %s"
            ).format(log.change_table),
            (ct_id, horizon),
        )
    ]


def live_deleted_objects(
    source_dsn: str, warehouse_dsn: str, config: CdcConfig, table: CdcTable
) -> DeletedReport:
    schema = config.warehouse_schema
    with connect(warehouse_dsn) as wconn, connect(source_dsn) as sconn:
        mark = wh.read_watermark(wconn, schema, table.name)
        log = src.change_log_info(sconn, config.change_log, table.name)
        ct_id = src.content_type_id(sconn, log, table)
        if (
            mark is None
            or ct_id is None
            or not catalog.relation_exists(wconn, schema, table.merged_table)
        ):
            return DeletedReport(0)
        source = src.read_source_table(sconn, table, [])
        cast = src.key_cast_type(source)
        deleted = [
            r[0]
            for r in sconn.execute(
                sql.SQL(
                    "SELECT k::text FROM (SELECT DISTINCT ON (c.object_id::{cast}) "
                    "c.object_id::{cast} AS k, c.action FROM {log} c "
                    "WHERE c.content_type_id = %s AND c.id <= %s ORDER BY c.object_id::{cast}, "
                    "c.id DESC) x "
                    "WHERE action = 'deleted'"
                ).format(cast=cast, log=log.change_table),
                (ct_id, mark.horizon_id),
            )
        ]
        live = [
            r[0]
            for r in wconn.execute(
                sql.SQL(
                    "SELECT {key}::text FROM {merged} WHERE NOT {is_deleted} AND {key}::text = "
                    "ANY(%s) ORDER BY 1"
                ).format(
                    key=sql.Identifier(source.primary_key),
                    merged=catalog.qualified(schema, table.merged_table),
                    is_deleted=sql.Identifier(wh.IS_DELETED),
                ),
                (deleted,),
            )
        ]
        return DeletedReport(len(deleted), live[:MAX_KEYS], len(live))


def staging_row_count(warehouse_dsn: str, config: CdcConfig, table: CdcTable) -> int:
    with connect(warehouse_dsn, autocommit=True) as wconn:
        return wh.staging_row_count(wconn, config.warehouse_schema, table)
