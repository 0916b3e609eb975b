"""Versioned parent/child tables on a real PostgreSQL server: evolution, atomic loads, checks."""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
from psycopg import sql

from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import IngestError, SchemaError
from ingest_platform.postgres.catalog import MAX_IDENTIFIER_BYTES
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.copy_errors import CopyRejected
from ingest_platform.postgres.versioned_tables import (
    VERSION_COLUMN,
    VersionLoad,
    abandon_version_load,
    attach_version,
    begin_version_load,
    child_table_name,
    conformance_problems,
    copy_into,
    load_table_name,
    parent_table_name,
    version_row_count,
)

SCHEMA = "crm"


def table_schema(
    name: str, *columns: tuple[str, str], primary_key: tuple[str, ...] = ()
) -> TableSchema:
    return TableSchema(
        name, [Column(n, source_type=t, pg_type=t) for n, t in columns], list(primary_key)
    )


def copy_text(rows) -> bytes:
    def field(value):
        return (
            "\\N"
            if value is None
            else str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        )

    return "".join("\t".join(field(v) for v in row) + "\n" for row in rows).encode()


def load(conn, schema: TableSchema, version: str, rows, db_schema: str = SCHEMA):
    started = begin_version_load(conn, db_schema, schema, version)
    try:
        copy_into(conn, started, [copy_text(rows)])
        return attach_version(conn, started)
    except BaseException:
        abandon_version_load(conn, started)
        raise


def q(*names: str) -> sql.Composed:
    return sql.SQL(".").join(sql.Identifier(n) for n in names)


def columns_of(conn, schema: str, table: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "%s::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (q(schema, table).as_string(conn),),
        ).fetchall()
    )


def state(conn, schema: str = SCHEMA) -> dict:
    """Everything a load could change: tables and their columns, inheritance, registry, rows."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
            (schema,),
        )
    ]
    inherits = conn.execute(
        "SELECT i.inhrelid::regclass::text, i.inhparent::regclass::text FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s ORDER BY 1",
        (schema,),
    ).fetchall()
    registry = conn.execute(
        sql.SQL(
            "SELECT table_name, version, child_table, rows, columns FROM {} ORDER BY 1, 2"
        ).format(q(schema, "_ingest_versions"))
    ).fetchall()
    result = {
        "tables": {t: columns_of(conn, schema, t) for t in tables},
        "inherits": inherits,
        "registry": registry,
        "rows": {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM ONLY {}").format(q(schema, t))
            ).fetchone()[0]
            for t in tables
        },
    }
    conn.commit()
    return result


def count_version(conn, table: str, version: str, schema: str = SCHEMA) -> int:
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            q(schema, parent_table_name(table)), sql.Identifier(VERSION_COLUMN)
        ),
        (version,),
    ).fetchone()[0]


@pytest.fixture
def conn(pg_dsn):
    with connect(pg_dsn) as connection:
        yield connection


V1 = table_schema(
    "Orders",
    ("Id", "integer"),
    ("Name", "varchar(50)"),
    ("Amount", "numeric(10,2)"),
    primary_key=("Id",),
)
V2 = table_schema(
    "Orders",
    ("Id", "bigint"),
    ("Name", "varchar(100)"),
    ("Amount", "numeric(12,4)"),
    ("Region", "text"),
    primary_key=("Id",),
)


def test_evolution_adds_columns_and_widens_types(conn):
    first = load(conn, V1, "1", [(1, "a", "1.50"), (2, "b", None)])
    second = load(conn, V2, "2", [(3_000_000_000, "c" * 100, "12345678.1234", "EU")])

    assert first.rows == 2 and not first.replaced_previous
    assert columns_of(conn, SCHEMA, "Orders") == {
        "_version": "text",
        "Id": "bigint",
        "Name": "character varying(100)",
        "Amount": "numeric(12,4)",
        "Region": "text",
    }
    assert set(second.changes) == {
        'widen column "Id" from integer to bigint',
        'widen column "Name" from varchar(50) to varchar(100)',
        'widen column "Amount" from numeric(10,2) to numeric(12,4)',
        'add column "Region" text',
    }
    rows = conn.execute(
        'SELECT _version, "Id", "Name", "Amount", "Region" FROM crm."Orders" ORDER BY "Id"'
    ).fetchall()
    assert [(v, i, r) for v, i, _, _, r in rows] == [
        ("1", 1, None),
        ("1", 2, None),
        ("2", 3_000_000_000, "EU"),
    ]
    # The old child was widened with the parent, and reads NULL in the new column.
    assert columns_of(conn, SCHEMA, "Orders__v1")["Id"] == "bigint"
    registry = conn.execute(
        'SELECT version, rows, columns, primary_key FROM crm."_ingest_versions" ORDER BY 1'
    ).fetchall()
    assert registry[0][:2] == ("1", 2) and registry[1][:2] == ("2", 1)
    assert [c["name"] for c in registry[1][2]] == ["Id", "Name", "Amount", "Region"]  # file order
    assert registry[1][2][0] == {"name": "Id", "type": "bigint", "declared": "bigint"}
    assert registry[1][3] == ["Id"]
    assert version_row_count(conn, SCHEMA, "Orders", "1") == 2
    assert version_row_count(conn, SCHEMA, "Orders", "9") is None


def test_a_narrower_version_changes_nothing(conn):
    load(conn, V2, "2", [(1, "x", "1", "EU")])
    result = load(conn, V1, "1", [(2, "y", "2.5")])
    assert result.changes == ()
    assert columns_of(conn, SCHEMA, "Orders__v1")["Id"] == "bigint"  # loaded in the parent's type
    assert conformance_problems(conn, SCHEMA, "Orders", "1") == []


def test_incompatible_change_names_everything_and_changes_nothing(conn):
    load(
        conn,
        table_schema("Address", ("AddressID", "integer"), ("PostalCode", "varchar(15)")),
        "1.0",
        [(1, "98011")],
    )
    before = state(conn)
    with pytest.raises(SchemaError) as raised:
        begin_version_load(
            conn,
            SCHEMA,
            table_schema(
                "Address", ("AddressID", "integer"), ("PostalCode", "bigint"), ("New", "text")
            ),
            "2.0",
        )
    message = str(raised.value)
    for part in (
        '"Address"',
        '"PostalCode"',
        "version 2.0 has bigint",
        "version 1.0 made it varchar(15)",
        "incompatible",
    ):
        assert part in message
    conn.rollback()
    assert state(conn) == before


def test_reload_replaces_the_version_and_readers_never_see_a_mix(conn, pg_dsn) -> None:
    load(conn, V1, "1", [(i, "old", None) for i in range(3)])
    reload = begin_version_load(conn, SCHEMA, V1, "1")
    copy_into(conn, reload, [copy_text([(i, "new", None) for i in range(5)])])

    seen: set[int] = set()
    stop = threading.Event()

    def poll() -> None:  # a plain READ COMMITTED reader, querying all the time
        with connect(pg_dsn, autocommit=True) as reader:
            while not stop.is_set():
                seen.add(count_version(reader, "Orders", "1"))

    poller = threading.Thread(target=poll)
    poller.start()
    with connect(pg_dsn) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert count_version(reader, "Orders", "1") == 3  # copied, not attached: invisible
        attach = threading.Thread(target=lambda: attach_version(conn, reload))
        attach.start()
        time.sleep(0.3)
        assert attach.is_alive()  # waits for the reader's transaction
        assert count_version(reader, "Orders", "1") == 3
        reader.commit()
        attach.join(10)
        assert count_version(reader, "Orders", "1") == 5
    time.sleep(0.1)
    stop.set()
    poller.join()
    assert seen <= {3, 5} and 5 in seen
    assert version_row_count(conn, SCHEMA, "Orders", "1") == 5
    assert conn.execute('SELECT rows FROM crm."_ingest_versions"').fetchall() == [(5,)]
    assert conn.execute('SELECT DISTINCT "Name" FROM crm."Orders"').fetchall() == [("new",)]


def test_failed_copy_then_abandon_leaves_no_trace(conn):
    load(conn, V1, "1", [(1, "a", "1")])
    before = state(conn)
    started = begin_version_load(conn, SCHEMA, V2, "2")
    copy_into(conn, started, [copy_text([(1, "fine", "1", "EU")])])
    with pytest.raises(CopyRejected, match="invalid input syntax") as rejected:
        copy_into(conn, started, [copy_text([(2, "ok", "1", "EU"), ("abc", "bad", "1", "EU")])])
    assert rejected.value.line == 2 and not rejected.value.bad_encoding
    abandon_version_load(conn, started)
    assert state(conn) == before
    with pytest.raises(IngestError, match="gone"):
        attach_version(conn, started)


def test_a_second_begin_of_the_same_version_drops_the_stale_load_table(conn):
    crashed = begin_version_load(conn, SCHEMA, V1, "1")
    fresh = begin_version_load(conn, SCHEMA, V1, "1")
    tables = state(conn)["tables"]
    assert fresh.load_table in tables and crashed.load_table not in tables
    with pytest.raises(IngestError, match="begun again"):
        copy_into(conn, crashed, [copy_text([(1, "a", "1")])])
    copy_into(conn, fresh, [copy_text([(1, "a", "1")])])
    assert attach_version(conn, fresh).rows == 1


def test_two_connections_copy_concurrently_then_attach(conn, pg_dsn):
    started = begin_version_load(conn, SCHEMA, V1, "1")
    barrier = threading.Barrier(2)
    results = []

    def worker(first_id: int):
        with connect(pg_dsn) as own:
            barrier.wait()
            chunks = (
                copy_text([(i, "w", None) for i in range(start, start + 100)])
                for start in range(first_id, first_id + 1000, 100)
            )
            results.append(copy_into(own, started, chunks))

    threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 10_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [rows for rows, _ in results] == [1000, 1000]
    assert attach_version(conn, started).rows == 2000
    assert count_version(conn, "Orders", "1") == 2000


def _copy_in_process(dsn: str, started: VersionLoad, first_id: int) -> tuple[int, int]:
    with connect(dsn) as own:
        return copy_into(
            own, started, [copy_text([(i, "p", None) for i in range(first_id, first_id + 50)])]
        )


def test_load_plan_crosses_process_boundaries(conn, pg_dsn):
    started = begin_version_load(conn, SCHEMA, V1, "1")
    assert pickle.loads(pickle.dumps(started)) == started
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_copy_in_process, [pg_dsn] * 2, [started] * 2, [0, 100]))
    assert [rows for rows, _ in results] == [50, 50]
    assert attach_version(conn, started).rows == 100


def test_parent_evolved_by_another_version_between_begin_and_attach(conn):
    load(conn, V1, "1", [(1, "a", "1")])
    v2 = begin_version_load(conn, SCHEMA, V1, "2")
    v3 = begin_version_load(
        conn,
        SCHEMA,
        table_schema(
            "Orders",
            ("Id", "bigint"),
            ("Name", "varchar(50)"),
            ("Amount", "numeric(10,2)"),
            ("Note", "text"),
        ),
        "3",
    )
    assert v2.planned_changes == () and set(v3.planned_changes) == {
        'widen column "Id" from integer to bigint',
        'add column "Note" text',
    }
    copy_into(conn, v2, [copy_text([(2, "b", "2")])])
    copy_into(conn, v3, [copy_text([(3, "c", "3", "note")])])
    attach_version(conn, v3)
    result = attach_version(conn, v2)
    assert result.changes == ()
    child = columns_of(conn, SCHEMA, "Orders__v2")
    assert child["Id"] == "bigint" and child["Note"] == "text"
    assert conn.execute('SELECT _version, "Note" FROM crm."Orders" ORDER BY "Id"').fetchall() == [
        ("1", None),
        ("2", None),
        ("3", "note"),
    ]
    assert all(conformance_problems(conn, SCHEMA, "Orders", v) == [] for v in ("1", "2", "3"))


def test_incompatible_evolution_found_at_attach_leaves_the_load_to_abandon(conn):
    load(conn, V1, "1", [(1, "a", "1")])
    v2 = begin_version_load(
        conn, SCHEMA, table_schema("Orders", ("Id", "integer"), ("Code", "integer")), "2"
    )
    load(conn, table_schema("Orders", ("Id", "integer"), ("Code", "text")), "3", [(3, "x")])
    copy_into(conn, v2, [copy_text([(2, 7)])])
    before = state(conn)
    with pytest.raises(SchemaError, match="version 2 has integer, but version 3 made it text"):
        attach_version(conn, v2)
    abandon_version_load(conn, v2)
    before["tables"].pop(v2.load_table)
    before["rows"].pop(v2.load_table)
    assert state(conn) == before


def test_weird_identifiers(conn):
    schema, table, version = 'app "x"; y', 'we"ird; DROP TABLE x', "1.0'; --\\x"
    weird = table_schema(
        table, ("first name", "integer"), ('a"b', "text"), ("Ünïcødé", "varchar(5)")
    )
    load(conn, weird, version, [(1, "q\"'", "äöü")], db_schema=schema)
    load(
        conn,
        table_schema(table, ("first name", "bigint"), ("semi;colon", "text")),
        "2",
        [(2, ";")],
        db_schema=schema,
    )
    rows = conn.execute(
        sql.SQL('SELECT {}, "first name", "a""b", "semi;colon" FROM {} ORDER BY 2').format(
            sql.Identifier(VERSION_COLUMN), q(schema, table)
        )
    ).fetchall()
    assert rows == [(version, 1, "q\"'", None), ("2", 2, None, ";")]
    assert count_version(conn, table, version, schema) == 1
    assert conformance_problems(conn, schema, table, version) == []
    assert version_row_count(conn, schema, table, version) == 1


def test_long_names_stay_unique_and_readable(conn):
    long_a, long_b = "A" * 70 + "_one", "A" * 70 + "_two"
    umlauts = "Ü" * 40  # 80 bytes: truncation must not split a character
    for name in (long_a, long_b, umlauts):
        load(conn, table_schema(name, ("Id", "integer")), "2025.10", [(1,)])
    names = (
        [parent_table_name(n) for n in (long_a, long_b, umlauts)]
        + [child_table_name(n, "2025.10") for n in (long_a, long_b, umlauts)]
        + [load_table_name(long_a, "2025.10", "abcd1234")]
    )
    assert len(set(names)) == len(names)
    assert all(len(n.encode()) <= MAX_IDENTIFIER_BYTES for n in names)
    assert child_table_name(long_a, "2025.10").endswith("__v2025.10")
    assert child_table_name("Orders", "1") == "Orders__v1"
    assert len(child_table_name("T", "9" * 100).encode()) <= MAX_IDENTIFIER_BYTES
    tables = state(conn)["tables"]
    assert set(names[:6]) <= set(tables)
    assert all(count_version(conn, n, "2025.10") == 1 for n in (long_a, long_b, umlauts))


def test_a_query_by_version_scans_only_that_child(conn):
    for version in ("1", "2", "3"):
        load(conn, V1, version, [(1, "a", "1")])
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            'EXPLAIN SELECT * FROM crm."Orders" WHERE _version = %s', ("2",)
        ).fetchall()
    )
    assert "Orders__v2" in plan
    assert "Orders__v1" not in plan and "Orders__v3" not in plan


def test_conformance_problems_find_a_broken_child(conn):
    load(conn, V1, "1", [(1, "a", "1")])
    assert conformance_problems(conn, SCHEMA, "Orders", "1") == []
    assert conformance_problems(conn, SCHEMA, "Orders", "7") == [
        'version 7 of table "Orders" is not loaded'
    ]
    conn.execute('ALTER TABLE crm."Orders__v1" NO INHERIT crm."Orders"')
    conn.execute('ALTER TABLE crm."Orders__v1" DROP CONSTRAINT _version_check')
    conn.execute('ALTER TABLE crm."Orders__v1" ALTER COLUMN "Name" TYPE text')
    conn.execute('ALTER TABLE crm."Orders__v1" DROP COLUMN "Amount"')
    conn.commit()
    problems = conformance_problems(conn, SCHEMA, "Orders", "1")
    assert any("does not inherit" in p for p in problems)
    assert any("CHECK (_version = '1') is missing" in p for p in problems)
    assert 'column "Name" is text, the parent has character varying(50)' in problems
    assert 'column "Amount" is missing' in problems


def test_reserved_and_unusable_names_are_refused(conn):
    with pytest.raises(SchemaError, match="reserved"):
        begin_version_load(conn, SCHEMA, table_schema("T", ("_version", "text")), "1")
    with pytest.raises(SchemaError, match="longer than 63 bytes"):
        begin_version_load(conn, SCHEMA, table_schema("T", ("c" * 64, "text")), "1")
    with pytest.raises(SchemaError, match="not a PostgreSQL type"):
        begin_version_load(conn, SCHEMA, table_schema("T", ("c", "int; DROP TABLE x")), "1")


def test_an_open_transaction_is_refused(conn):
    conn.execute("SELECT 1")
    with pytest.raises(IngestError, match="no open transaction"):
        begin_version_load(conn, SCHEMA, V1, "1")
