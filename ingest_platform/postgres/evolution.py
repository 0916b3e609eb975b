"""Schema evolution, planned in one place for every pipeline: from a table's live columns and the
columns wanted, which to add, widen, keep or refuse (the rules are ``type_widening``'s), and the
one ALTER TABLE that makes the changes.

Used by dump attach (``versioned_tables``), CDC merged tables (``cdc.warehouse``) and ``ingest()``
(``bulk_ingest.table_defs``). Refusing is the caller's: each names its table in its own words (a
dump also names both versions), and ``ingest()`` rebuilds the table instead, checking the values.
Pure functions: the caller reads the live columns (``catalog``) and runs the statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from psycopg import sql

from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.type_widening import PgType, common_type


@dataclass(frozen=True)
class ColumnPlan:
    """What becomes of one wanted column."""

    name: str
    live: PgType | None  # None: the table has no such column yet
    wanted: PgType
    common: PgType | None  # holds both (the wanted type for a new column); None: incompatible

    @property
    def action(self) -> str:
        """add, widen (the live column to ``common``), keep (holds the wanted type) or refuse."""
        if self.live is None:
            return "add"
        if self.common is None:
            return "refuse"
        return "keep" if self.common == self.live else "widen"

    @property
    def fits_wanted(self) -> bool:
        """Every live value fits the wanted type unchanged (the same type, or a widening to it)."""
        return self.common == self.wanted

    def __str__(self) -> str:
        if self.live is None:
            return f'add column "{self.name}" {self.wanted}'
        return f'widen column "{self.name}" from {self.live} to {self.common}'


@dataclass(frozen=True)
class Plan:
    columns: tuple[ColumnPlan, ...]  # in the order of the wanted columns

    @property
    def changes(self) -> list[ColumnPlan]:
        """The columns to add or widen, for ``alter_table``."""
        return [c for c in self.columns if c.action in ("add", "widen")]

    @property
    def refused(self) -> list[ColumnPlan]:
        return [c for c in self.columns if c.action == "refuse"]

    @property
    def target(self) -> dict[str, PgType]:
        """Each wanted column's type once the changes are made (meaningless if any is refused)."""
        return {c.name: c.common or c.wanted for c in self.columns}


def plan(live: Mapping[str, PgType], wanted: Mapping[str, PgType]) -> Plan:
    """How `live` columns evolve to hold `wanted` ones; live columns not wanted stay as they are."""
    return Plan(
        tuple(
            ColumnPlan(name, live.get(name), t, common_type(live[name], t) if name in live else t)
            for name, t in wanted.items()
        )
    )


def alter_table(schema: str, table: str, changes: Iterable[ColumnPlan]) -> sql.Composed:
    """One ALTER TABLE for all changes (at least one), so a table whose storage changes is
    rewritten once."""
    actions = [
        sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c.name), sql.SQL(str(c.wanted)))
        if c.live is None
        else sql.SQL("ALTER COLUMN {} TYPE {}").format(
            sql.Identifier(c.name), sql.SQL(str(c.common))
        )
        for c in changes
    ]
    return sql.SQL("ALTER TABLE {} {}").format(
        qualified(schema, table), sql.SQL(", ").join(actions)
    )
