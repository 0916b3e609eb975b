"""Versioned dumps in PostgreSQL: one *parent table* per dump table, one *version table* (child)
per dump version that INHERITS it, so ``SELECT * FROM S."T"`` sees every version at once.

Layout in schema S (one schema per application)
-----------------------------------------------
- ``S."T"``: the parent. The nullable union of every version's columns, plus ``_version text``.
  It holds no rows itself.
- ``S."T__v<version>"`` (``child_table_name``): one per version, with
  ``_version text NOT NULL DEFAULT '<version>'`` and ``CHECK (_version = '<version>')``, so
  ``WHERE _version = '<version>'`` on the parent scans only that child (constraint_exclusion).
  Names longer than PostgreSQL's 63 bytes keep a readable prefix, a hash and the version.
- ``S."_ingest_versions"``: the registry, one row per (table_name, version): child_table, rows,
  columns ([{name, type as loaded, declared type}] in file order), primary_key, loaded_at.

Schema evolution (rules in ``type_widening``): a new column is added to the parent (older
children read NULL); a wider type widens the parent (ALTER TYPE rewrites the children whose
storage changes); a narrower type changes nothing; anything else is a SchemaError naming the
table, column, both types and both versions, raised before any data moves.

Loading one version: every table of a dump is staged, then all are attached at once
-------------------------------------------------------------------------------------
Readers query across the tables of a version, so a version becomes visible whole or not at all.
1. ``begin_version_load``: creates schema and registry if missing, checks the evolution, drops the
   load tables an earlier load of this table+version left behind (crashed, failed or superseded:
   the newest begin wins; callers serialize loads of one version, ``postgres/version_lock.py``),
   creates a fresh *load table* (not inherited: invisible through the parent) in the target types,
   its ``_version`` default and CHECK already in place (COPY checks each row; attach scans
   nothing). Its comment (``version_registry.load_marker``) records the load, state "loading".
   Returns a picklable ``VersionLoad``.
2. ``copy_into``: ``COPY load_table FROM STDIN`` from COPY-text chunks; any number of workers,
   each on its own connection, concurrently. Readers of the parent see nothing of it.
3. ``stage_version_load``: counts and analyzes the load table, writes its quarantined records as
   pending (``postgres/quarantine.py``) and marks it "staged", in one transaction.
4. ``attach_staged``: once every table of the dump is staged, ONE short transaction holding ACCESS
   EXCLUSIVE on each parent: creates the parent if this is its first version (a failed first load
   leaves no empty parent), evolves parent and load table to each other (another version may have
   evolved the parent since step 1), drops the previous child of this version, renames the load
   table to the child name, INHERITs and registers it, publishes its quarantined records; then drops
   the version's load tables of other dumps. Until then the previous load of the version stays,
   whole. A reader of a parent waits for this transaction and then sees the new children; before
   it, the old ones. (PostgreSQL DDL is not MVCC-safe: a REPEATABLE READ transaction whose snapshot
   predates the COPY's commit and that first touches the version after the attach sees it empty.
   Transactions that read before the attach keep the old child: the attach waits for them.)
   ``attach_version`` is steps 3 and 4 for a load of one table.
On a table's failure call ``abandon_version_load``: it drops its load table; nothing visible
changed. The dump's staged tables wait for a re-run of the failed table (``abandon_staged`` drops
them instead).

Write steps need a connection without an open transaction and commit on their own. Every name
goes through ``psycopg.sql.Identifier``; values are parameters, or ``sql.Literal`` where
PostgreSQL's DDL takes no parameters (DEFAULT, CHECK, COMMENT).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ingest_platform.dumps.schema import MAX_COLUMNS, TableSchema
from ingest_platform.errors import IngestError, SchemaError, first_line
from ingest_platform.postgres import etl_log, evolution, quarantine
from ingest_platform.postgres import version_registry as registry
from ingest_platform.postgres.catalog import (
    MAX_IDENTIFIER_BYTES,
    columns,
    fit_identifier,
    has_equality_check,
    inherits_from,
    parent_of,
    parsed_type,
    qualified,
    relation_oid,
)
from ingest_platform.postgres.connection import scalar
from ingest_platform.postgres.copy_errors import CopyRejected, copy_error_details, copy_error_line
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS, terminating_blockers
from ingest_platform.postgres.quarantine import QUARANTINE_TABLE, QuarantinedRecord
from ingest_platform.postgres.type_widening import PgType, parse_pg_type

VERSION_COLUMN = "_version"
VERSION_CHECK = "_version_check"  # name of the CHECK (_version = 'V') constraint on each child
_ATTACH_ATTEMPTS = 3  # an attach that loses a deadlock to a reader is retried
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionLoad:
    """A begun load; picklable, so worker processes can COPY into it."""

    schema: str
    table: str  # the dump's table name
    version: str
    parent_table: str
    child_table: str
    load_table: str
    copy_columns: tuple[tuple[str, str], ...]  # (name, type in the load table), data-file order
    declared_columns: tuple[tuple[str, str], ...]  # (name, the version's own pg type)
    primary_key: tuple[str, ...]
    planned_changes: tuple[str, ...]  # parent changes foreseen at begin (attach decides)
    dump: str = ""  # ``dump_identity`` of its file: the attach joins the staged tables of one dump


@dataclass(frozen=True)
class AttachResult:
    child_table: str
    rows: int  # rows in the attached child
    changes: tuple[
        str, ...
    ]  # applied to the parent, e.g. 'widen column "Id" from integer to bigint'
    replaced_previous: bool  # an earlier load of this version was dropped


# ----------------------------------------------------------------------------- names


def dump_identity(path: Path) -> str:
    """A dump file as the attach and the registry know it: its name, size and modification time
    (a new file of the same name is another dump; a re-run of the same file is the same)."""
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime, UTC)
    return f"{path.name} ({stat.st_size} bytes, modified {modified:%Y-%m-%d %H:%M:%S.%f} UTC)"


def parent_table_name(table: str) -> str:
    return fit_identifier(table)


def child_table_name(table: str, version: str) -> str:
    return fit_identifier(table, f"__v{version}")


def load_table_name(table: str, version: str, token: str) -> str:
    return fit_identifier(table, f"__v{version}__load_{token}")


# ----------------------------------------------------------------------------- the load steps


def begin_version_load(
    conn: psycopg.Connection, schema: str, table_schema: TableSchema, version: str, dump: str = ""
) -> VersionLoad:
    """Step 1: check the evolution and create an empty load table. Commits.

    `dump`: identifies the dump file (``dump_identity``); the attach joins only staged tables of
    one dump."""
    table = table_schema.name
    declared = _declared_columns(schema, table_schema, version)
    parent, child = parent_table_name(table), child_table_name(table, version)
    load_table = load_table_name(table, version, secrets.token_hex(4))
    with _transaction(conn):
        _lock_schema(conn, schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        registry.create_registry(conn, schema)
        parent_oid, parent_columns = _parent_columns(conn, schema, parent)
        target, changes = _plan(conn, schema, table, version, parent_columns, declared, declared)
        _check_child_name_free(conn, schema, table, version, child, parent_oid)
        _check_types_exist(conn, table, version, declared)
        for stale, marker in registry.load_tables(conn, schema, version).items():
            if marker.get("table") == table:
                _drop_load_table(conn, schema, stale)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} ({}, {} text NOT NULL DEFAULT {}, CONSTRAINT {} CHECK ({} = {}))"
            ).format(
                qualified(schema, load_table),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(str(t)))
                    for n, t in target.items()
                ),
                sql.Identifier(VERSION_COLUMN),
                sql.Literal(version),
                sql.Identifier(VERSION_CHECK),
                sql.Identifier(VERSION_COLUMN),
                sql.Literal(version),
            )
        )
        load = VersionLoad(
            schema=schema,
            table=table,
            version=version,
            parent_table=parent,
            child_table=child,
            load_table=load_table,
            copy_columns=tuple((n, str(t)) for n, t in target.items()),
            declared_columns=tuple((n, str(t)) for n, t in declared.items()),
            primary_key=tuple(table_schema.primary_key),
            planned_changes=tuple(str(c) for c in changes),
            dump=dump,
        )
        _mark(conn, load, "loading")
    return load


def copy_into(
    conn: psycopg.Connection, load: VersionLoad, chunks: Iterable[bytes | tuple[bytes, str]]
) -> tuple[int, int]:
    """Step 2: COPY text-format chunks (UTF-8) into the load table. Commits. Returns (rows, bytes).

    A chunk is bytes (NULL written \\N) or (bytes, its COPY NULL string): where the NULL string
    changes, one COPY ends and the next begins, in the same transaction. A rejected row raises
    CopyRejected with its line counted from the first chunk.
    """
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        qualified(load.schema, load.load_table),
        sql.SQL(", ").join(sql.Identifier(name) for name, _ in load.copy_columns),
    )
    rows = sent = 0
    try:
        with _transaction(conn), conn.cursor() as cur:
            cur.execute("SET LOCAL client_encoding TO 'UTF8'")
            for null, group in itertools.groupby(chunks, key=_null_string):
                statement = (
                    copy
                    if null == "\\N"
                    else sql.SQL("{} (NULL {})").format(copy, sql.Literal(null))
                )
                try:
                    with cur.copy(statement) as writer:
                        for chunk in group:
                            data = chunk if isinstance(chunk, bytes) else chunk[0]
                            writer.write(data)
                            sent += len(data)
                except psycopg.DataError as error:
                    message, context = copy_error_details(error)
                    line = copy_error_line(context)
                    raise CopyRejected(
                        message,
                        context,
                        None if line is None else rows + line,
                        isinstance(error, psycopg.errors.CharacterNotInRepertoire),
                    ) from error
                rows += cur.rowcount
            return rows, sent
    except psycopg.errors.UndefinedTable:
        raise IngestError(_load_table_gone(load)) from None


def _null_string(chunk: bytes | tuple[bytes, str]) -> str:
    return "\\N" if isinstance(chunk, bytes) else chunk[1]


def stage_version_load(
    conn: psycopg.Connection,
    load: VersionLoad,
    quarantined: Sequence[QuarantinedRecord] = (),
    dump_name: str = "",
) -> int:
    """Step 3: mark the load table complete, with the records its reject budget set aside (still
    invisible; the quarantine names their dump `dump_name`). Commits. Returns its rows."""
    with _transaction(conn):
        _load_table_oid(conn, load)
        rows = scalar(
            conn,
            sql.SQL("SELECT count(*) FROM ONLY {}").format(qualified(load.schema, load.load_table)),
        )
        # Analyzed now, before the attach locks the parent: nobody else writes a load table.
        conn.execute(sql.SQL("ANALYZE {}").format(qualified(load.schema, load.load_table)))
        quarantine.add_pending(
            conn,
            load.schema,
            load.load_table,
            load.table,
            load.version,
            dump_name or load.dump,
            list(quarantined),
        )
        _mark(conn, load, "staged", rows=rows)
    return rows


@dataclass(frozen=True)
class VersionAttach:
    """What ``attach_staged`` did: the tables it made visible, or the ones still not staged."""

    attached: dict[str, AttachResult]  # dump table name -> its attach
    waiting_for: tuple[str, ...]  # tables of the dump not staged yet (then nothing attached)


def attach_staged(
    conn: psycopg.Connection,
    schema: str,
    version: str,
    dump: str,
    tables: Iterable[str],
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
) -> VersionAttach:
    """Step 4: when every one of `tables` has a staged load from `dump` (or a visible child from
    it already), make the staged ones the version's children in one short transaction, and drop
    the version's load tables of other dumps (superseded loads). Commits. Otherwise
    changes nothing and says which tables it waits for.

    Backends whose locks keep the attach waiting longer than `terminate_blockers_after` seconds
    (a reader's long transaction on a parent or an old child) are terminated and logged
    (``postgres.locks``; None: wait as long as it takes).
    """
    wanted = sorted(set(tables))
    for attempt in range(1, _ATTACH_ATTEMPTS + 1):
        try:
            with terminating_blockers(conn, terminate_blockers_after, logger), _transaction(conn):
                # One attach per version at a time: the last tables to stage may finish together.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                    (f"ingest_platform.attach:{schema}", version),
                )
                found = registry.load_tables(conn, schema, version)
                staged = {
                    marker["table"]: (name, marker)
                    for name, marker in found.items()
                    if marker.get("state") == "staged" and marker.get("dump") == dump
                }
                # A table of the dump whose visible child came from this dump already (a run that
                # reloads some of its tables) keeps it: the version stays one dump's.
                visible = registry.version_dumps(conn, schema, version)
                waiting = tuple(t for t in wanted if t not in staged and visible.get(t) != dump)
                if waiting:
                    return VersionAttach({}, waiting)
                attached = {}
                for table in (t for t in wanted if t in staged):
                    name, marker = staged[table]
                    load = _load_of(marker, name)
                    changes, replaced = _attach(conn, load, marker["rows"])
                    quarantine.publish(conn, schema, table, version, name)
                    attached[table] = AttachResult(
                        load.child_table, marker["rows"], tuple(map(str, changes)), replaced
                    )
                    etl_log.record(  # in the attach's transaction: no attach without its row
                        conn,
                        kind="dump_version",
                        table=f"{schema}.{table}",
                        rows=marker["rows"],
                        version=version,
                        detail={"dump": dump},
                    )
                # Loads of other dumps of this version are superseded. This dump's other load
                # tables may be loading now (its tables load in parallel); a crashed run's are
                # dropped by the next begin of their table.
                for name, marker in found.items():
                    if marker.get("dump") != dump:
                        _drop_load_table(conn, schema, name)
            return VersionAttach(attached, ())
        except psycopg.errors.DeadlockDetected:
            if attempt == _ATTACH_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def attach_version(
    conn: psycopg.Connection,
    load: VersionLoad,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
) -> AttachResult:
    """Steps 3 and 4 for a version of one table: stage it and make it the version's child."""
    stage_version_load(conn, load)
    done = attach_staged(
        conn, load.schema, load.version, load.dump, [load.table], terminate_blockers_after, logger
    )
    return done.attached[load.table]


def _attach(
    conn: psycopg.Connection, load: VersionLoad, rows: int
) -> tuple[list[evolution.ColumnPlan], bool]:
    schema = load.schema
    # The parent appears with the version's first child, never empty before it.
    _lock_schema(conn, schema)
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} text)").format(
            qualified(schema, load.parent_table), sql.Identifier(VERSION_COLUMN)
        )
    )
    # ACCESS EXCLUSIVE, taken first: a reader of the parent then waits for our commit and lists
    # the children afresh. A weaker lock (SHARE ROW EXCLUSIVE) would let a reader list the old
    # child, block on our DROP of it, then skip it as dropped: zero rows for this version.
    # It also serializes attaches of one table, which re-read and evolve the parent.
    conn.execute(
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            qualified(schema, load.parent_table)
        )
    )
    load_oid = _load_table_oid(conn, load)  # again: an abandon may have raced us
    parent_oid, parent_columns = _parent_columns(conn, schema, load.parent_table)
    assert parent_oid is not None  # created above
    load_columns = {c.name: c.parsed for c in columns(conn, load_oid) if c.name != VERSION_COLUMN}
    declared = {n: parse_pg_type(t) for n, t in load.declared_columns}
    target, parent_changes = _plan(
        conn, schema, load.table, load.version, parent_columns, load_columns, declared
    )
    # The load table must match the parent exactly (INHERIT demands equal types): widen it and
    # add the parent's other columns (NULL, no rewrite).
    load_changes = evolution.plan(load_columns, {**parent_columns, **target}).changes
    for table_name, changes in (
        (load.parent_table, parent_changes),
        (load.load_table, load_changes),
    ):
        if changes:
            conn.execute(evolution.alter_table(schema, table_name, changes))

    replaced = _drop_previous_child(conn, load, parent_oid)
    child = qualified(schema, load.child_table)
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            qualified(schema, load.load_table), sql.Identifier(load.child_table)
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} INHERIT {}").format(child, qualified(schema, load.parent_table))
    )
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            child, sql.Literal(f'Version {load.version} of "{load.table}" (ingest_platform)')
        )
    )
    registry.register_version(
        conn,
        schema,
        load.table,
        load.version,
        load.child_table,
        rows,
        [{"name": n, "type": str(t), "declared": str(declared[n])} for n, t in target.items()],
        list(load.primary_key),
        load.dump,
    )
    return parent_changes, replaced


def abandon_version_load(conn: psycopg.Connection, load: VersionLoad) -> None:
    """Drop the load table of a failed load (no-op once attached or already dropped). Commits."""
    with _transaction(conn):
        _drop_load_table(conn, load.schema, load.load_table)


def abandon_staged(conn: psycopg.Connection, schema: str, version: str, dump: str) -> None:
    """Drop every load table of `dump`'s `version` (its other tables failed). Commits."""
    with _transaction(conn):
        for name, marker in registry.load_tables(conn, schema, version).items():
            if marker.get("dump") == dump:
                _drop_load_table(conn, schema, name)


# ----------------------------------------------------------------------------- checks


def version_row_count(
    conn: psycopg.Connection, schema: str, table: str, version: str
) -> int | None:
    """Rows in the version's child, or None if the version is not loaded."""
    with conn.transaction():
        registered = registry.registered_version(conn, schema, table, version)
        if registered is None or relation_oid(conn, schema, registered["child_table"]) is None:
            return None
        return scalar(
            conn,
            sql.SQL("SELECT count(*) FROM ONLY {}").format(
                qualified(schema, registered["child_table"])
            ),
        )


def staged_from(conn: psycopg.Connection, schema: str, table: str, version: str) -> str | None:
    """The dump whose staged load of the table's version waits for its other tables, if any."""
    with conn.transaction():
        return next(
            (
                marker.get("dump") or "the dump"
                for marker in registry.load_tables(conn, schema, version).values()
                if marker.get("table") == table and marker.get("state") == "staged"
            ),
            None,
        )


def conformance_problems(
    conn: psycopg.Connection, schema: str, table: str, version: str
) -> list[str]:
    """What is wrong with the version's child relative to its parent; [] if it conforms."""
    with conn.transaction():
        registered = registry.registered_version(conn, schema, table, version)
        if registered is None:
            return [f'version {version} of table "{table}" is not loaded']
        child = registered["child_table"]
        child_oid = relation_oid(conn, schema, child)
        parent_oid = relation_oid(conn, schema, parent_table_name(table))
        if child_oid is None or parent_oid is None:
            missing = child if child_oid is None else parent_table_name(table)
            return [f'table "{missing}" does not exist in schema "{schema}"']
        problems = []
        if not inherits_from(conn, child_oid, parent_oid):
            problems.append(f'"{child}" does not inherit from "{parent_table_name(table)}"')
        parent_columns = {c.name: c.type for c in columns(conn, parent_oid)}
        child_columns = {c.name: c.type for c in columns(conn, child_oid)}
        for name, parent_type in parent_columns.items():
            if name not in child_columns:
                problems.append(f'column "{name}" is missing')
            elif child_columns[name] != parent_type:
                problems.append(
                    f'column "{name}" is {child_columns[name]}, the parent has {parent_type}'
                )
        problems += [
            f'column "{n}" is not in the parent' for n in child_columns if n not in parent_columns
        ]
        if not has_equality_check(conn, child_oid, VERSION_COLUMN, version):
            problems.append(
                f"CHECK ({VERSION_COLUMN} = '{version}') is missing, so queries by version scan it"
            )
        return problems


# ----------------------------------------------------------------------------- helpers


def _plan(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    version: str,
    parent_columns: dict[str, PgType],
    version_columns: dict[str, PgType],
    declared: dict[str, PgType],
) -> tuple[dict[str, PgType], list[evolution.ColumnPlan]]:
    """Target type of each version column (the parent's when wider) and the parent changes."""
    planned = evolution.plan(parent_columns, version_columns)
    if len(parent_columns.keys() | version_columns.keys()) > MAX_COLUMNS:
        raise SchemaError(
            f'Table "{table}" (version {version}): the parent table would need '
            f"{len(parent_columns.keys() | version_columns.keys())} columns, every version's "
            f"together; PostgreSQL holds {MAX_COLUMNS} besides {VERSION_COLUMN}. Load this "
            "version into another schema, or leave columns out of its schema."
        )
    if planned.refused:
        name = planned.refused[0].name
        raise SchemaError(
            _incompatible(conn, schema, table, name, version, declared[name], parent_columns[name])
        )
    return planned.target, planned.changes


def _incompatible(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    column: str,
    version: str,
    new_type: PgType,
    parent_type: PgType,
) -> str:
    # The version that gave the parent its type: the first load whose column was loaded as it.
    origin = next(
        (
            f"version {r['version']} made it"
            for r in registry.registered_versions(conn, schema, table)
            if r["version"] != version
            and any(
                c["name"] == column and parsed_type(c["type"]) == parent_type for c in r["columns"]
            )
        ),
        "the parent table has it as",
    )
    return (
        f'Table "{table}", column "{column}": version {version} has {new_type}, but {origin} '
        f"{parent_type}; "
        "these types are incompatible (no widening rule turns one into the other). Nothing was "
        "loaded. "
        f'Give the column one "pg_type" that holds both (e.g. text) in every version\'s schema and '
        f"reload "
        f"those versions, or load version {version} into another schema."
    )


def _declared_columns(schema: str, table_schema: TableSchema, version: str) -> dict[str, PgType]:
    table_schema.validate()
    table = table_schema.name
    for name, what in ((schema, "schema"), (table, "table"), (version, "version")):
        if not name:
            raise SchemaError(f"The {what} name is empty; give the dump a name and version.")
    if len(schema.encode()) > MAX_IDENTIFIER_BYTES:
        raise SchemaError(
            f'Schema name "{schema}" is longer than {MAX_IDENTIFIER_BYTES} bytes; choose a shorter '
            f"one."
        )
    if table in (registry.REGISTRY_TABLE, QUARANTINE_TABLE):
        raise SchemaError(
            f'Table "{table}" has the name of one of the platform\'s own tables; rename it in the '
            f"dump."
        )
    declared = {}
    for column in table_schema.columns:
        where = f'Table "{table}", column "{column.name}" (version {version})'
        if column.name == VERSION_COLUMN:
            raise SchemaError(
                f"{where}: the name {VERSION_COLUMN} is reserved for the version; rename the "
                f"column."
            )
        if len(column.name.encode()) > MAX_IDENTIFIER_BYTES:
            raise SchemaError(
                f"{where}: the name is longer than {MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL "
                "truncates; rename the column in the schema."
            )
        try:
            declared[column.name] = parse_pg_type(column.pg_type)
        except ValueError as error:
            raise SchemaError(
                f"{where}: {error}; fix its pg_type or the dialect's type map."
            ) from None
    return declared


def _parent_columns(
    conn: psycopg.Connection, schema: str, parent: str
) -> tuple[int | None, dict[str, PgType]]:
    """The parent's oid and columns (without the version column); (None, {}) before its first
    version is attached."""
    oid = relation_oid(conn, schema, parent)
    if oid is None:
        return None, {}
    found = {c.name: c.parsed for c in columns(conn, oid)}
    if VERSION_COLUMN not in found:
        raise SchemaError(
            f'Table "{parent}" in schema "{schema}" exists but is not a parent table of '
            f"versioned dumps (it has no {VERSION_COLUMN} column); rename or drop it."
        )
    version_of = parent_of(conn, oid)
    if version_of is not None:  # a dump table named like another table's version
        raise SchemaError(
            f'Table "{parent}" in schema "{schema}" is a version of "{version_of}", not a parent '
            "table; rename the dump's table."
        )
    del found[VERSION_COLUMN]
    return oid, found


def _drop_previous_child(conn: psycopg.Connection, load: VersionLoad, parent_oid: int) -> bool:
    registered = registry.registered_version(conn, load.schema, load.table, load.version)
    names = {load.child_table} | ({registered["child_table"]} if registered else set())
    dropped = False
    for name in sorted(names):
        oid = relation_oid(conn, load.schema, name)
        if oid is None:
            continue
        if not inherits_from(conn, oid, parent_oid) and name != (registered or {}).get(
            "child_table"
        ):
            raise SchemaError(_name_taken(load.schema, name, load.table, load.version))
        conn.execute(sql.SQL("DROP TABLE {}").format(qualified(load.schema, name)))
        dropped = True
    return dropped


def _check_child_name_free(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    version: str,
    child: str,
    parent_oid: int | None,
) -> None:
    """The child's name may hold only an earlier load of this version (replaced at attach)."""
    oid = relation_oid(conn, schema, child)
    if oid is not None and (parent_oid is None or not inherits_from(conn, oid, parent_oid)):
        registered = registry.registered_version(conn, schema, table, version)
        if not registered or registered["child_table"] != child:
            raise SchemaError(_name_taken(schema, child, table, version))


def _check_types_exist(
    conn: psycopg.Connection, table: str, version: str, declared: dict[str, PgType]
) -> None:
    """A pg_type PostgreSQL does not know (from a schema or a dialect's map) is named here, with
    its columns, instead of failing the CREATE TABLE of the load table."""
    by_type: dict[str, list[str]] = {}
    for name, parsed in declared.items():
        by_type.setdefault(str(parsed), []).append(name)
    for pg_type, names in by_type.items():
        try:
            conn.execute("SELECT %s::regtype", (pg_type,))
        except (
            psycopg.errors.SyntaxError,
            psycopg.errors.UndefinedObject,
            psycopg.errors.InvalidParameterValue,
        ) as error:
            raise SchemaError(
                f'Table "{table}" (version {version}), column "{names[0]}": PostgreSQL has no '
                f"type {pg_type} ({first_line(error)}); fix the column's pg_type in the schema "
                "or the dialect's type map."
            ) from None


def _name_taken(schema: str, name: str, table: str, version: str) -> str:
    return (
        f'Table "{name}" in schema "{schema}" is not a version of "{table}", but version {version} '
        "needs that name; rename or drop it."
    )


def _load_table_oid(conn: psycopg.Connection, load: VersionLoad) -> int:
    oid = relation_oid(conn, load.schema, load.load_table)
    if oid is None:
        raise IngestError(_load_table_gone(load))
    return oid


def _load_table_gone(load: VersionLoad) -> str:
    return (
        f'The load table of "{load.table}" version {load.version} is gone: the load was '
        "abandoned, attached already, or begun again by another run (which drops older load "
        "tables). Load the version again."
    )


def _lock_schema(conn: psycopg.Connection, schema: str) -> None:
    """One begin or attach per schema at a time: CREATE ... IF NOT EXISTS races with itself."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('ingest_platform.versioned_tables'), hashtext(%s))",
        (schema,),
    )


def _mark(conn: psycopg.Connection, load: VersionLoad, state: str, **fields) -> None:
    """Record the load on its load table (a comment), so a later begin or attach finds it."""
    marker = registry.load_marker(
        table=load.table,
        version=load.version,
        dump=load.dump,
        state=state,
        load=dataclasses.asdict(load),
        **fields,
    )
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            qualified(load.schema, load.load_table), sql.Literal(marker)
        )
    )


def _load_of(marker: dict, load_table: str) -> VersionLoad:
    """The VersionLoad a marker recorded (JSON turned its tuples into lists)."""
    fields = marker["load"]
    return VersionLoad(
        **{
            **fields,
            "copy_columns": tuple(map(tuple, fields["copy_columns"])),
            "declared_columns": tuple(map(tuple, fields["declared_columns"])),
            "primary_key": tuple(fields["primary_key"]),
            "planned_changes": tuple(fields["planned_changes"]),
            "load_table": load_table,
        }
    )


def _drop_load_table(conn: psycopg.Connection, schema: str, load_table: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(schema, load_table)))
    quarantine.discard_pending(conn, schema, load_table)


@contextmanager
def _transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction of our own that commits at the end, whatever the connection's autocommit."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise IngestError(
            "Versioned-table loads commit on their own: pass a connection with no open "
            "transaction (commit or roll back first)."
        )
    with conn.transaction():
        yield
