"""postgres/catalog.py on a real server: the one reader of the system catalog."""

from __future__ import annotations

import pytest

from ingest_platform.postgres import catalog
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.type_widening import PgType


@pytest.fixture
def conn(pg_dsn):
    with connect(pg_dsn, autocommit=True) as connection:
        yield connection


def test_primary_key_in_key_order_not_column_order(conn):
    conn.execute('CREATE TABLE "T x" (a int, b int, c text, PRIMARY KEY (c, a))')
    oid = catalog.relation_oid(conn, "public", "T x")
    assert catalog.primary_key(conn, oid) == ("c", "a")


def test_columns_printed_and_parsed(conn):
    conn.execute("CREATE TYPE \"Mood\" AS ENUM ('ok')")
    conn.execute('CREATE TABLE t (id bigint NOT NULL, name varchar(5), m "Mood", k "char")')
    found = catalog.columns_of(conn, "public", "t")
    assert [c.type for c in found.values()] == [
        "bigint",
        "character varying(5)",
        '"Mood"',
        '"char"',
    ]
    assert found["id"].not_null and not found["name"].not_null
    assert found["name"].parsed == PgType("varchar", (5,))
    assert found["m"].parsed == PgType('"Mood"')  # verbatim: only equals itself
    assert catalog.columns_of(conn, "public", "missing") == {}
    assert catalog.relation_oid(conn, "public", "missing") is None


def test_default_constraint_name_is_postgresqls():
    """A rebuilt table's primary key gets the name CREATE TABLE would have given it."""
    long = "t" * 62
    assert catalog.default_constraint_name("item", "pkey") == "item_pkey"
    assert catalog.default_constraint_name(long, "pkey") == "t" * 58 + "_pkey"
    # clipped on a character boundary, as pg_mbcliplen does
    assert catalog.default_constraint_name("ä" * 40, "pkey") == "ä" * 29 + "_pkey"


def test_default_constraint_name_matches_the_server(conn):
    for name in ("t" * 63, "ä" * 31, "short"):
        conn.execute(f'CREATE TABLE "{name}" (id int PRIMARY KEY)')
        given = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s AND contype = 'p'",
            (catalog.relation_oid(conn, "public", name),),
        ).fetchone()[0]
        assert catalog.default_constraint_name(name, "pkey") == given
