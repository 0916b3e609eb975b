"""A table's definition two ways, comparable: as SQLAlchemy declares it (``target_definition``) and
as the catalog holds it (``live_definition``); ``plan_changes`` says what differs.

Compared: column names, types (planned by ``postgres.evolution``, so ``int4`` equals ``INTEGER``),
nullability, the primary key (columns, in order) and the other indexes and unique constraints
(unique flag and columns, names ignored). Not compared: column order, server defaults, comments,
check and foreign-key constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
import sqlalchemy as sa
from psycopg import sql

from ingest_platform.postgres import catalog, evolution


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: str  # DDL spelling: SQLAlchemy's compiled type, or PostgreSQL's format_type
    nullable: bool


@dataclass(frozen=True)
class TableDef:
    schema: str
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...]
    indexes: frozenset[
        tuple[bool, tuple[str, ...]]
    ]  # (unique, columns); the primary key's not included
    oid: int | None = None  # live tables only

    @property
    def column_map(self) -> dict[str, ColumnDef]:
        return {c.name: c for c in self.columns}

    @property
    def qualified(self) -> sql.Composed:
        return catalog.qualified(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TypeChange:
    column: str
    old: str  # as the catalog prints it
    new: str  # as SQLAlchemy compiles it
    widening: bool  # every old value fits the new type unchanged: no check, no cast


@dataclass
class Changes:
    """What separates the live table from its definition."""

    add_nullable: list[ColumnDef] = field(default_factory=list)  # can be added in place
    in_place: list[evolution.ColumnPlan] = field(default_factory=list)  # their ADD COLUMNs
    rebuild_reasons: list[str] = field(default_factory=list)  # anything else: build a new table
    type_changes: list[TypeChange] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.add_nullable or self.rebuild_reasons)


def target_definition(table: sa.Table, dialect, default_schema: str) -> TableDef:
    columns = tuple(
        ColumnDef(c.name, c.type.compile(dialect=dialect), bool(c.nullable) and not c.primary_key)
        for c in table.columns
    )
    indexes = {(bool(i.unique), tuple(c.name for c in i.columns)) for i in table.indexes}
    indexes |= {
        (True, tuple(c.name for c in u.columns))
        for u in table.constraints
        if isinstance(u, sa.UniqueConstraint)
    }
    return TableDef(
        table.schema or default_schema,
        table.name,
        columns,
        tuple(c.name for c in table.primary_key.columns),
        frozenset(indexes),
    )


def live_definition(conn: psycopg.Connection, schema: str, name: str) -> TableDef | None:
    """The table as the catalog has it, or None if there is no such table."""
    oid = catalog.relation_oid(conn, schema, name)
    if oid is None:
        return None
    columns = tuple(ColumnDef(c.name, c.type, not c.not_null) for c in catalog.columns(conn, oid))
    primary_key: tuple[str, ...] = ()
    indexes = set()
    for is_primary, unique, names in conn.execute(
        "SELECT i.indisprimary, i.indisunique, "
        "  array(SELECT coalesce(a.attname, '(expression)') FROM unnest(i.indkey[0:i.indnkeyatts - "
        "1]) "
        "        WITH ORDINALITY k(attnum, ord) LEFT JOIN pg_attribute a "
        "        ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord) "
        "FROM pg_index i WHERE i.indrelid = %s",
        (oid,),
    ):
        if is_primary:
            primary_key = tuple(names)
        else:
            indexes.add((unique, tuple(names)))
    return TableDef(schema, name, columns, primary_key, frozenset(indexes), oid)


def plan_changes(live: TableDef, target: TableDef) -> Changes:
    changes = Changes()
    live_columns = live.column_map
    planned = evolution.plan(
        {c.name: catalog.parsed_type(c.type) for c in live.columns},
        {c.name: catalog.parsed_type(c.type) for c in target.columns},
    )
    for column, plan in zip(target.columns, planned.columns, strict=True):
        current = live_columns.get(column.name)
        if current is None:
            if column.nullable:
                changes.add_nullable.append(column)
                changes.in_place.append(plan)
            else:
                changes.rebuild_reasons.append(f'add NOT NULL column "{column.name}" {column.type}')
            continue
        if plan.live != plan.wanted:
            changes.rebuild_reasons.append(
                f'change the type of "{column.name}" from {current.type} to {column.type}'
            )
            changes.type_changes.append(
                TypeChange(column.name, current.type, column.type, plan.fits_wanted)
            )
        if current.nullable != column.nullable:
            changes.rebuild_reasons.append(
                f'make "{column.name}" {"nullable" if column.nullable else "NOT NULL"}'
            )
    target_names = {c.name for c in target.columns}
    for column in live.columns:
        if column.name not in target_names:
            changes.rebuild_reasons.append(f'drop column "{column.name}"')
    if live.primary_key != target.primary_key:
        changes.rebuild_reasons.append(
            f"change the primary key from ({', '.join(live.primary_key)}) to "
            f"({', '.join(target.primary_key)})"
        )
    if live.indexes != target.indexes:
        changes.rebuild_reasons.append("change the indexes")
    return changes
