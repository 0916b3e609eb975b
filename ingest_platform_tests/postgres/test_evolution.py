"""postgres/evolution.py: one planner for dump attach, CDC merged tables and ingest()."""

from __future__ import annotations

from psycopg import sql

from ingest_platform.postgres.evolution import alter_table, plan
from ingest_platform.postgres.type_widening import parse_pg_type as t


def test_add_widen_keep_refuse():
    planned = plan(
        {"id": t("integer"), "name": t("varchar(5)"), "at": t("timestamp"), "old": t("text")},
        {
            "id": t("bigint"),
            "name": t("varchar(3)"),
            "at": t("timestamptz"),
            "new": t("numeric(5,2)"),
        },
    )
    assert [(c.name, c.action) for c in planned.columns] == [
        ("id", "widen"),
        ("name", "keep"),
        ("at", "refuse"),
        ("new", "add"),
    ]
    assert [c.name for c in planned.refused] == ["at"]
    assert [str(c) for c in planned.changes] == [
        'widen column "id" from integer to bigint',
        'add column "new" numeric(5,2)',
    ]
    assert planned.target["name"] == t("varchar(5)")  # the live type holds the narrower one
    assert planned.columns[0].fits_wanted and not planned.columns[1].fits_wanted


def test_widening_to_neither_type():
    (column,) = plan({"n": t("numeric(5,2)")}, {"n": t("numeric(6,1)")}).columns
    assert column.action == "widen" and column.common == t("numeric(7,2)")
    assert not column.fits_wanted


def test_one_statement_for_all_changes():
    changes = plan({"a": t("int")}, {"a": t("bigint"), "b": t("text")}).changes
    statement = alter_table("s", 'T "x"', changes)
    assert statement.as_string(None) == (
        'ALTER TABLE "s"."T ""x""" ALTER COLUMN "a" TYPE bigint, ADD COLUMN "b" text'
    )
    assert isinstance(statement, sql.Composed)
