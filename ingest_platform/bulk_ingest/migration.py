"""Create a table from its SQLAlchemy definition, or migrate the live table to it.

- Missing: CREATE SCHEMA/TABLE/INDEX, one transaction.
- Only new nullable columns: ``ALTER TABLE .. ADD COLUMN`` in place (an instant catalog change under
  a brief ACCESS EXCLUSIVE lock).
- Anything else (a type, nullability, the primary key, a dropped column, the indexes, a NOT NULL
  column): one transaction that
    1. takes SHARE on the live table (writers wait, readers go on reading the old rows),
    2. checks each type change that is not a widening for values the new type would change or
       reject (cast there and back; the first such value is named in the SchemaError),
    3. creates the new table under a temporary name, copies the rows (INSERT .. SELECT with casts),
       builds its indexes under temporary names,
    4. takes ACCESS EXCLUSIVE on the live table (readers wait from here to the commit: the swap),
       drops the dependent views (materialized ones too, views on views included), drops the
       old table, renames the new one and its indexes, recreates the views (their grants, owners,
       comments, materialized views' indexes and populated state), re-grants the table's
       privileges, owner and comment, and commits.
  Any error rolls all of it back: the table is as before.
Backends that hold a conflicting lock are terminated after ``terminate_blockers_after`` seconds
(``locks.terminating_blockers``); the log names each.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from psycopg import sql

from ingest_platform.bulk_ingest.table_defs import (
    Changes,
    TableDef,
    live_definition,
    plan_changes,
    target_definition,
)
from ingest_platform.errors import SchemaError, first_line
from ingest_platform.postgres import evolution
from ingest_platform.postgres.catalog import default_constraint_name, qualified
from ingest_platform.postgres.connection import one_row, scalar
from ingest_platform.postgres.locks import terminating_blockers

_ADVISORY_NAMESPACE = "ingest_platform.bulk_ingest.migration"

# Called inside the rebuild transaction after the copy, before ACCESS EXCLUSIVE (tests use it).
BeforeSwap = Callable[[psycopg.Connection, TableDef], None]


@dataclass(frozen=True)
class DependentView:
    schema: str
    name: str
    materialized: bool
    definition: str
    populated: bool
    options: list[str] | None
    owner: str
    comment: str | None
    grants: list[tuple[str, str, bool]]  # (grantee or PUBLIC, privilege, grantable)
    indexes: list[str]  # CREATE INDEX statements (materialized views)

    @property
    def qualified(self) -> sql.Composed:
        return qualified(self.schema, self.name)

    @property
    def kind(self) -> sql.SQL:
        return sql.SQL("MATERIALIZED VIEW" if self.materialized else "VIEW")


def prepare_table(
    conn: psycopg.Connection,
    table: sa.Table,
    dialect,
    default_schema: str,
    *,
    terminate_blockers_after: float | None,
    logger: logging.Logger,
    before_swap: BeforeSwap | None = None,
) -> list[str]:
    """Make the live table match `table`. Returns what was done (empty if nothing). Commits."""
    target = target_definition(table, dialect, default_schema)
    with conn.transaction():
        _lock_definition(conn, target)
        live = live_definition(conn, target.schema, target.name)
        if live is None:
            _create(conn, table, target, dialect)
            logger.info("Created table %s", target.display)
            return [f"create table {target.display}"]
        changes = plan_changes(live, target)
        if not changes.needed:
            return []
        if not changes.rebuild_reasons:
            with terminating_blockers(conn, terminate_blockers_after, logger):
                conn.execute(evolution.alter_table(target.schema, target.name, changes.in_place))
            done = [f'add nullable column "{c.name}" {c.type}' for c in changes.add_nullable]
            logger.info("Migrated %s in place: %s", target.display, "; ".join(done))
            return done
        _rebuild(
            conn,
            table,
            live,
            target,
            changes,
            dialect,
            terminate_blockers_after,
            logger,
            before_swap,
        )
    done = [
        f'add nullable column "{c.name}" {c.type}' for c in changes.add_nullable
    ] + changes.rebuild_reasons
    logger.info("Rebuilt %s: %s", target.display, "; ".join(done))
    return done


def _lock_definition(conn: psycopg.Connection, target: TableDef) -> None:
    # One migration of a table at a time (CREATE .. IF NOT EXISTS and the rebuild race otherwise).
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
        (_ADVISORY_NAMESPACE, target.display),
    )
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target.schema)))


def _create(conn: psycopg.Connection, table: sa.Table, target: TableDef, dialect) -> None:
    copy = _renamed_copy(table, target.schema, target.name)
    conn.execute(str(sa.schema.CreateTable(copy).compile(dialect=dialect)))
    for index in table.indexes:
        conn.execute(str(sa.schema.CreateIndex(index).compile(dialect=dialect)))


def _renamed_copy(table: sa.Table, schema: str, name: str) -> sa.Table:
    """`table`'s columns, primary key and unique constraints under another name, without indexes.
    No SERIAL: ingest() supplies every value, and a sequence would not survive a rebuild."""
    metadata = sa.MetaData()
    columns = [
        sa.Column(
            c.name,
            c.type,
            nullable=c.nullable,
            primary_key=c.primary_key,
            autoincrement=False,
            server_default=getattr(c.server_default, "arg", None),
        )
        for c in table.columns
    ]
    uniques = [
        sa.UniqueConstraint(*(c.name for c in u.columns))
        for u in table.constraints
        if isinstance(u, sa.UniqueConstraint)
    ]
    return sa.Table(name, metadata, *columns, *uniques, schema=schema)


def _rebuild(
    conn,
    table,
    live: TableDef,
    target: TableDef,
    changes: Changes,
    dialect,
    terminate_after: float | None,
    logger: logging.Logger,
    before_swap: BeforeSwap | None,
) -> None:
    with terminating_blockers(conn, terminate_after, logger):
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(live.qualified))
    _check_type_changes(conn, live, target, changes)
    new_name = f"_ingest_new_{secrets.token_hex(6)}"
    new = TableDef(target.schema, new_name, target.columns, target.primary_key, target.indexes)
    conn.execute(
        str(
            sa.schema.CreateTable(_renamed_copy(table, target.schema, new_name)).compile(
                dialect=dialect
            )
        )
    )
    live_columns = live.column_map
    common = [c for c in target.columns if c.name in live_columns]
    cast = {t.column for t in changes.type_changes if not t.widening}
    selected = [
        sql.SQL("CAST({} AS {})").format(sql.Identifier(c.name), sql.SQL(c.type))
        if c.name in cast
        else sql.Identifier(c.name)
        for c in common
    ]
    try:
        with conn.transaction():  # a savepoint, so the message can name the table
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM ONLY {}").format(
                    new.qualified,
                    sql.SQL(", ").join(sql.Identifier(c.name) for c in common),
                    sql.SQL(", ").join(selected),
                    live.qualified,
                )
            )
    except psycopg.errors.DataError as exc:
        raise SchemaError(
            f"Migrating {live.display} ({'; '.join(changes.rebuild_reasons)}) would lose data: "
            f"{first_line(exc)}. Nothing changed; fix the rows or the definition."
        ) from None
    except psycopg.IntegrityError as exc:
        raise SchemaError(
            f"The rows of {live.display} do not fit its new definition "
            f"({'; '.join(changes.rebuild_reasons)}): {first_line(exc)}. Nothing changed; "
            "fix the rows or the definition."
        ) from None
    index_names = []
    for index in table.indexes:
        temporary = f"_ingest_ix_{secrets.token_hex(6)}"
        conn.execute(
            sql.SQL("CREATE {}INDEX {} ON {} ({})").format(
                sql.SQL("UNIQUE " if index.unique else ""),
                sql.Identifier(temporary),
                new.qualified,
                sql.SQL(", ").join(sql.Identifier(c.name) for c in index.columns),
            )
        )
        index_names.append((temporary, _index_name(index, dialect)))
    if live.oid is None:
        raise AssertionError(f"{live.display} was read from the catalog, so it has an oid")
    views = dependent_views(conn, live.oid)
    grants, owner, comment = _table_privileges(conn, live.oid)
    if before_swap is not None:
        before_swap(conn, live)
    with terminating_blockers(conn, terminate_after, logger):
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(live.qualified))
    for view in reversed(views):
        conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(view.kind, view.qualified))
    try:
        conn.execute(sql.SQL("DROP TABLE {}").format(live.qualified))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise SchemaError(
            f"{live.display} cannot be rebuilt: {first_line(exc)} (other than views, which are "
            "recreated). Drop or change those objects first. Nothing changed."
        ) from None
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(new.qualified, sql.Identifier(target.name))
    )
    for temporary, final in index_names:
        conn.execute(
            sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                sql.Identifier(target.schema), sql.Identifier(temporary), sql.Identifier(final)
            )
        )
    if target.primary_key:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                target.qualified,
                sql.Identifier(f"{new_name}_pkey"),
                sql.Identifier(default_constraint_name(target.name, "pkey")),
            )
        )
    _restore_privileges(conn, sql.SQL("TABLE"), target.qualified, grants, owner, comment)
    for view in views:
        _recreate_view(conn, view, target.display)


def _index_name(index: sa.Index, dialect) -> str:
    """The name SQLAlchemy gives the index (naming conventions applied), unquoted."""
    name = dialect.identifier_preparer.format_index(index)
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _check_type_changes(
    conn: psycopg.Connection, live: TableDef, target: TableDef, changes: Changes
) -> None:
    """SchemaError naming the first value that a type change that is not a widening would alter."""
    for change in changes.type_changes:
        if change.widening:
            continue
        column, old, new = change.column, change.old, change.new
        name = sql.Identifier(column)
        try:
            with conn.transaction():
                row = conn.execute(
                    sql.SQL(
                        "SELECT {}::text FROM ONLY {} WHERE {} IS NOT NULL "
                        "AND CAST(CAST({} AS {}) AS {}) IS DISTINCT FROM {} LIMIT 1"
                    ).format(name, live.qualified, name, name, sql.SQL(new), sql.SQL(old), name)
                ).fetchone()
        except (
            psycopg.errors.DataError,
            psycopg.errors.CannotCoerce,
            psycopg.errors.UndefinedFunction,
            psycopg.errors.DatatypeMismatch,
        ) as exc:
            raise SchemaError(
                f'Migrating {live.display}: column "{column}" cannot change from {old} to {new}: '
                f"{first_line(exc)}. Nothing changed; convert the values yourself or keep the type."
            ) from None
        if row is not None:
            raise SchemaError(
                f'Migrating {live.display}: column "{column}" cannot change from {old} to {new} '
                f"without losing "
                f"data: the value {row[0]!r} would change. Nothing changed; convert the values "
                f"yourself or "
                "keep the type."
            )


# ------------------------------------------------------------------------- views and privileges

_DEPENDENT_VIEWS = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = %(oid)s AND r.ev_class <> %(oid)s
  UNION
    SELECT r.ev_class, deps.depth + 1
    FROM deps JOIN pg_depend d ON d.refobjid = deps.oid
      AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> deps.oid AND deps.depth < 50
)
SELECT n.nspname, c.relname, c.relkind = 'm', pg_get_viewdef(c.oid), c.relispopulated, c.reloptions,
       pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'),
       ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = c.oid),
       c.oid
FROM (SELECT oid, max(depth) AS depth FROM deps GROUP BY oid) v
JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY v.depth, c.oid
"""


def dependent_views(conn: psycopg.Connection, oid: int) -> list[DependentView]:
    """Views and materialized views on the table, directly or through other views; creation
    order."""
    views = []
    for (
        schema,
        name,
        materialized,
        definition,
        populated,
        options,
        owner,
        comment,
        indexes,
        view_oid,
    ) in conn.execute(_DEPENDENT_VIEWS, {"oid": oid}).fetchall():
        grants, _, _ = _table_privileges(conn, view_oid)
        views.append(
            DependentView(
                schema,
                name,
                materialized,
                definition.rstrip().rstrip(";"),
                populated,
                options,
                owner,
                comment,
                grants,
                list(indexes),
            )
        )
    return views


def _table_privileges(
    conn: psycopg.Connection, oid: int
) -> tuple[list[tuple[str, str, bool]], str, str | None]:
    grants = [
        (grantee, privilege, grantable)
        for grantee, privilege, grantable in conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
            "a.privilege_type, "
            "       a.is_grantable "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s AND a.grantee <> c.relowner",
            (oid,),
        )
    ]
    owner, comment = one_row(
        conn,
        "SELECT pg_get_userbyid(relowner), obj_description(oid, 'pg_class') "
        "FROM pg_class WHERE oid = %s",
        (oid,),
    )
    return grants, owner, comment


def _restore_privileges(
    conn: psycopg.Connection,
    kind: sql.SQL,
    qualified: sql.Composed,
    grants: list[tuple[str, str, bool]],
    owner: str,
    comment: str | None,
) -> None:
    current_user = scalar(conn, "SELECT current_user")
    if owner != current_user:
        conn.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(kind, qualified, sql.Identifier(owner))
        )
    for grantee, privilege, grantable in grants:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),
                qualified,
                sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )
    if comment is not None:
        conn.execute(
            sql.SQL("COMMENT ON {} {} IS {}").format(kind, qualified, sql.Literal(comment))
        )


def _recreate_view(conn: psycopg.Connection, view: DependentView, table: str) -> None:
    options: sql.Composable = sql.SQL("")
    if view.options and not view.materialized:
        options = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in view.options))
    data = (
        sql.SQL(" WITH DATA" if view.populated else " WITH NO DATA")
        if view.materialized
        else sql.SQL("")
    )
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("CREATE {} {}{} AS {}{}").format(
                    view.kind, view.qualified, options, sql.SQL(view.definition), data
                )
            )
    except psycopg.Error as exc:
        raise SchemaError(
            f"The view {view.schema}.{view.name} on {table} no longer works with the table's new "
            f"definition: "
            f"{first_line(exc)}. Nothing changed; drop or change the view first."
        ) from None
    for index in view.indexes:
        conn.execute(index)
    _restore_privileges(conn, view.kind, view.qualified, view.grants, view.owner, view.comment)
