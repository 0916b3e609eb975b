"""Pull a source's tables into versioned parent/child tables, as a dump version would land.

Snapshot pull (``pull_snapshot``): one consistent snapshot of the source (PostgreSQL REPEATABLE
READ; MySQL ``START TRANSACTION WITH CONSISTENT SNAPSHOT``), every table streamed into a load table
of the version (``versioned_tables.begin_version_load``: the shared evolution rules decide the
types and refuse what dumps refuse), checked against the same snapshot, staged, and all attached
in ONE transaction (``attach_staged``) under the version's lock (``version_lock``). Any failure
drops the load tables: the previous state stays, a failed pull shows nothing.

Incremental pull (``pull_incremental``) of a table with a cursor column and a key, into the
version's existing child: rows after the stored position (cursor, key...) are read in chunks in
that order; each chunk is COPYed into a temporary table and upserted (rows of its keys deleted,
then inserted) with the new position in the SAME warehouse transaction (``bulk_ingest.watermarks``,
key ``fetch:<source>:<table>:<version>``). A pull killed midway resumes after its last committed
chunk and never applies a chunk twice. Deletes: the source's keys are compared with the child's
in buckets (``fetch.deletes``, the child's side kept by ``fetch.bucket_counts`` in the chunks'
transactions; other keys of PostgreSQL sources by ``consistency.compare``), and keys the source
lacks get ``_deleted_at`` (soft delete). A source whose columns differ from the child's (schema
drift) gets a snapshot pull of the table instead, which applies the evolution rules.

Checks on every pull: row counts source vs warehouse, and (PostgreSQL sources) bucket hashes of
every column (``consistency.compare.compare_hashes``), the source read in the pull's own snapshot.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from ingest_platform.bigquery.source import MirrorSource
from ingest_platform.bulk_ingest import watermarks
from ingest_platform.consistency.compare import (
    Comparison,
    PostgresSide,
    compare_hashes,
    missing_in,
    postgres_sides,
    postgres_table,
)
from ingest_platform.consistency.mysql import MySQLSide
from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import IngestError, ServiceUnavailableError
from ingest_platform.fetch import bucket_counts
from ingest_platform.fetch.config import SourceConfig, check_version
from ingest_platform.fetch.deletes import (
    DeleteScan,
    find_deleted,
    integer_key,
    kept_counts,
)
from ingest_platform.fetch.key_arrays import SourceKeys, read_source_keys
from ingest_platform.fetch.key_buckets import Bucketing
from ingest_platform.fetch.sources import (
    MySQLSource,
    PostgresSource,
    SourceGone,
    _after_position,
    _quote_mysql,
    open_source,
)
from ingest_platform.postgres import catalog
from ingest_platform.postgres import version_registry as registry
from ingest_platform.postgres.connection import connect, server_address
from ingest_platform.postgres.version_lock import version_lock
from ingest_platform.postgres.versioned_tables import (
    VERSION_COLUMN,
    VersionLoad,
    abandon_version_load,
    attach_staged,
    begin_version_load,
    stage_version_load,
)

LOGGER = logging.getLogger(__name__)
DELETED_COLUMN = "_deleted_at"  # soft deletes of incrementally pulled tables
CHUNK_ROWS = 50_000  # rows per committed chunk of an incremental pull
READERS = 2  # connections reading a PostgreSQL source's tables at once (one shared snapshot)
RETRIES = 3  # attempts of a pull whose source connection broke
RETRY_PAUSE = 1.0
PULLED_KEYS = sql.Identifier("_fetch_pulled_keys")  # temporary: the keys an incremental pull copied


class CursorWentBackwards(IngestError):
    pass


class CheckFailed(IngestError):
    pass


@dataclass
class TableReport:
    source: str
    app: str
    table: str
    version: str
    mode: str  # "snapshot" | "incremental"
    rows: int  # rows pulled
    seconds: float
    child_table: str = ""
    schema_changes: list[str] = field(default_factory=list)
    deleted: int = 0
    checks: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def fetch(
    warehouse_dsn: str,
    config: SourceConfig,
    incremental: bool = False,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    chunk_rows: int = CHUNK_ROWS,
    environ=None,
    check: bool = True,
) -> list[TableReport]:
    """Pull one source: a snapshot of every table, or (`incremental`) incremental pulls of the
    tables with a cursor whose version is loaded already and a snapshot of the rest. A source
    that breaks off is retried (RETRIES attempts); then a clean failure, nothing visible."""
    for attempt in range(1, RETRIES + 1):
        try:
            return _fetch_once(
                warehouse_dsn, config, incremental, logger, chunk_rows, environ, check
            )
        except SourceGone as error:
            if attempt == RETRIES:
                raise ServiceUnavailableError(
                    f"{error}; gave up after {RETRIES} attempts. Nothing of the failed pull is "
                    "visible; run the fetch again when the source answers."
                ) from None
            logger.warning(f"{error}; retrying ({attempt}/{RETRIES - 1})")
            time.sleep(RETRY_PAUSE * attempt)
    raise AssertionError("unreachable")


def _fetch_once(
    warehouse_dsn: str,
    config: SourceConfig,
    incremental: bool,
    logger: logging.Logger | logging.LoggerAdapter,
    chunk_rows: int,
    environ,
    check: bool,
) -> list[TableReport]:
    source = open_source(config, environ)
    try:
        version = config.version or check_version(
            source.version(config.version_query or ""),
            f"{config.file} [sources.{config.name}] version_query",
        )
        tables = source.list_tables()
        snapshot_tables = list(tables)
        reports: list[TableReport] = []
        if incremental:
            with connect(warehouse_dsn) as wh:
                ready = [
                    t
                    for t in tables
                    if t in config.incremental and _loaded(wh, config.app, t, version)
                ]
            snapshot_tables = [t for t in tables if t not in ready]
            for table in ready:
                report = pull_incremental(
                    warehouse_dsn, source, config, table, version, logger, chunk_rows, check
                )
                if report is None:  # schema drift: a snapshot of the table applies the rules
                    snapshot_tables.append(table)
                else:
                    reports.append(report)
        if snapshot_tables:
            reports = (
                pull_snapshot(
                    warehouse_dsn, source, config, snapshot_tables, version, logger, check
                )
                + reports
            )
        return reports
    finally:
        source.close()


def _loaded(conn: psycopg.Connection, app: str, table: str, version: str) -> bool:
    with conn.transaction():
        if catalog.relation_oid(conn, app, registry.REGISTRY_TABLE) is None:
            return False
        return registry.registered_version(conn, app, table, version) is not None


def _watermark_key(config: SourceConfig, table: str, version: str) -> str:
    return f"fetch:{config.name}:{table}:{version}"


def _declared(config: SourceConfig, schema: TableSchema) -> TableSchema:
    """The version's schema: the source's, plus the soft-delete column of incremental tables."""
    if schema.name not in config.incremental:
        return schema
    extra = Column(DELETED_COLUMN, "timestamptz", "timestamptz")
    return TableSchema(schema.name, [*schema.columns, extra], schema.primary_key)


def _key(config: SourceConfig, schema: TableSchema) -> tuple[str, ...]:
    spec = config.incremental[schema.name]
    key = spec.key or tuple(schema.primary_key)
    if not key:
        raise IngestError(
            f"Source {config.name}, table {schema.name}: no primary key; give key = [...] under "
            f"[sources.{config.name}.incremental.{schema.name}] in {config.file}."
        )
    missing = [c for c in (spec.cursor, *key) if c not in schema.column_names]
    if missing:
        raise IngestError(
            f"Source {config.name}, table {schema.name}: column {missing[0]} (incremental cursor "
            f"or key) is not in the source table; fix it in {config.file}."
        )
    return key


# ----------------------------------------------------------------------------- snapshot


def pull_snapshot(
    warehouse_dsn: str,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    tables: Sequence[str],
    version: str,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    check: bool = True,
) -> list[TableReport]:
    """Every table of `tables` from one snapshot; visible together or not at all."""
    app = config.app
    pull_id = f"fetch {config.name} {secrets.token_hex(4)}"
    reports = []
    loads: list[VersionLoad] = []
    positions: dict[str, tuple | None] = {}
    with version_lock(warehouse_dsn, app, version, logger), connect(warehouse_dsn) as wh:
        try:
            source.begin_snapshot()
            prepared = []
            for table in tables:
                schema = source.table_schema(table)
                load = begin_version_load(wh, app, _declared(config, schema), version, pull_id)
                loads.append(load)
                targets = dict(load.copy_columns)
                columns = [(c.name, targets[c.name]) for c in schema.columns]
                prepared.append(_Prepared(table, schema, load, columns))
            copied = _copy_tables(warehouse_dsn, wh, source, config, prepared)
            for table, schema, load, columns in prepared:
                rows, started = copied[table]
                if table in config.incremental:
                    # The key's index goes with the load table into the child: incremental
                    # upserts find a chunk's rows by it (a dump's child has no index).
                    wh.execute(
                        sql.SQL("CREATE INDEX ON {} ({})").format(
                            catalog.qualified(app, load.load_table),
                            sql.SQL(", ").join(map(sql.Identifier, _key(config, schema))),
                        )
                    )
                    wh.commit()
                checks = []
                if check:
                    with wh.transaction():
                        checks = _check(wh, source, config, table, load.load_table, columns, schema)
                stage_version_load(wh, load)
                if table in config.incremental:
                    positions[table] = _snapshot_position(
                        wh, config, table, load.load_table, schema
                    )
                reports.append(
                    TableReport(
                        config.name,
                        app,
                        table,
                        version,
                        "snapshot",
                        rows,
                        time.perf_counter() - started,
                        load.child_table,
                        list(load.planned_changes),
                        checks=checks,
                    )  # fmt: skip
                )
            source.end()
            done = attach_staged(wh, app, version, pull_id, tables, logger=logger)
            if positions and not done.waiting_for:
                _store_positions(wh, config, version, positions)
            for report in reports:
                attached = done.attached.get(report.table)
                if attached is not None:
                    report.schema_changes = list(attached.changes)
        except BaseException as error:
            source.end()
            for load in loads:
                abandon_version_load(wh, load)
            if isinstance(error, psycopg.OperationalError):
                raise ServiceUnavailableError(
                    f"The warehouse at {server_address(warehouse_dsn)} broke off the pull of "
                    f"source {config.name}; nothing of it is visible. Run the fetch again."
                ) from None
            raise
    return reports


def _snapshot_position(
    wh: psycopg.Connection, config: SourceConfig, table: str, relation: str, schema: TableSchema
) -> tuple | None:
    """The last (cursor, key...) of a snapshot's load table: incremental pulls start after it."""
    order = [config.incremental[table].cursor, *_key(config, schema)]
    with wh.transaction():
        return _last_position(wh, config.app, relation, order)


def _store_positions(
    wh: psycopg.Connection, config: SourceConfig, version: str, positions: dict[str, tuple | None]
) -> None:
    """Written after the attach: a pull that fails before it leaves the old positions, which
    match the old children. A crash between the attach and this leaves a position that is too
    early; the next incremental pull upserts those rows again (idempotent) and converges. (The
    kept key-bucket counts name the old child's oid: the next incremental pull rebuilds them.)"""
    with wh.transaction():
        watermarks.ensure_table(wh, config.app)
        for table, position in positions.items():
            watermarks.write(
                wh, config.app, _watermark_key(config, table, version), position,
                [f"{config.app}.{table}"], "fetch snapshot",
            )  # fmt: skip


def _last_position(
    wh: psycopg.Connection, schema: str, relation: str, order: Sequence[str]
) -> tuple | None:
    ids = sql.SQL(", ").join(map(sql.Identifier, order))
    row = wh.execute(
        sql.SQL("SELECT {} FROM ONLY {} ORDER BY {} LIMIT 1").format(
            ids,
            catalog.qualified(schema, relation),
            sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in order),
        )
    ).fetchone()
    return None if row is None else tuple(row)


class _Prepared(NamedTuple):
    table: str
    schema: TableSchema
    load: VersionLoad
    columns: list[tuple[str, str]]  # (name, warehouse type)


def _copy_tables(
    warehouse_dsn: str,
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    prepared: Sequence[_Prepared],
) -> dict[str, tuple[int, float]]:
    """COPY each table into its load table: {table: (rows, start time)}. A PostgreSQL source
    with several tables is read by READERS connections in ONE snapshot: the pull's transaction
    exports it (``pg_export_snapshot``), the others adopt it (``SET TRANSACTION SNAPSHOT``), so
    they see exactly the same rows. MySQL has no such thing: a second ``START TRANSACTION WITH
    CONSISTENT SNAPSHOT`` is another point in time, and lining them up takes ``FLUSH TABLES WITH
    READ LOCK`` (a global lock the application feels, and a privilege a reader should not need):
    MySQL sources keep one reader."""

    def copy(reader: PostgresSource | MySQLSource, conn: psycopg.Connection, p: _Prepared):
        started = time.perf_counter()
        target = catalog.qualified(config.app, p.load.load_table)
        with conn.transaction(), conn.cursor() as cur:
            if isinstance(reader, MySQLSource):
                rows = reader.copy_into(cur, target, p.table, p.columns, schema=p.schema)
            else:
                rows = reader.copy_into(cur, target, p.table, p.columns)
        return rows, started

    if isinstance(source, MySQLSource) or len(prepared) < 2 or READERS < 2:
        return {p.table: copy(source, wh, p) for p in prepared}
    # The largest tables first, each to the reader with the fewest bytes so far.
    sizes = source.table_bytes([p.table for p in prepared])
    shares: list[list[_Prepared]] = [[] for _ in range(READERS)]
    loads = [0] * READERS
    for p in sorted(prepared, key=lambda p: -sizes.get(p.table, 0)):
        i = loads.index(min(loads))
        shares[i].append(p)
        loads[i] += sizes.get(p.table, 0)
    helpers = [source.sharing(source.export_snapshot()) for _ in shares[1:]]
    try:
        with ThreadPoolExecutor(max_workers=len(helpers)) as pool:

            def run(helper: PostgresSource, share: list[_Prepared]) -> dict:
                with connect(warehouse_dsn) as conn:
                    return {p.table: copy(helper, conn, p) for p in share}

            futures = [
                pool.submit(run, h, share) for h, share in zip(helpers, shares[1:], strict=True)
            ]
            copied = {p.table: copy(source, wh, p) for p in shares[0]}
            for future in futures:
                copied.update(future.result())
            return copied
    finally:
        for helper in helpers:
            helper.close()


# ----------------------------------------------------------------------------- checks


def _check(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    relation: str,
    columns: Sequence[tuple[str, str]],
    schema: TableSchema,
    live_only: bool = False,
) -> list[str]:
    """Counts, and bucket hashes for PostgreSQL sources; CheckFailed names the first difference.
    `live_only`: an incremental pull's child (committed already), rows not soft-deleted."""
    consequence = (
        "the incremental pull's chunks are committed; run a full pull (fetch without "
        "--incremental) to replace the version"
        if live_only
        else "nothing of this pull is visible. Run it again"
    )
    where = (
        sql.SQL(" WHERE {} IS NULL").format(sql.Identifier(DELETED_COLUMN))
        if live_only
        else sql.SQL("")
    )
    theirs = source.count(table)
    ours = wh.execute(
        sql.SQL("SELECT count(*) FROM ONLY {}{}").format(
            catalog.qualified(config.app, relation), where
        )
    ).fetchone()[0]  # type: ignore[index]
    if theirs != ours:
        raise CheckFailed(
            f"Source {config.name}, table {table}: the source has {theirs} rows, the pull "
            f"{ours}; {consequence}."
        )
    checks = [f"counts ok ({ours})"]
    left, right = _hash_sides(wh, source, config, table, relation, columns, schema)
    if live_only:
        _live_rows_only(left)
    result = compare_hashes(left, right, what=f"{config.name}.{table}", max_keys=5)
    if not result.passed:
        raise CheckFailed(
            f"Source {config.name}, table {table}: bucket hashes differ between source and "
            f"warehouse ({result.differing_buckets} buckets; first: "
            f"{result.differences[0] if result.differences else '-'}); {consequence}."
        )
    checks.append(f"hashes ok ({result.buckets} buckets)")
    return checks


def compare_source(
    warehouse_dsn: str,
    config: SourceConfig,
    table: str,
    version: str,
    environ=None,
    max_keys: int = 20,
) -> Comparison:
    """Bucket hashes of every column of a pulled table against its source, now (one source
    snapshot): the differing keys named, with their columns. Rows soft-deleted are left out."""
    source = open_source(config, environ)
    try:
        source.begin_snapshot()
        schema = source.table_schema(table)
        with connect(warehouse_dsn) as wh:
            with wh.transaction():
                registered = registry.registered_version(wh, config.app, table, version)
            if registered is None:
                raise IngestError(
                    f"Source {config.name}: table {table} has no version {version} in the "
                    "warehouse; pull it first (ingest-platform fetch)."
                )
            child = registered["child_table"]
            with wh.transaction():
                have = catalog.columns_of(wh, config.app, child)
                columns = [(c.name, have[c.name].type) for c in schema.columns if c.name in have]
                left, right = _hash_sides(wh, source, config, table, child, columns, schema)
                if DELETED_COLUMN in have:
                    _live_rows_only(left)
                return compare_hashes(left, right, what=f"{config.name}.{table}", max_keys=max_keys)
    finally:
        source.end()
        source.close()


def _hash_sides(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    relation: str,
    columns: Sequence[tuple[str, str]],
    schema: TableSchema,
    source_where: tuple[Sequence[str], tuple] | None = None,
) -> tuple[PostgresSide, PostgresSide | MySQLSide]:
    """The warehouse's table (left) and the source's (right) for the comparison engine, on the
    same columns and key. `source_where`: only the source's rows after ((cursor, key...),
    position). The warehouse is on the left: the source's columns are read as the warehouse's
    types (a type mapped under [types], such as an enum as text, exists only on the source)."""
    spec = config.incremental.get(table)
    key = list((spec.key if spec else ()) or schema.primary_key)
    names = [n for n, _ in columns]
    if isinstance(source, PostgresSource):
        left, right = postgres_sides(
            (wh, config.app, relation),
            (source.conn, config.schema, table),
            columns=names,
            key=key or None,
            names=("warehouse", "source"),
        )
        if source_where is not None:
            order, start = source_where
            _restrict(
                right,
                sql.SQL("({}) > ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, order)),
                    sql.SQL(", ").join(map(sql.Literal, start)),
                ),
            )
        return left, right
    mirror = postgres_table(wh, config.app, relation, columns=names, key=key or None)
    where = ""
    if source_where is not None:
        order, start = source_where
        where, params = _after_position([_quote_mysql(n) for n in order], start)
        where = where % tuple(source.conn.escape(p) for p in params)
    return PostgresSide(wh, mirror, name="warehouse"), MySQLSide(
        lambda statement: source._run(statement, table=table),
        MirrorSource(source.database, table, mirror.columns, mirror.key),
        schema,
        name="source",
        where=where,
    )


def _missed_message(config: SourceConfig, table: str, missed: Sequence) -> str:
    return (
        f"Source {config.name}, table {table}: {len(missed)} row(s) of the source were never "
        f"pulled (first key: {missed[0]}): their cursor is older than the stored watermark (a "
        "transaction that committed late, or rows restored). Run a full pull: ingest-platform "
        f"fetch --config {config.file} --source {config.name} (without --incremental)."
    )


# The checks of an incremental pull, in the pull's source snapshot, without reading every row.
_CONSEQUENCE = (
    "the incremental pull's chunks are committed; run a full pull (fetch without --incremental) "
    "to replace the version"
)


def _check_counts(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    child: str,
    scan: DeleteScan | None,
) -> str:
    """Counts from the delete detection's key buckets (``fetch.deletes``: per bucket, so
    stronger than one total)."""
    if scan is not None:
        if scan.missed:
            raise CheckFailed(_missed_message(config, table, scan.missed))
        theirs, ours = scan.source_rows, scan.warehouse_rows
    else:
        theirs = source.count(table)
        ours = wh.execute(
            sql.SQL("SELECT count(*) FROM ONLY {} WHERE {} IS NULL").format(
                catalog.qualified(config.app, child), sql.Identifier(DELETED_COLUMN)
            )
        ).fetchone()[0]  # type: ignore[index]
    if theirs != ours:
        raise CheckFailed(
            f"Source {config.name}, table {table}: the source has {theirs} rows, the warehouse "
            f"{ours} not deleted; {_CONSEQUENCE}."
        )
    return f"counts ok ({ours})"


def _check_changed_rows(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    child: str,
    columns: Sequence[tuple[str, str]],
    schema: TableSchema,
    start: tuple | None,
) -> str:
    """Bucket hashes of every column of the rows whose cursor is at or after the position the
    pull started from (the rows it copied; the rest were checked when they were pulled). Rows
    whose values changed without their cursor moving break the cursor's contract; only a
    snapshot pull's checks, which hash every row, find those. Both sides are found by index:
    O(rows changed), not O(table)."""
    spec = config.incremental[table]
    key = list(spec.key or schema.primary_key)
    # The rows this pull copied: on the source, those after the position it started from (its
    # (cursor, key) index finds them); in the warehouse, those whose keys it recorded.
    after = None if start is None else ([spec.cursor, *key], start)
    left, right = _hash_sides(wh, source, config, table, child, columns, schema, after)
    # A lateral join from the recorded keys: one lookup in the key's index per row. OFFSET 0
    # keeps PostgreSQL from flattening it into a hash join over a scan of the whole child (as
    # IN (SELECT ...) does too): 1M rows, 10k copied: 950 -> 300 ms.
    left.from_ = sql.SQL(
        "{} AS p CROSS JOIN LATERAL (SELECT * FROM ONLY {} AS t WHERE ({}) = ({})"
        " AND t.{} IS NULL OFFSET 0) AS c"
    ).format(
        PULLED_KEYS,
        catalog.qualified(config.app, child),
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in key),
        sql.SQL(", ").join(
            sql.SQL("p.{}").format(sql.Identifier(f"_pulled_{i}")) for i in range(len(key))
        ),
        sql.Identifier(DELETED_COLUMN),
    )
    left.filtered = False
    left.base = sql.SQL("SELECT {} AS k, md5({}) AS kh, {} AS rh FROM {}").format(
        left.key_text, left.key_text, left.row_expr, left.from_
    )
    result = compare_hashes(left, right, what=f"{config.name}.{table}", max_keys=5)
    if not result.passed:
        raise CheckFailed(
            f"Source {config.name}, table {table}: bucket hashes of the changed rows differ "
            f"between source and warehouse ({result.differing_buckets} buckets; first: "
            f"{result.differences[0] if result.differences else '-'}); {_CONSEQUENCE}."
        )
    return f"hashes of changed rows ok ({result.left_rows} rows)"


# ----------------------------------------------------------------------------- incremental


def pull_incremental(
    warehouse_dsn: str,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    version: str,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    chunk_rows: int = CHUNK_ROWS,
    check: bool = True,
) -> TableReport | None:
    """Upsert the rows after the stored position into the version's child, a committed chunk at
    a time; soft-delete keys the source lost. None: the source's columns changed (schema drift),
    pull a snapshot of the table instead."""
    started = time.perf_counter()
    app = config.app
    schema = source.table_schema(table)
    key = _key(config, schema)
    cursor = config.incremental[table].cursor
    order = [cursor, *key]
    wm_key = _watermark_key(config, table, version)
    with version_lock(warehouse_dsn, app, version, logger), connect(warehouse_dsn) as wh:
        with wh.transaction():
            registered = registry.registered_version(wh, app, table, version)
            child = registered["child_table"] if registered else None
            oid = catalog.relation_oid(wh, app, child) if child else None
            watermarks.ensure_table(wh, app) if oid is not None else None
        if oid is None or child is None:
            return None
        with wh.transaction():
            have = {c.name: c.type for c in catalog.columns(wh, oid)}
            position = watermarks.read(wh, app, wm_key)
        wanted = {c.name for c in schema.columns} | {DELETED_COLUMN, VERSION_COLUMN}
        drift = set(have) != wanted or any(
            catalog.parsed_type(have[c.name]) != catalog.parsed_type(c.pg_type)
            for c in schema.columns
        )
        if drift:
            logger.info(f"{config.name}.{table}: the source's columns changed; pulling a snapshot")
            return None
        columns = [(c.name, have[c.name]) for c in schema.columns]
        # One snapshot of the source for the chunks, the delete detection and the checks: the
        # counts argument of fetch.deletes needs the pull and the key buckets to see the same rows.
        source.begin_snapshot()
        pool, helper = ThreadPoolExecutor(max_workers=1), None
        try:
            if position is not None:
                _check_forwards(source, config, table, cursor, position)
            start = position
            # The chunks keep the key-bucket counts of the delete detection if they are current
            # (else it rebuilds them after the chunks, from a scan of the child).
            deletes = config.incremental[table].deletes
            kept = deletes and kept_counts(source, schema, key)
            counted = None
            if kept:
                with wh.transaction():
                    state = bucket_counts.read(wh, app, child, wm_key, integer_key(schema, key))
                counted = state.bucketing if isinstance(state, bucket_counts.Kept) else None
            keys: Callable[[], SourceKeys | None] | None = None
            if counted is not None and isinstance(source, PostgresSource):
                # The source's keys are read while the chunks are copied: a second connection
                # in the pull's snapshot (the counts argument of fetch.deletes needs it).
                helper = source.sharing(source.export_snapshot())
                keys = pool.submit(read_source_keys, helper, table, key[0], counted.width).result
            source_done = None
            if counted is not None and counted.integer and isinstance(source, MySQLSource):
                # MySQL's one connection reads the keys once the chunks are read, while the
                # warehouse upserts the last one (nothing else may use it until they are in).
                def read_keys() -> None:
                    nonlocal keys
                    keys = pool.submit(
                        read_source_keys, source, table, key[0], counted.width
                    ).result

                source_done = read_keys
            rows, position = _pull_chunks(
                wh, source, config, table, child, columns, schema, order, position, chunk_rows,
                logger, wm_key, counted, source_done,
            )  # fmt: skip
            if source_done is not None and keys is not None:
                keys()  # read: the connection is free again
            checks = []
            if check:  # while a PostgreSQL source's keys are read for the delete detection
                with wh.transaction():
                    checks.append(
                        _check_changed_rows(
                            wh, source, config, table, child, columns, schema, start
                        )
                    )
            deleted, scan = 0, None
            integer = integer_key(schema, key)
            if not deletes:
                pass
            elif kept:
                scan = find_deleted(
                    wh, source, table, app, child, key, integer, wm_key, logger, keys
                )
                deleted = scan.deleted
            elif isinstance(source, PostgresSource):
                deleted = _soft_delete(wh, source, config, table, child, key)
            else:
                logger.warning(
                    f"{config.name}.{table}: deletes are not looked for (key columns other than "
                    "integers and text); a snapshot pull removes deleted rows."
                )
            if scan is not None and scan.missed and not check:
                logger.warning(_missed_message(config, table, scan.missed))
            if check:
                with wh.transaction():
                    checks.insert(0, _check_counts(wh, source, config, table, child, scan))
        finally:
            pool.shutdown(wait=True)
            if helper is not None:
                helper.close()
            source.end()
    return TableReport(
        config.name, app, table, version, "incremental", rows, time.perf_counter() - started,
        child, [], deleted, checks,
    )  # fmt: skip


def _pull_chunks(
    wh: psycopg.Connection,
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    child: str,
    columns: Sequence[tuple[str, str]],
    schema: TableSchema,
    order: Sequence[str],
    position: Any,  # tuple, or None: from the start
    chunk_rows: int,
    logger: logging.Logger | logging.LoggerAdapter,
    wm_key: str,
    counted: Bucketing | None = None,
    source_done: Callable[[], None] | None = None,
) -> tuple[int, tuple | None]:
    """Upsert the rows after `position`, a committed chunk (rows and new position) at a time;
    `counted`: the child's key-bucket counts are kept (``fetch.bucket_counts``), by the chunk's
    transaction too. `source_done`: called once the last chunk is read from the source."""
    app = config.app
    key = order[1:]
    rows = 0
    target = catalog.qualified(app, child)
    stage = sql.Identifier("_fetch_stage")
    keys = sql.SQL(", ").join(map(sql.Identifier, key))
    with wh.transaction():  # the keys this pull copies, for its checks (a session's table)
        wh.execute(
            # Columns named _pulled_<i>: no clash with the child's in the checks' join.
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
                PULLED_KEYS,
                sql.SQL(", ").join(
                    sql.SQL("{} AS {}").format(sql.Identifier(k), sql.Identifier(f"_pulled_{i}"))
                    for i, k in enumerate(key)
                ),
                target,
            )
        )
        wh.execute(sql.SQL("TRUNCATE {}").format(PULLED_KEYS))
    while True:
        with wh.transaction(), wh.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                    stage, target
                )
            )
            after = (order, position)
            if isinstance(source, MySQLSource):
                n = source.copy_into(cur, stage, table, columns, after, chunk_rows, schema)
            else:
                n = source.copy_into(cur, stage, table, columns, after, chunk_rows)
            if n < chunk_rows and source_done is not None:
                source_done()
            if n == 0:
                break
            # Upsert: the chunk's keys replaced whole (a child has no unique index to
            # ON CONFLICT on; dumps load children without one). The chunk's keys are looked up
            # in the key's index: left to itself the planner hash-joins the stage with a scan
            # of the whole child, even with statistics (1M rows, 10k changed: 540 ms).
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            bucket_counts.upsert_chunk(cur, app, child, stage, key, counted)
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(target, stage))
            cur.execute(
                sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(PULLED_KEYS, keys, stage)
            )
            position = _last_position(wh, "pg_temp", "_fetch_stage", order)
            watermarks.write(wh, app, wm_key, position, [f"{app}.{table}"], "fetch incremental")
            if counted is not None:
                bucket_counts.sync_position(wh, app, child)
            rows += n
        logger.info(f"{config.name}.{table}: {rows} rows pulled (position {position})")
        if n < chunk_rows:
            break
    with wh.transaction():
        wh.execute(sql.SQL("ANALYZE {}").format(PULLED_KEYS))  # a join by the key's index
    return rows, position


def _check_forwards(
    source: PostgresSource | MySQLSource,
    config: SourceConfig,
    table: str,
    cursor: str,
    position: tuple,
) -> None:
    """The source's largest cursor below the stored one: rows were restored from a backup or the
    clock went back; an incremental pull would miss rows."""
    largest = source.max_cursor(table, cursor)
    stored = position[0]
    if largest is None:
        behind = True
    elif isinstance(source, MySQLSource):
        behind = str(largest) < str(stored).replace("T", " ")
    else:
        behind = largest < stored
    if behind:
        raise CursorWentBackwards(
            f"Source {config.name}, table {table}: the largest {cursor} in the source is "
            f"{largest}, before the stored watermark {stored}: the cursor went backwards "
            "(a restore, a clock change, or rows rewritten with older values); an incremental "
            "pull would miss rows. Run a full pull: ingest-platform fetch --config "
            f"{config.file} --source {config.name} (without --incremental)."
        )


def _soft_delete(
    wh: psycopg.Connection,
    source: PostgresSource,
    config: SourceConfig,
    table: str,
    child: str,
    key: Sequence[str],
) -> int:
    """Keys the source lacks, found by comparing the key columns in buckets, get _deleted_at."""
    deleted = 0
    while True:
        wh.rollback()
        left, right = postgres_sides(
            (source.conn, config.schema, table),
            (wh, config.app, child),
            columns=list(key),
            key=list(key),
            names=("source", "warehouse"),
        )
        _live_rows_only(right)
        result = compare_hashes(left, right, max_keys=10_000)
        gone = [d.key for d in result.differences if d.status == missing_in("source")]
        wh.rollback()
        if not gone:
            return deleted
        types = {c.name: c.type for c in catalog.columns_of(wh, config.app, child).values()}
        with wh.transaction():
            values = sql.SQL(", ").join(
                sql.SQL("({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{}::{}").format(sql.Literal(k[c]), sql.SQL(types[c])) for c in key
                    )
                )
                for k in gone
            )
            cur = wh.execute(
                sql.SQL(
                    "UPDATE ONLY {} t SET {} = now() FROM (VALUES {}) AS g({}) WHERE ({}) = ({})"
                ).format(
                    catalog.qualified(config.app, child),
                    sql.Identifier(DELETED_COLUMN),
                    values,
                    sql.SQL(", ").join(map(sql.Identifier, key)),
                    sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in key),
                    sql.SQL(", ").join(sql.SQL("g.{}").format(sql.Identifier(k)) for k in key),
                )
            )
            deleted += cur.rowcount
        if not result.more_differences:
            return deleted


def _live_rows_only(side: PostgresSide) -> None:
    """Compare only the rows not soft-deleted (MirrorSource filters have no IS NULL)."""
    _restrict(side, sql.SQL("{} IS NULL").format(sql.Identifier(DELETED_COLUMN)))


def _restrict(side: PostgresSide, condition: sql.Composable) -> None:
    """Compare only the side's rows that meet `condition` (beyond MirrorSource's filters)."""
    glue = sql.SQL(" AND ") if side.filtered else sql.SQL(" WHERE ")
    side.from_ = sql.SQL("{}{}{}").format(side.from_, glue, condition)
    side.filtered = True
    side.base = sql.SQL("SELECT {} AS k, md5({}) AS kh, {} AS rh FROM {}").format(
        side.key_text, side.key_text, side.row_expr, side.from_
    )
