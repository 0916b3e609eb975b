"""The comparison engine between two PostgreSQL databases: equal tables pass, and a row missing
on each side and a changed value are named by key, through bisection."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingest_platform.consistency.compare import (
    DIFFERENT,
    compare_hashes,
    missing_in,
    postgres_sides,
)
from ingest_platform.errors import SchemaError
from ingest_platform.postgres.connection import ensure_database, with_database
from ingest_platform_tests.conftest import unique_name

# The right side holds some columns in wider types (as a CDC merged table or a migration may).
LEFT = (
    "id integer PRIMARY KEY, name varchar(20), amount numeric(10,2), big numeric(80,40), flag "
    '"char",'
    ' mood "Mood Type", at timestamptz, grid integer[][], doc jsonb'
)
RIGHT = (
    'id bigint PRIMARY KEY, name text, amount numeric(14,2), big numeric(80,40), flag "char",'
    ' mood "Mood Type", at timestamptz, grid integer[][], doc jsonb, extra text'
)
ROWS = 3000


@pytest.fixture
def second_dsn(pg_server_dsn):
    database = unique_name("pair")
    ensure_database(pg_server_dsn, database)
    yield with_database(pg_server_dsn, database)
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def _fill(conn: psycopg.Connection, columns: str) -> None:
    conn.execute("""CREATE TYPE "Mood Type" AS ENUM ('ok', 'not ok')""")
    conn.execute(f"CREATE TABLE app.t ({columns})")
    conn.execute(
        "INSERT INTO app.t (id, name, amount, big, flag, mood, at, grid, doc)"
        " SELECT i, 'n' || i, i / 4.0, i * 1e30 + 0.5, chr(97 + mod(i, 26)), "
        " (CASE WHEN mod(i, 2) = 0 THEN 'ok' ELSE 'not ok' END)::\"Mood Type\","
        " timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',"
        " ARRAY[[i, 1], [2, 3]], jsonb_build_object('i', i)"
        " FROM generate_series(1, %s) AS i",
        (ROWS,),
    )


def test_two_databases_compare_by_key_through_bisection(pg_dsn, second_dsn):
    with (
        psycopg.connect(pg_dsn, autocommit=True) as a,
        psycopg.connect(second_dsn, autocommit=True) as b,
    ):
        for conn, columns in ((a, LEFT), (b, RIGHT)):
            conn.execute("CREATE SCHEMA app")
            _fill(conn, columns)
        sides = postgres_sides((a, "app", "t"), (b, "app", "t"), names=("old", "new"))
        clean = compare_hashes(*sides)
        assert clean.passed and clean.left_rows == clean.right_rows == ROWS, clean.markdown()

        a.execute("DELETE FROM app.t WHERE id = 17")  # missing in old
        b.execute("DELETE FROM app.t WHERE id = 18")  # missing in new
        b.execute("UPDATE app.t SET mood = 'ok', extra = 'not compared' WHERE id = 9")
        b.execute("UPDATE app.t SET extra = 'only extra changed' WHERE id = 10")
        result = compare_hashes(*sides, rows_per_bucket=1000, leaf_rows=50)
    assert not result.passed and result.depth >= 2 and result.differing_buckets >= 1
    found = {(d.key["id"], d.status, d.detail) for d in result.differences}
    assert found == {
        ("17", missing_in("old"), ""),
        ("18", missing_in("new"), ""),
        ("9", DIFFERENT, "columns: mood"),
    }
    assert "| 9 | different | columns: mood |" in result.markdown()


def test_a_column_the_right_side_lacks_is_named(pg_dsn, second_dsn):
    with (
        psycopg.connect(pg_dsn, autocommit=True) as a,
        psycopg.connect(second_dsn, autocommit=True) as b,
    ):
        a.execute("CREATE TABLE t (id integer PRIMARY KEY, name text)")
        b.execute("CREATE TABLE t (id integer PRIMARY KEY)")
        with pytest.raises(SchemaError, match="public.t: column.*name"):
            postgres_sides((a, "public", "t"), (b, "public", "t"))
        with pytest.raises(SchemaError, match='"public"."nothing" does not exist'):
            postgres_sides((a, "public", "nothing"), (b, "public", "t"))
