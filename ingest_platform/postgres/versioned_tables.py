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

Loading one version: three steps, each its own transaction
----------------------------------------------------------
1. ``begin_version_load``: creates schema, registry and an empty parent if missing, checks the
   evolution, drops load tables that crashed loads of this table+version left behind, creates a
   fresh *load table* (not inherited: invisible through the parent) in the target types, its
   ``_version`` default and CHECK already in place (COPY checks each row; attach scans nothing).
   Returns a picklable ``VersionLoad``. Serialized per schema by an advisory lock (no race on
   CREATE SCHEMA/TABLE IF NOT EXISTS). A second begin of the same table+version drops the first
   one's load table (the newest begin wins; the older load fails on COPY or attach).
2. ``copy_into``: ``COPY load_table FROM STDIN`` from COPY-text chunks; any number of workers,
   each on its own connection, concurrently. Readers of the parent see nothing of it.
3. ``attach_version``: one short transaction holding ACCESS EXCLUSIVE on the parent: evolves the
   parent and the load table to each other (another version may have evolved the parent since
   step 1), drops the previous child of this version, renames the load table to the child name,
   INHERITs and registers it. A reader of the parent waits for this transaction and then sees the
   new child; before it, the old one. (PostgreSQL DDL is not MVCC-safe: a REPEATABLE READ
   transaction whose snapshot predates the COPY's commit and that first touches the version after
   the attach sees it empty. Transactions that read before the attach keep the old child: the
   attach waits for them.)
On any failure call ``abandon_version_load``: it drops the load table; nothing else changed.

Write steps need a connection without an open transaction and commit on their own. Every name
goes through ``psycopg.sql.Identifier``; values are parameters, or ``sql.Literal`` where
PostgreSQL's DDL takes no parameters (DEFAULT, CHECK, COMMENT).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ingest_platform.dumps.schema import MAX_COLUMNS, TableSchema
from ingest_platform.errors import IngestError, SchemaError, first_line
from ingest_platform.postgres import evolution
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
from ingest_platform.postgres.quarantine import QUARANTINE_TABLE
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


@dataclass(frozen=True)
class AttachResult:
    child_table: str
    rows: int  # rows in the attached child
    changes: tuple[
        str, ...
    ]  # applied to the parent, e.g. 'widen column "Id" from integer to bigint'
    replaced_previous: bool  # an earlier load of this version was dropped


# ----------------------------------------------------------------------------- names


def parent_table_name(table: str) -> str:
    return fit_identifier(table)


def child_table_name(table: str, version: str) -> str:
    return fit_identifier(table, f"__v{version}")


def load_table_name(table: str, version: str, token: str) -> str:
    return fit_identifier(table, f"__v{version}__load_{token}")


# ----------------------------------------------------------------------------- the load steps


def begin_version_load(
    conn: psycopg.Connection, schema: str, table_schema: TableSchema, version: str
) -> VersionLoad:
    """Step 1: check the evolution and create an empty load table. Commits."""
    table = table_schema.name
    declared = _declared_columns(schema, table_schema, version)
    parent, child = parent_table_name(table), child_table_name(table, version)
    load_table = load_table_name(table, version, secrets.token_hex(4))
    with _transaction(conn):
        # One begin per schema at a time: CREATE ... IF NOT EXISTS races with itself.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ingest_platform.versioned_tables'), "
            "hashtext(%s))",
            (schema,),
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        registry.create_registry(conn, schema)
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} text)").format(
                qualified(schema, parent), sql.Identifier(VERSION_COLUMN)
            )
        )
        parent_oid, parent_columns = _parent_columns(conn, schema, parent)
        target, changes = _plan(conn, schema, table, version, parent_columns, declared, declared)
        _check_child_name_free(conn, schema, table, version, child, parent_oid)
        _check_types_exist(conn, table, version, declared)
        for stale in registry.load_tables_of(conn, schema, table, version):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(schema, stale)))
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
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                qualified(schema, load_table), sql.Literal(registry.load_marker(table, version))
            )
        )
    return VersionLoad(
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
    )


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
        raise IngestError(
            f'The load table of "{load.table}" version {load.version} is gone: the load was '
            f"abandoned, "
            "or begun again elsewhere (which drops older load tables). Begin the load again."
        ) from None


def _null_string(chunk: bytes | tuple[bytes, str]) -> str:
    return "\\N" if isinstance(chunk, bytes) else chunk[1]


def attach_version(
    conn: psycopg.Connection,
    load: VersionLoad,
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    in_attach: Callable[[psycopg.Connection], None] | None = None,
) -> AttachResult:
    """Step 3: make the loaded rows the version's child, in one short transaction. Commits.

    `in_attach` runs inside that transaction, after the child is registered: what must change
    with the child, atomically (the version's quarantined records).

    Backends whose locks keep the attach waiting longer than `terminate_blockers_after` seconds
    (a reader's long transaction on the parent or the old child) are terminated and logged
    (``postgres.locks``; None: wait as long as it takes).
    """
    with _transaction(conn):
        _load_table_oid(conn, load)
        # Counted and analyzed before the parent is locked: nobody else writes a load table now.
        rows = scalar(
            conn,
            sql.SQL("SELECT count(*) FROM ONLY {}").format(qualified(load.schema, load.load_table)),
        )
        conn.execute(sql.SQL("ANALYZE {}").format(qualified(load.schema, load.load_table)))
    for attempt in range(1, _ATTACH_ATTEMPTS + 1):
        try:
            with terminating_blockers(conn, terminate_blockers_after, logger), _transaction(conn):
                changes, replaced = _attach(conn, load, rows)
                if in_attach is not None:
                    in_attach(conn)
            return AttachResult(load.child_table, rows, tuple(str(c) for c in changes), replaced)
        except psycopg.errors.DeadlockDetected:
            if attempt == _ATTACH_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _attach(
    conn: psycopg.Connection, load: VersionLoad, rows: int
) -> tuple[list[evolution.ColumnPlan], bool]:
    schema = load.schema
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
    )
    return parent_changes, replaced


def abandon_version_load(conn: psycopg.Connection, load: VersionLoad) -> None:
    """Drop the load table of a failed load (no-op once attached or already dropped). Commits."""
    with _transaction(conn):
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(load.schema, load.load_table))
        )


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
) -> tuple[int, dict[str, PgType]]:
    """The parent's oid and columns (without the version column)."""
    oid = relation_oid(conn, schema, parent)
    found = {c.name: c.parsed for c in columns(conn, oid)} if oid is not None else {}
    if oid is None or VERSION_COLUMN not in found:
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
    conn: psycopg.Connection, schema: str, table: str, version: str, child: str, parent_oid: int
) -> None:
    """The child's name may hold only an earlier load of this version (replaced at attach)."""
    oid = relation_oid(conn, schema, child)
    if oid is not None and not inherits_from(conn, oid, parent_oid):
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
        raise IngestError(
            f'The load table of "{load.table}" version {load.version} is gone: the load was '
            f"abandoned, "
            "attached already, or begun again elsewhere. Begin the load again."
        )
    return oid


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
