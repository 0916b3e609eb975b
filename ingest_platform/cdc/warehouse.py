"""The warehouse side of CDC: merged and staging tables, their evolution, the watermark, the merge.

Tables in the warehouse schema W (``INGEST_CDC_SCHEMA``, default ``cdc``):

- ``W."<table>"``, the *merged table*: the source columns (the source's primary key is its primary
  key; every other column nullable) plus ``is_deleted boolean NOT NULL DEFAULT false``,
  ``_last_change_id bigint`` (the change last applied to the row) and ``_applied_at timestamptz``;
  ``fillfactor = 90``, so that most updates of a merge are HOT (no new index entry).
- ``W."<table>__staging"``, the *staging table* (UNLOGGED): ``_change_id``, ``_action``,
  ``_row_found``, then the source columns. Rebuilt by every run, empty between runs.
- ``W."<table>__changes"``, the *change history*: one row per change-log row the merges applied
  (``_change_id`` primary key, ``_action``, ``object_id``, ``changed_at``: the change log's
  ``date_created``, ``merged_at``: the merge's time, ``_mirrored_at``: always NULL here, the
  BigQuery mirror stamps its copy). Written by the merge's transaction from
  ``W."<table>__staging_changes"`` (UNLOGGED, rebuilt by every staging run), so a change is in
  the history exactly when its row is merged. The logical kind writes it too: one row per
  decoded change, ``changed_at`` its transaction's commit time, ``_change_id`` a running number
  (``cdc.logical._stage_history`` says why not the WAL position).
- ``W._cdc_watermark``: one row per table: ``horizon_id`` (every change id <= it is applied),
  the staged interval (``staged_from``, ``staged_to``) and the horizon candidates not yet safe.

Schema evolution follows the dump pipeline's rules (``postgres.type_widening``): a new source
column is added to the merged table; a wider type widens it; a narrower type changes nothing; an
incompatible type raises SchemaError naming table, column and both types before anything moves.
A column dropped in the source stays in the merged table and keeps its last values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.cdc.source import SourceTable
from ingest_platform.errors import SchemaError
from ingest_platform.postgres import catalog, evolution
from ingest_platform.postgres.catalog import parsed_type, qualified
from ingest_platform.postgres.connection import one_row, scalar
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS, terminating_blockers
from ingest_platform.postgres.planner import estimated_rows, few_of, index_lookup_joins

WATERMARK_TABLE = "_cdc_watermark"
IS_DELETED, LAST_CHANGE_ID, APPLIED_AT = "is_deleted", "_last_change_id", "_applied_at"
MERGED_META_COLUMNS = (IS_DELETED, LAST_CHANGE_ID, APPLIED_AT)
STAGING_META = (
    ("_change_id", "bigint NOT NULL"),
    ("_action", "text NOT NULL"),
    ("_row_found", "boolean NOT NULL"),
)
# Logical decoding's staging (cdc.logical) has one more column: the names of the columns an UPDATE
# did not carry (TOAST values it left unchanged); the merge keeps their merged values.
UNCHANGED = "_unchanged"
MIRRORED_AT = "_mirrored_at"
CHANGES_COLUMNS = (
    ("_change_id", "bigint PRIMARY KEY"),
    ("_action", "text NOT NULL"),
    ("object_id", "text NOT NULL"),
    ("changed_at", "timestamptz NOT NULL"),
    ("merged_at", "timestamptz NOT NULL"),
    (MIRRORED_AT, "timestamptz"),  # NULL in PostgreSQL: the BigQuery mirror stamps its copy
)
LOGGER = logging.getLogger(__name__)
_SETUP_LOCK = 0x43_44_43  # advisory lock: one CREATE SCHEMA/TABLE IF NOT EXISTS at a time
# Merged tables leave 10% of each page free, so that an update can put the new row version on the
# same page: a HOT update, which adds no index entry (the merge updates many rows of a large table).
MERGED_FILLFACTOR = 90


def ensure_watermark(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Schema, watermark table and the table's watermark row (autocommit-safe, idempotent)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, horizon_id bigint NOT "
                "NULL DEFAULT 0, "
                "candidates jsonb NOT NULL DEFAULT '[]', staged_from bigint, staged_to bigint, "
                "staged_info jsonb, "
                "last_change_id bigint, last_change_at timestamptz, applied_at timestamptz)"
            ).format(qualified(schema, WATERMARK_TABLE))
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (table_name) VALUES (%s) ON CONFLICT DO NOTHING").format(
                qualified(schema, WATERMARK_TABLE)
            ),
            (table,),
        )


@dataclass
class Watermark:
    horizon_id: int
    candidates: list
    staged_from: int | None
    staged_to: int | None
    staged_info: dict | None
    last_change_id: int | None
    last_change_at: datetime | None
    applied_at: datetime | None


def read_watermark(
    conn: psycopg.Connection, schema: str, table: str, for_update: bool = False
) -> Watermark | None:
    if not catalog.relation_exists(conn, schema, WATERMARK_TABLE):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT horizon_id, candidates, staged_from, staged_to, staged_info, last_change_id, "
            "last_change_at, applied_at "
            "FROM {} WHERE table_name = %s{}"
        ).format(qualified(schema, WATERMARK_TABLE), sql.SQL(" FOR UPDATE" if for_update else "")),
        (table,),
    ).fetchone()
    return Watermark(*row) if row else None


def evolve_merged_table(
    conn: psycopg.Connection,
    schema: str,
    table: CdcTable,
    source: SourceTable,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
) -> tuple[dict[str, str], list[str]]:
    """Create or evolve the merged table for `source`; returns ({column: merged type}, changes
    made). Runs in its own transaction; SchemaError (and nothing changed) on an incompatible column.
    Readers whose locks hold up the ALTER TABLE longer than `terminate_blockers_after` seconds are
    terminated and logged (postgres.locks)."""
    where = f'CDC table "{table.name}" (merged table {schema}."{table.merged_table}")'
    for name, _ in source.columns:
        if name in MERGED_META_COLUMNS:
            raise SchemaError(
                f'{where}: the source column "{name}" has the name of a column the merged table '
                f"adds; "
                "rename it in the source or track the table under a view that renames it."
            )
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        existing = catalog.columns_of(conn, schema, table.merged_table)
        wanted = {n: parsed_type(t) for n, t in source.columns}
        if not existing:
            columns: list[sql.Composable] = [
                sql.SQL("{} {}{}").format(
                    sql.Identifier(n),
                    sql.SQL(str(t)),
                    sql.SQL(" PRIMARY KEY" if n == source.primary_key else ""),
                )
                for n, t in wanted.items()
            ]
            columns += [
                sql.SQL(f"{IS_DELETED} boolean NOT NULL DEFAULT false"),
                sql.SQL(f"{LAST_CHANGE_ID} bigint"),
                sql.SQL(f"{APPLIED_AT} timestamptz"),
            ]
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}) WITH (fillfactor = {})").format(
                    qualified(schema, table.merged_table),
                    sql.SQL(", ").join(columns),
                    sql.Literal(MERGED_FILLFACTOR),
                )
            )
            return {n: str(t) for n, t in wanted.items()}, [
                f"created {schema}.{table.merged_table}"
            ]
        oid = catalog.relation_oid(conn, schema, table.merged_table)
        key = catalog.primary_key(conn, oid) if oid is not None else ()
        if key != (source.primary_key,):
            raise SchemaError(
                f'{where}: the source\'s primary key is "{source.primary_key}", the merged '
                f"table's {', '.join(key) or 'none'}; a changed key needs a new merged table "
                "(drop it and re-sync)."
            )
        _default_fillfactor(conn, qualified(schema, table.merged_table))
        planned = evolution.plan({n: c.parsed for n, c in existing.items()}, wanted)
        if planned.refused:
            column = planned.refused[0]
            raise SchemaError(
                f'{where}, column "{column.name}": the source now has {column.wanted}, the merged '
                f"table {column.live}; these types are incompatible (no widening rule turns one "
                "into the other). Nothing was merged. Change the column back in the source, or "
                "migrate the merged column by hand (ALTER TABLE .. ALTER COLUMN .. TYPE) and run "
                "again."
            )
        if planned.changes:
            with terminating_blockers(conn, terminate_blockers_after, LOGGER):
                conn.execute(evolution.alter_table(schema, table.merged_table, planned.changes))
        return {n: str(t) for n, t in planned.target.items()}, [str(c) for c in planned.changes]


def _default_fillfactor(conn: psycopg.Connection, merged: sql.Composed) -> None:
    """A merged table created before MERGED_FILLFACTOR (and without a fillfactor of its own) gets
    it; it applies to the pages written from now on."""
    options = (
        scalar(
            conn,
            sql.SQL("SELECT reloptions FROM pg_class WHERE oid = {}::regclass").format(
                sql.Literal(merged.as_string(conn))
            ),
        )
        or []
    )
    if not any(o.startswith("fillfactor=") for o in options):
        conn.execute(
            sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
                merged, sql.Literal(MERGED_FILLFACTOR)
            )
        )


def analyze_staging(conn: psycopg.Connection, schema: str, table: CdcTable) -> None:
    """(Last in the staging transaction.) Row count and a small sample for the merge's planner (the
    default sample reads most of a staging table)."""
    conn.execute("SET LOCAL default_statistics_target = 10")
    conn.execute(sql.SQL("ANALYZE {}").format(qualified(schema, table.staging_table)))


def recreate_staging(
    conn: psycopg.Connection,
    schema: str,
    table: CdcTable,
    source: SourceTable,
    types: dict[str, str],
) -> None:
    """(Inside the caller's transaction.) A fresh, empty staging table in COPY order."""
    order = [source.primary_key] + [n for n, _ in source.columns if n != source.primary_key]
    columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in STAGING_META]
    columns += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(types[n])) for n in order]
    staging = qualified(schema, table.staging_table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    conn.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(staging, sql.SQL(", ").join(columns))
    )


def recreate_staging_changes(conn: psycopg.Connection, schema: str, table: CdcTable) -> None:
    """(Inside the staging transaction.) A fresh, empty table for the interval's change-log rows
    (``source.change_rows_query`` order); the merge moves them into the change history."""
    staging = qualified(schema, table.staging_changes_table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    conn.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE {} (_change_id bigint NOT NULL, _action text NOT NULL, "
            "object_id text NOT NULL, changed_at timestamptz NOT NULL)"
        ).format(staging)
    )


def record_changes(
    conn: psycopg.Connection, schema: str, table: CdcTable, renumber: bool = False
) -> int:
    """(Inside the merge transaction.) The staged change-log rows join the change history, stamped
    with the merge's time; returns how many. ON CONFLICT: a row already there stays as it was.
    `renumber` (the logical kind, whose staged ids count 1.. within the batch): the history's
    largest id is added, under the watermark row's lock the merge holds."""
    if not catalog.relation_exists(conn, schema, table.staging_changes_table):
        return 0  # staged before the history existed
    history = qualified(schema, table.changes_table)
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            history,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in CHANGES_COLUMNS
            ),
        )
    )
    offset = (
        sql.SQL("(SELECT COALESCE(max(_change_id), 0) FROM {}) + ").format(history)
        if renumber
        else sql.SQL("")
    )
    return conn.execute(
        sql.SQL(
            "INSERT INTO {} (_change_id, _action, object_id, changed_at, merged_at) "
            "SELECT {}_change_id, _action, object_id, changed_at, now() FROM {} "
            "ON CONFLICT (_change_id) DO NOTHING"
        ).format(history, offset, qualified(schema, table.staging_changes_table))
    ).rowcount


def mark_staged(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    lo: int | None,
    hi: int | None,
    info: dict,
    candidates: list,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET staged_from = %s, staged_to = %s, staged_info = %s, candidates = %s "
            "WHERE table_name = %s"
        ).format(qualified(schema, WATERMARK_TABLE)),
        (lo, hi, json.dumps(info, default=str), json.dumps(candidates), table),
    )


@dataclass
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    soft_deleted: int = 0
    skipped_unknown_deleted: int = 0  # deleted (or gone) objects the merged table never had

    @property
    def rows_merged(self) -> int:
        return self.inserted + self.updated + self.soft_deleted


def merge_staging(
    conn: psycopg.Connection,
    schema: str,
    table: CdcTable,
    source_columns: list[str],
    key: str,
) -> MergeCounts:
    """(Inside the caller's transaction, which holds the watermark row: no other merge of this table
    runs meanwhile.) Staging -> merged: found rows whose last action is added or changed are
    upserted (is_deleted = false); objects whose last action is deleted, or whose row is gone from
    the source, are soft-deleted keeping their last known values. Never a DELETE.

    Where the server has MERGE (PostgreSQL 15+) and counts tuples (``track_counts``, for the
    inserted/updated counts): one UPDATE for the soft deletes, one MERGE for the rest; otherwise
    INSERT .. ON CONFLICT DO UPDATE (a speculative insertion per row, slower). A batch under 1/4 of
    the merged table is joined by index lookups, the staging rows in key order."""
    merged, staging = qualified(schema, table.merged_table), qualified(schema, table.staging_table)
    if UNCHANGED in catalog.columns_of(conn, schema, table.staging_table):
        _fill_unchanged(conn, merged, staging, source_columns, key)
    live_rows, dead_rows = one_row(
        conn,
        sql.SQL(
            "SELECT count(*) FILTER (WHERE {live}), count(*) FILTER (WHERE NOT ({live})) FROM {}"
        ).format(staging, live=_LIVE),
    )
    use_merge = conn.info.server_version >= 150000 and scalar(conn, "SHOW track_counts") == "on"
    parts = dict(
        merged=merged,
        staging=staging,
        key=sql.Identifier(key),
        live=_LIVE,
        is_deleted=sql.Identifier(IS_DELETED),
        last=sql.Identifier(LAST_CHANGE_ID),
        at=sql.Identifier(APPLIED_AT),
    )
    with index_lookup_joins(conn, few_of(live_rows + dead_rows, estimated_rows(conn, merged))):
        soft_deleted = (
            conn.execute(
                sql.SQL(
                    "UPDATE {merged} m SET {is_deleted} = true, {last} = s._change_id, {at} = "
                    "now() FROM {staging} s "
                    "WHERE m.{key} = s.{key} AND NOT (s._row_found AND s._action <> 'deleted')"
                ).format(**parts)
            ).rowcount
            if dead_rows
            else 0
        )
        if not live_rows:
            inserted = updated = 0
        elif use_merge:
            inserted, updated = _merge_live(conn, source_columns, parts)
        else:
            inserted, updated = _upsert_live(conn, source_columns, parts)
    return MergeCounts(inserted, updated, soft_deleted, dead_rows - soft_deleted)


_LIVE = sql.SQL("_row_found AND _action <> 'deleted'")  # on the staging table alone


def _fill_unchanged(
    conn: psycopg.Connection,
    merged: sql.Composed,
    staging: sql.Composed,
    source_columns: list[str],
    key: str,
) -> None:
    """(In the merge transaction.) Staged rows that lack columns (an UPDATE that left a TOAST value
    unchanged: logical decoding does not send it) take them from the merged row, so the upsert
    that follows, shared with the change-log kind, never nulls a column the UPDATE did not
    change. A row the merged table does not have keeps NULL there (it cannot be known)."""
    sets = [
        sql.SQL("{c} = CASE WHEN {name} = ANY(s.{u}) THEN m.{c} ELSE s.{c} END").format(
            c=sql.Identifier(c), name=sql.Literal(c), u=sql.Identifier(UNCHANGED)
        )
        for c in source_columns
        if c != key
    ]
    if sets:
        conn.execute(
            sql.SQL(
                "UPDATE {staging} s SET {sets} FROM {merged} m "
                "WHERE m.{key} = s.{key} AND cardinality(s.{u}) > 0"
            ).format(
                staging=staging,
                merged=merged,
                sets=sql.SQL(", ").join(sets),
                key=sql.Identifier(key),
                u=sql.Identifier(UNCHANGED),
            )
        )


def _merge_live(
    conn: psycopg.Connection, source_columns: list[str], parts: dict
) -> tuple[int, int]:
    """MERGE of the live staging rows; (inserted, updated) from the transaction's own tuple
    counters."""
    cols = [sql.Identifier(c) for c in source_columns]
    sets = [sql.SQL("{c} = s.{c}").format(c=c) for c in cols if c != parts["key"]]
    counters = sql.SQL(
        "SELECT pg_stat_get_xact_tuples_inserted(r), pg_stat_get_xact_tuples_updated(r) "
        "FROM (SELECT {}::regclass AS r) x"
    ).format(sql.Literal(parts["merged"].as_string(conn)))
    before = one_row(conn, counters)
    conn.execute(
        sql.SQL(
            "MERGE INTO {merged} m USING (SELECT * FROM {staging} WHERE {live}) s ON m.{key} = "
            "s.{key} "
            "WHEN MATCHED THEN UPDATE SET {sets}, {is_deleted} = false, {last} = s._change_id, "
            "{at} = now() "
            "WHEN NOT MATCHED THEN INSERT ({cols}, {is_deleted}, {last}, {at}) VALUES ({values}, "
            "false, s._change_id, now())"
        ).format(
            sets=sql.SQL(", ").join(sets),
            cols=sql.SQL(", ").join(cols),
            values=sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in cols),
            **parts,
        )
    )
    after = one_row(conn, counters)
    return after[0] - before[0], after[1] - before[1]


def _upsert_live(
    conn: psycopg.Connection, source_columns: list[str], parts: dict
) -> tuple[int, int]:
    cols = [sql.Identifier(c) for c in source_columns]
    sets: list[sql.Composable] = [
        sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in cols if c != parts["key"]
    ]
    sets += [
        sql.SQL(
            f"{IS_DELETED} = false, {LAST_CHANGE_ID} = EXCLUDED.{LAST_CHANGE_ID}, {APPLIED_AT} = "
            f"EXCLUDED.{APPLIED_AT}"
        )
    ]
    inserted, updated = one_row(
        conn,
        sql.SQL(
            "WITH up AS (INSERT INTO {merged} ({cols}, {meta}) SELECT {cols}, false, _change_id, "
            "now() FROM {staging} "
            "WHERE {live} ON CONFLICT ({key}) DO UPDATE SET {sets} RETURNING (xmax = 0) AS "
            "inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"
        ).format(
            cols=sql.SQL(", ").join(cols),
            meta=sql.SQL(", ").join(map(sql.Identifier, MERGED_META_COLUMNS)),
            sets=sql.SQL(", ").join(sets),
            **parts,
        ),
    )
    return inserted, updated


def staging_counts(conn: psycopg.Connection, schema: str, table: CdcTable) -> dict[str, int]:
    """Staged objects by last action, plus `gone` (added/changed objects whose row the source no
    longer has)."""
    counts = {"added": 0, "changed": 0, "deleted": 0, "gone": 0}
    for action, found, count in conn.execute(
        sql.SQL("SELECT _action, _row_found, count(*) FROM {} GROUP BY 1, 2").format(
            qualified(schema, table.staging_table)
        )
    ):
        counts[action] = counts.get(action, 0) + count
        if not found and action != "deleted":
            counts["gone"] += count
    return counts


def stage_missing_as_gone(
    conn: psycopg.Connection, schema: str, table: CdcTable, key: str, change_id: int
) -> None:
    """(Full resync, after staging every source row.) Live merged keys that staging lacks are
    staged as gone, so the merge soft-deletes them."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {staging} (_change_id, _action, _row_found, {key}) "
            "SELECT {id}, 'changed', false, m.{key} FROM {merged} m WHERE NOT m.{is_deleted} "
            "AND NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.{key} = m.{key})"
        ).format(
            staging=qualified(schema, table.staging_table),
            merged=qualified(schema, table.merged_table),
            key=sql.Identifier(key),
            id=sql.Literal(change_id),
            is_deleted=sql.Identifier(IS_DELETED),
        )
    )


def finish_merge(conn: psycopg.Connection, schema: str, table: str, watermark: Watermark) -> None:
    """(Inside the merge transaction.) Move the watermark to the staged horizon."""
    info = watermark.staged_info or {}
    conn.execute(
        sql.SQL(
            "UPDATE {} SET horizon_id = staged_to, staged_from = NULL, staged_to = NULL, "
            "staged_info = NULL, "
            "last_change_id = COALESCE(%s, last_change_id), last_change_at = "
            "COALESCE(%s::timestamptz, last_change_at), "
            "applied_at = now() WHERE table_name = %s"
        ).format(qualified(schema, WATERMARK_TABLE)),
        (info.get("last_change_id"), info.get("last_change_at"), table),
    )


def truncate_staging(conn: psycopg.Connection, schema: str, table: CdcTable) -> None:
    for name in (table.staging_table, table.staging_changes_table):
        if catalog.relation_exists(conn, schema, name):
            with conn.transaction():
                conn.execute(sql.SQL("TRUNCATE {}").format(qualified(schema, name)))


def staging_row_count(conn: psycopg.Connection, schema: str, table: CdcTable) -> int:
    if not catalog.relation_exists(conn, schema, table.staging_table):
        return 0
    return scalar(
        conn, sql.SQL("SELECT count(*) FROM {}").format(qualified(schema, table.staging_table))
    )


def all_watermarks(conn: psycopg.Connection, config: CdcConfig) -> dict[str, int]:
    if not catalog.relation_exists(conn, config.warehouse_schema, WATERMARK_TABLE):
        return {}
    return dict(
        conn.execute(
            sql.SQL("SELECT table_name, horizon_id FROM {}").format(
                qualified(config.warehouse_schema, WATERMARK_TABLE)
            )
        ).fetchall()
    )
