"""Tables created and migrated to their SQLAlchemy definition; views, grants and readers survive."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from ingest_platform import ingest
from ingest_platform.bulk_ingest.migration import prepare_table
from ingest_platform.errors import SchemaError
from ingest_platform_tests.bulk_ingest.conftest import rows_of, stored_watermark


def define(*columns: sa.Column, indexes=()) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table("item", metadata, *columns, *indexes, schema="app")
    return metadata, table


def v1():
    return define(
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(10)),
        sa.Column("qty", sa.Integer, nullable=False),
    )


def load(engine, metadata, table, watermark, rows, **kwargs):
    with engine.connect() as conn:
        return ingest(conn, metadata, lambda w: [(watermark, [(table, r) for r in rows])], **kwargs)


def oid(pg) -> int:
    return pg.execute("SELECT 'app.item'::regclass::oid").fetchone()[0]


def column_types(pg) -> dict[str, tuple[str, bool]]:
    return {
        n: (t, nn)
        for n, t, nn in pg.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = 'app.item'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    }


@pytest.fixture
def role(pg):
    name = f"reader_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield name
    pg.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    pg.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_new_nullable_column_is_added_in_place(engine, pg):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1)])
    before = oid(pg)
    metadata, table = define(
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in v1()[1].columns
        ),
        sa.Column("note", sa.Text),
    )
    result = load(engine, metadata, table, 2, [(2, "b", 2, "new")])
    assert result.migrations == {"app.item": ['add nullable column "note" TEXT']}
    assert oid(pg) == before
    assert rows_of(pg, "app.item") == [(1, "a", 1, None), (2, "b", 2, "new")]


def test_type_change_rebuilds_and_keeps_views_grants_indexes(engine, pg, role):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1), (2, "b", 2)])
    role_id = sql.Identifier(role)
    for statement in [
        "CREATE VIEW app.item_names AS SELECT id, name FROM app.item",
        "CREATE VIEW app.item_names_upper AS SELECT id, upper(name) AS name FROM app.item_names",
        "CREATE MATERIALIZED VIEW app.item_totals AS SELECT sum(qty) AS total FROM app.item",
        "CREATE UNIQUE INDEX item_totals_total ON app.item_totals (total)",
        "COMMENT ON TABLE app.item IS 'the items'",
    ]:
        pg.execute(statement)
    pg.execute(sql.SQL("GRANT SELECT, INSERT ON app.item TO {}").format(role_id))
    pg.execute(
        sql.SQL("GRANT SELECT ON app.item_names_upper, app.item_totals TO {}").format(role_id)
    )
    before = oid(pg)

    metadata, table = define(
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(40)),
        sa.Column("qty", sa.Integer, nullable=False),
        indexes=[sa.Index("item_by_name", "name")],
    )
    result = load(engine, metadata, table, 2, [(3, "c" * 30, 3)])
    assert result.migrations["app.item"] == [
        'change the type of "id" from integer to BIGINT',
        'change the type of "name" from character varying(10) to VARCHAR(40)',
        "change the indexes",
    ]
    assert oid(pg) != before
    assert column_types(pg) == {
        "id": ("bigint", True),
        "name": ("character varying(40)", False),
        "qty": ("integer", True),
    }
    assert rows_of(pg, "app.item_names_upper") == [(1, "A"), (2, "B"), (3, "C" * 30)]
    assert rows_of(pg, "app.item_totals") == [
        (3,)
    ]  # recreated WITH DATA at the swap, before the batch
    privileges = pg.execute(
        "SELECT has_table_privilege(%(r)s, 'app.item', 'SELECT'), has_table_privilege(%(r)s, "
        "'app.item', 'INSERT'), "
        "has_table_privilege(%(r)s, 'app.item_names_upper', 'SELECT'), "
        "has_table_privilege(%(r)s, 'app.item_totals', 'SELECT'), "
        "has_table_privilege(%(r)s, 'app.item_names', 'SELECT')",
        {"r": role},
    ).fetchone()
    assert privileges == (True, True, True, True, False)
    assert pg.execute("SELECT obj_description('app.item'::regclass, 'pg_class')").fetchone() == (
        "the items",
    )
    indexes = dict(
        pg.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app'").fetchall()
    )
    assert set(indexes) == {
        "item_pkey",
        "item_by_name",
        "item_totals_total",
        "_ingest_watermarks_pkey",
    }
    assert "(name)" in indexes["item_by_name"]
    assert not pg.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE '\\_ingest\\_new%'"
    ).fetchall()


def test_dropped_column_nullability_and_primary_key_changes(engine, pg):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1), (2, None, 2)])
    metadata, table = define(
        sa.Column("id", sa.Integer, nullable=False), sa.Column("qty", sa.Integer, primary_key=True)
    )
    result = load(engine, metadata, table, 2, [(3, 3), (30, 3)])  # qty is the key now: upsert
    assert result.migrations["app.item"] == [
        'drop column "name"',
        "change the primary key from (id) to (qty)",
    ]
    assert rows_of(pg, "app.item", "qty") == [(1, 1), (2, 2), (30, 3)]
    assert column_types(pg) == {"id": ("integer", True), "qty": ("integer", True)}


def test_primary_key_the_rows_do_not_fit(engine, pg):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 5), (2, "b", 5)])
    metadata, table = define(
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(10)),
        sa.Column("qty", sa.Integer, primary_key=True),
    )
    with pytest.raises(
        SchemaError, match=r"The rows of app.item do not fit its new definition .*duplicate key"
    ):
        load(engine, metadata, table, 2, [])
    assert rows_of(pg, "app.item") == [(1, "a", 5), (2, "b", 5)]
    assert stored_watermark(pg, "app") == {"app.item": 1}


def test_view_on_a_dropped_column_stops_the_migration(engine, pg):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1)])
    pg.execute("CREATE VIEW app.item_names AS SELECT name FROM app.item")
    before = oid(pg)
    metadata, table = define(
        sa.Column("id", sa.Integer, primary_key=True), sa.Column("qty", sa.Integer)
    )
    with pytest.raises(
        SchemaError,
        match=r"The view app.item_names on app.item no longer works .*name\"? does not "
        r"exist",
    ):
        load(engine, metadata, table, 2, [])
    assert oid(pg) == before and rows_of(pg, "app.item_names") == [("a",)]


def test_readers_read_during_the_rebuild_until_the_swap(engine, pg, pg_dsn):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1), (2, "b", 2)])
    metadata, table = define(
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(10)),
        sa.Column("qty", sa.Integer, nullable=False),
    )
    seen = {}

    def before_swap(conn, live):
        # The copy is done, the exclusive lock not yet taken: a reader reads the old table at once
        # (NOWAIT would fail otherwise); a writer would have to wait (SHARE is held).
        with psycopg.connect(pg_dsn) as reader:
            reader.execute("LOCK TABLE app.item IN ACCESS SHARE MODE NOWAIT")
            seen["rows"] = reader.execute("SELECT id FROM app.item ORDER BY id").fetchall()
            reader.rollback()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reader.execute("LOCK TABLE app.item IN ROW EXCLUSIVE MODE NOWAIT")

    engine_conn = engine.connect()
    try:
        driver = engine_conn.connection.driver_connection
        done = prepare_table(
            driver,
            table,
            engine_conn.dialect,
            "public",
            terminate_blockers_after=None,
            logger=logging.getLogger("test"),
            before_swap=before_swap,
        )
    finally:
        engine_conn.close()
    assert seen["rows"] == [(1,), (2,)]
    assert done == ['change the type of "id" from integer to BIGINT']
    assert column_types(pg)["id"] == ("bigint", True)


def test_backends_holding_a_conflicting_lock_are_terminated_and_logged(engine, pg, pg_dsn, caplog):
    metadata, table = v1()
    load(engine, metadata, table, 1, [(1, "a", 1)])
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("SELECT * FROM app.item")  # idle in transaction, holding ACCESS SHARE
    blocker_pid = blocker.info.backend_pid
    metadata, table = define(
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in v1()[1].columns
        ),
        sa.Column("note", sa.Text),
    )
    with caplog.at_level(logging.WARNING, logger="ingest_platform.bulk_ingest"):
        load(engine, metadata, table, 2, [(2, "b", 2, "x")], terminate_blockers_after=0.2)
    assert any(
        f"Terminated backend {blocker_pid} " in r.getMessage()
        and "SELECT * FROM app.item" in r.getMessage()
        for r in caplog.records
    )
    with pytest.raises(psycopg.OperationalError):
        blocker.execute("SELECT 1")
    blocker.close()
    assert rows_of(pg, "app.item") == [(1, "a", 1, None), (2, "b", 2, "x")]
