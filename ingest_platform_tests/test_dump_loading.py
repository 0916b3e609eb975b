"""Loading dump versions into PostgreSQL: real exports, both reader paths, parallel workers,
bad input."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import psycopg
import pytest

from ingest_platform.dumps import open_dump
from ingest_platform.errors import FormatError, SchemaError
from ingest_platform.loading.dump_versions import (
    load_dump_version,
    load_table_version,
    plan_for,
)
from ingest_platform.postgres.connection import connect
from ingest_platform.postgres.copy_errors import CopyRejected
from ingest_platform.postgres.versioned_tables import (
    abandon_version_load,
    attach_version,
    begin_version_load,
    copy_into,
)
from ingest_platform_tests.conftest import make_zip
from ingest_platform_tests.dumps.paths import per_row_copy_text

SMALL_BLOCKS = 4096  # small enough that a few hundred KB of data goes through the worker processes


def table_digest(dsn: str, schema: str, table: str) -> tuple[int, str]:
    """Row count and an order-independent digest of a table's rows (without the version column)."""
    query = psycopg.sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM "
        "(SELECT (to_jsonb(t) - '_version')::text AS r FROM {}.{} t) s"
    ).format(psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return row[0], row[1]


def versions_of(dsn: str, schema: str, table: str) -> dict[str, int]:
    query = psycopg.sql.SQL("SELECT _version, count(*) FROM {}.{} GROUP BY 1").format(
        psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
    )
    with psycopg.connect(dsn) as conn:
        # No parent yet: no version of the table was ever attached.
        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone() == (None,):
            return {}
        return dict(conn.execute(query).fetchall())


def leftover_load_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE '%\\_\\_load\\_%'"
            )
        ]


def load_per_row(dsn: str, dump, table: str, schema: str) -> None:
    """Load a table version from the per-row path's COPY text alone (the reference)."""
    entry = dump.tables[table]
    data = per_row_copy_text(dump, table) if entry.data_member else b""
    with connect(dsn) as conn:
        load = begin_version_load(conn, schema, entry.schema, dump.version)
        copy_into(conn, load, [data])
        attach_version(conn, load)


def small_dump(tmp_path, version: str, rows: list[str], name: str = "orders") -> str:
    schema = {
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "note", "type": "varchar(40)"},
            {"name": "amount", "type": "decimal(10,2)"},
        ],
        "primary_key": ["id"],
    }
    manifest = {"app": "shop", "version": version, "dialect": "mysql"}
    return str(
        make_zip(
            tmp_path / f"shop_{version}.zip",
            {
                "manifest.json": json.dumps(manifest),
                f"{name}.json": json.dumps(schema),
                f"{name}.txt": "".join(rows),
            },
        )
    )


def good_rows(count: int, start: int = 1) -> list[str]:
    return [f"{i}\tnote {i} with a \\t tab\t{i}.25\n" for i in range(start, start + count)]


@pytest.mark.parametrize("zip_fixture, dialect", [("mssql_zip", "mssql"), ("mysql_zip", "mysql")])
def test_real_exports_load_every_table_with_exact_row_counts(request, pg_dsn, zip_fixture, dialect):
    path = request.getfixturevalue(zip_fixture)
    reports = {r.table: r for r in load_dump_version(pg_dsn, path, processes=2, dialect=dialect)}
    with open_dump(path, dialect=dialect) as dump:
        assert set(reports) == set(dump.tables)
        for table in dump.tables:
            expected = dump.count_rows(table)
            assert reports[table].rows == expected, table
            assert versions_of(pg_dsn, dump.app, table).get(dump.version, 0) == expected, table


def test_real_sql_server_values_round_trip(pg_dsn, mssql_zip):
    load_dump_version(pg_dsn, mssql_zip, processes=2, dialect="mssql")
    with psycopg.connect(pg_dsn) as conn:
        document = conn.execute(
            'SELECT "FileExtension", "DocumentSummary", "ModifiedDate"::text, "DocumentNode", '
            'substr("Document", 1, 8) FROM adventureworks."Document" '
            'ORDER BY "DocumentNode" NULLS FIRST LIMIT 1'
        ).fetchone()
        assert document[0] == ""  # bcp's NUL byte is the empty string
        assert document[1] is None  # an empty field is NULL
        assert document[2] == "2017-12-13 13:58:03.943"
        assert document[3] == b""
        money = conn.execute(
            'SELECT "StandardCost" FROM adventureworks."Product" WHERE "ProductID" = 1'
        ).fetchone()[0]
        assert str(money) == "0.0000"
        review = conn.execute(
            'SELECT "Comments" FROM adventureworks."ProductReview" '
            "WHERE \"Comments\" LIKE '%grueling%'"
        ).fetchone()[0]
        assert "grueling\n3-day ride" in review  # an embedded newline inside a field
        address = conn.execute(
            'SELECT substr("SpatialLocation", 1, 4) FROM adventureworks."Address" LIMIT 1'
        ).fetchone()[0]
        assert bytes(address) == bytes.fromhex("E6100000")  # geography: SQL Server's native bytes
        models = conn.execute(
            'SELECT count(*) FROM adventureworks."ProductModel" '
            "WHERE \"CatalogDescription\" LIKE E'%\\n \\t\\t\\t\\tPerformance%'"
        ).fetchone()[0]
        assert models > 0  # embedded tabs and newlines


def test_real_mysql_values_round_trip(pg_dsn, mysql_zip):
    load_dump_version(pg_dsn, mysql_zip, processes=2, dialect="mysql")
    with psycopg.connect(pg_dsn) as conn:
        description = conn.execute(
            "SELECT description FROM ecoli_core.external_db WHERE description LIKE "
            "'Plant environmental conditions ontology terms.%'"
        ).fetchone()[0]
        assert description.startswith(
            "Plant environmental conditions ontology terms.\r\nMore information"
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM ecoli_core.external_db WHERE external_db_id = 50683 "
                "AND description IS NULL"
            ).fetchone()[0]
            == 1
        )  # \N is NULL
        assert (
            conn.execute(
                "SELECT count(*) FROM ecoli_core.operon WHERE created_date IS NULL"
            ).fetchone()[0]
            > 0
        )  # zero dates
        assert (
            conn.execute(
                "SELECT count(*) FROM ecoli_core.meta WHERE meta_value LIKE '%\\\\%'"
            ).fetchone()
            is not None
        )


@pytest.mark.parametrize("zip_fixture, dialect", [("mssql_zip", "mssql"), ("mysql_zip", "mysql")])
def test_fast_path_and_per_row_path_produce_identical_tables(request, pg_dsn, zip_fixture, dialect):
    path = request.getfixturevalue(zip_fixture)
    with open_dump(path, dialect=dialect) as dump:
        for table in dump.tables:
            load_table_version(pg_dsn, plan_for(dump, table, "fast"), processes=1)
            load_per_row(pg_dsn, dump, table, "per_row")
        for table in dump.tables:
            assert table_digest(pg_dsn, "fast", table) == table_digest(pg_dsn, "per_row", table), (
                table
            )


def test_parallel_workers_load_the_same_table_as_one_process(pg_dsn, tmp_path):
    path = small_dump(tmp_path, "1.0", good_rows(20_000))
    with open_dump(path) as dump:
        plan = plan_for(dump, "orders", "one")
        one = load_table_version(pg_dsn, plan, processes=1, chunk_bytes=SMALL_BLOCKS)
        two = load_table_version(
            pg_dsn,
            type(plan)(**{**plan.__dict__, "pg_schema": "two"}),
            processes=2,
            chunk_bytes=SMALL_BLOCKS,
        )
    assert (one.processes, two.processes) == (1, 2)
    assert one.rows == two.rows == 20_000
    assert table_digest(pg_dsn, "one", "orders") == table_digest(pg_dsn, "two", "orders")


def load_bad_version(pg_dsn, tmp_path, rows, processes):
    """v1 loads; v2 (bad) must fail and leave v1 exactly as it was."""
    load_dump_version(pg_dsn, small_dump(tmp_path, "1.0", good_rows(10)))
    before = table_digest(pg_dsn, "shop", "orders")
    with open_dump(small_dump(tmp_path, "2.0", rows)) as dump, pytest.raises(FormatError) as raised:
        load_table_version(
            pg_dsn, plan_for(dump, "orders", "shop"), processes=processes, chunk_bytes=SMALL_BLOCKS
        )
    assert table_digest(pg_dsn, "shop", "orders") == before
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 10}
    assert leftover_load_tables(pg_dsn) == []
    return raised.value


@pytest.mark.parametrize("processes", [1, 2])
def test_value_the_target_type_rejects_names_file_record_column_and_value(
    pg_dsn, tmp_path, processes
):
    rows = good_rows(5000)
    rows[3776] = "abc\tnote\t1.00\n"  # record 3777
    error = load_bad_version(pg_dsn, tmp_path, rows, processes)
    assert (error.file, error.line, error.column) == ("orders.txt", 3777, "id")
    assert "'abc'" in str(error) and "orders.txt, line 3777, column id" in str(error)


@pytest.mark.parametrize("processes", [1, 2])
def test_wrong_field_count_names_file_record_expected_and_found(pg_dsn, tmp_path, processes):
    rows = good_rows(5000)
    rows[4000] = "4001\tonly two fields\n"  # record 4001
    error = load_bad_version(pg_dsn, tmp_path, rows, processes)
    assert (error.file, error.line) == ("orders.txt", 4001)
    assert "expected 3 fields, found 2" in str(error)


def test_invalid_bytes_for_the_declared_encoding_are_named(pg_dsn, tmp_path):
    load_dump_version(pg_dsn, small_dump(tmp_path, "1.0", good_rows(10)))
    path = tmp_path / "shop_2.0.zip"
    make_zip(
        path,
        {
            "manifest.json": json.dumps({"app": "shop", "version": "2.0", "dialect": "mysql"}),
            "orders.json": json.dumps(
                {
                    "columns": [
                        {"name": "id", "type": "int"},
                        {"name": "note", "type": "text"},
                        {"name": "amount", "type": "decimal(10,2)"},
                    ]
                }
            ),
            "orders.txt": b"1\tok\t1.00\n2\tbad \xff byte\t2.00\n",
        },
    )
    with pytest.raises(FormatError) as raised:
        load_dump_version(pg_dsn, path)
    assert (raised.value.line, raised.value.column) == (2, "note")
    assert "0xff" in str(raised.value)
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 10}


def test_reloading_a_version_replaces_it(pg_dsn, tmp_path):
    load_dump_version(pg_dsn, small_dump(tmp_path, "1.0", good_rows(10)))
    (tmp_path / "again").mkdir()
    [report] = load_dump_version(
        pg_dsn, small_dump(tmp_path / "again", "1.0", good_rows(7, start=100))
    )
    assert report.replaced_earlier_load
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 7}


def test_schema_without_data_file_loads_an_empty_version(pg_dsn, tmp_path):
    path = make_zip(
        tmp_path / "shop_3.0.zip",
        {
            "manifest.json": json.dumps({"app": "shop", "version": "3.0", "dialect": "mysql"}),
            "empty.json": json.dumps({"columns": [{"name": "id", "type": "int"}]}),
        },
    )
    [report] = load_dump_version(pg_dsn, path)
    assert report.rows == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute('SELECT count(*) FROM shop."empty__v3.0"').fetchone() == (0,)


def test_names_with_quotes_spaces_and_sql_are_loaded_quoted(pg_dsn, tmp_path):
    table = 'we"ird; DROP TABLE x --'
    schema = {
        "name": table,
        "columns": [
            {"name": "first name", "type": "varchar(10)"},
            {"name": "a\"b'c", "type": "int"},
        ],
    }
    path = make_zip(
        tmp_path / "shop_1.0.zip",
        {
            "manifest.json": json.dumps(
                {
                    "app": "shop",
                    "version": "1.0",
                    "dialect": "mysql",
                    "tables": {table: {"data": "w.txt"}},
                }
            ),
            "w.json": json.dumps(schema),
            "w.txt": "Ada\t1\nGrace\t2\n",
        },
    )
    [report] = load_dump_version(pg_dsn, path)
    assert report.rows == 2
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            psycopg.sql.SQL("SELECT {}, {} FROM shop.{} ORDER BY 2").format(
                psycopg.sql.Identifier("first name"),
                psycopg.sql.Identifier("a\"b'c"),
                psycopg.sql.Identifier(table),
            )
        ).fetchall()
    assert rows == [("Ada", 1), ("Grace", 2)]


def bcp_dump(tmp_path, rows: list[bytes], version: str = "1.0") -> str:
    """A bcp (mssql dialect) dump of table orders: NULL is an empty field, '' a NUL byte."""
    schema = {
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "note", "type": "nvarchar(40)"},
            {"name": "amount", "type": "decimal(10,2)"},
        ]
    }
    return str(
        make_zip(
            tmp_path / f"bcp_{version}.zip",
            {
                "manifest.json": json.dumps(
                    {"app": "shop", "version": version, "dialect": "mssql"}
                ),
                "orders.json": json.dumps(schema),
                "orders.dat": b"".join(rows),
            },
        )
    )


def bcp_rows(count: int) -> list[bytes]:
    """NULLs everywhere, empty strings (NUL) only in records 1001-1010: blocks pass as they are
    (COPY NULL '') except around those, which are rewritten (NULL \\N), so the COPY switches
    twice."""
    rows = []
    for i in range(1, count + 1):
        note = (
            b"\0"
            if 1000 < i <= 1010
            else b""
            if i % 7 == 0
            else b"back\\slash \\N"
            if i % 11 == 0
            else b"n\xc3\xa4 %d" % i
        )
        amount = b"" if i % 5 == 0 else b"%d.50" % i
        rows.append(b"%d\t%s\t%s\n" % (i, note, amount))
    return rows


@pytest.mark.parametrize("processes", [1, 2])
def test_bcp_blocks_passed_to_copy_as_they_are_load_like_the_per_row_path(
    pg_dsn, tmp_path, processes
):
    with open_dump(bcp_dump(tmp_path, bcp_rows(3000))) as dump:
        plan = plan_for(dump, "orders", "passed")
        report = load_table_version(pg_dsn, plan, processes=processes, chunk_bytes=SMALL_BLOCKS)
        load_per_row(pg_dsn, dump, "orders", "per_row")
    assert report.rows == 3000 and report.processes == processes
    assert table_digest(pg_dsn, "passed", "orders") == table_digest(pg_dsn, "per_row", "orders")
    with psycopg.connect(pg_dsn) as conn:
        values = dict(
            conn.execute(
                "SELECT id, note FROM passed.orders WHERE id IN (7, 11, 12, 1005)"
            ).fetchall()
        )
        assert values == {7: None, 11: "back\\slash \\N", 12: "nä 12", 1005: ""}
        assert conn.execute(
            "SELECT count(*) FROM passed.orders WHERE amount IS NULL"
        ).fetchone() == (600,)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_rejected_value_after_the_copy_switched_null_strings_names_its_record(
    pg_dsn, tmp_path, processes
):
    rows = bcp_rows(3000)
    rows[2499] = b"2500\tnote\tnot a number\n"
    with open_dump(bcp_dump(tmp_path, rows)) as dump, pytest.raises(FormatError) as raised:
        load_table_version(
            pg_dsn, plan_for(dump, "orders", "shop"), processes=processes, chunk_bytes=SMALL_BLOCKS
        )
    assert (raised.value.file, raised.value.line, raised.value.column) == (
        "orders.dat",
        2500,
        "amount",
    )
    assert leftover_load_tables(pg_dsn) == []


@pytest.mark.parametrize("processes", [1, 2])
def test_invalid_utf8_in_a_block_passed_as_it_is_is_named_by_record_and_column(
    pg_dsn, tmp_path, processes
):
    load_dump_version(pg_dsn, bcp_dump(tmp_path, bcp_rows(10)))
    rows = bcp_rows(3000)
    rows[2199] = b"2200\tbad \xff byte\t1.00\n"
    with (
        open_dump(bcp_dump(tmp_path, rows, "2.0")) as dump,
        pytest.raises(FormatError, match="0xff") as raised,
    ):
        load_table_version(
            pg_dsn, plan_for(dump, "orders", "shop"), processes=processes, chunk_bytes=SMALL_BLOCKS
        )
    assert (raised.value.file, raised.value.line, raised.value.column) == (
        "orders.dat",
        2200,
        "note",
    )
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 10}
    assert leftover_load_tables(pg_dsn) == []


def test_a_reader_blocking_the_attach_is_terminated_after_the_delay_and_named(
    pg_dsn, tmp_path, caplog
):
    # The lock terminator of ingest()'s migrations (postgres.locks), shared by the dump attach.
    load_dump_version(pg_dsn, small_dump(tmp_path, "1.0", good_rows(10)))
    reader = psycopg.connect(pg_dsn)
    reader.execute(
        "SELECT count(*) FROM shop.orders"
    )  # idle in transaction: ACCESS SHARE on parent and child
    reader_pid = reader.info.backend_pid
    with caplog.at_level("WARNING", logger="ingest_platform"):
        load_dump_version(
            pg_dsn, small_dump(tmp_path, "2.0", good_rows(5)), terminate_blockers_after=0.2
        )
    assert any(
        f"Terminated backend {reader_pid} " in r.getMessage()
        and "SELECT count(*) FROM shop.orders" in r.getMessage()
        for r in caplog.records
    )
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 10, "2.0": 5}
    with pytest.raises(psycopg.OperationalError):
        reader.execute("SELECT 1")
    reader.close()


def test_the_optimistic_read_passes_plain_bcp_and_steps_aside_for_a_lf_inside_a_field(
    pg_dsn, tmp_path
):
    plain = bcp_rows(3000)
    with_lf = list(plain)
    with_lf[1500] = b"1501\tline one\nline two\t1.50\n"  # bcp cannot escape it: a short row to COPY
    for version, rows, expected in (("1.0", plain, 3000), ("2.0", with_lf, None)):
        with open_dump(bcp_dump(tmp_path, rows, version)) as dump:
            source = replace(dump.copy_source("orders"), chunk_bytes=SMALL_BLOCKS)
            with connect(pg_dsn) as conn:
                load = begin_version_load(conn, "optimistic", dump.tables["orders"].schema, version)
                if expected is None:  # refused: load_table_version then reads carefully
                    with pytest.raises(CopyRejected):
                        copy_into(conn, load, source.optimistic_chunks())
                else:
                    assert copy_into(conn, load, source.optimistic_chunks())[0] == expected
                abandon_version_load(conn, load)
    with open_dump(bcp_dump(tmp_path, with_lf, "2.0")) as dump:  # the whole load reads it carefully
        report = load_table_version(
            pg_dsn, plan_for(dump, "orders", "careful"), processes=1, chunk_bytes=SMALL_BLOCKS
        )
    assert report.rows == 3000
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT note FROM careful.orders WHERE id = 1501").fetchone() == (
            "line one\nline two",
        )


def test_errors_cross_the_process_boundary_whole(pg_dsn):
    # Workers send the exception they raised; psycopg 3 keeps diag when pickled, and the
    # platform's errors keep their place.
    with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.errors.DivisionByZero) as raised:
        conn.execute("SELECT 1/0")
    error = pickle.loads(pickle.dumps(raised.value))
    assert type(error) is psycopg.errors.DivisionByZero
    assert error.diag.message_primary == raised.value.diag.message_primary == "division by zero"
    assert error.diag.sqlstate == "22012"
    place = pickle.loads(pickle.dumps(FormatError("bad value", file="t.dat", line=7, column="c")))
    assert (str(place), place.file, place.line, place.column) == (
        "t.dat, line 7, column c: bad value",
        "t.dat",
        7,
        "c",
    )
    rejected = pickle.loads(pickle.dumps(CopyRejected("bad", "COPY t, line 3", 3, False)))
    assert (rejected.message, rejected.context, rejected.line, rejected.bad_encoding) == (
        "bad",
        "COPY t, line 3",
        3,
        False,
    )


# -- names and limits of the database: refused in one line, nothing changed -----------------------


def json_dump(tmp_path, version: str, tables: dict[str, tuple[list[str], str]]) -> str:
    """A dump of app shop: table name -> (its int columns, data file text)."""
    members = {"manifest.json": json.dumps({"app": "shop", "version": version, "dialect": "mysql"})}
    for number, (table, (columns, data)) in enumerate(tables.items()):
        columns_spec = [{"name": c, "type": "int"} for c in columns]
        members[f"t{number}.json"] = json.dumps({"name": table, "columns": columns_spec})
        members[f"{table}.txt"] = data
    directory = tmp_path / version
    directory.mkdir()
    return str(make_zip(directory / f"shop_{version}.zip", members))


def relations(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE nspname = 'shop' AND relkind = 'r' ORDER BY 1"
            )
        ]


def test_a_table_named_like_another_tables_version_is_refused(pg_dsn, tmp_path):
    load_dump_version(pg_dsn, json_dump(tmp_path, "1.0-eu", {"customer": (["id"], "1\n2\n")}))
    before = relations(pg_dsn)
    # Was: DatatypeMismatch on "customer__v1.0-eu__v1.1-eu"; loaded in the other order, its rows
    # would have shown up in "customer".
    clash = json_dump(tmp_path, "1.1-eu", {"customer__v1.0-eu": (["id"], "3\n")})
    with pytest.raises(SchemaError) as raised:
        load_dump_version(pg_dsn, clash)
    message = str(raised.value)
    assert '"customer__v1.0-eu"' in message and 'version of "customer"' in message
    assert "rename" in message and "\n" not in message
    assert relations(pg_dsn) == before
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0-eu": 2}


def test_versions_together_beyond_postgresqls_1600_columns_are_refused(pg_dsn, tmp_path):
    first = [f"a{i}" for i in range(900)]
    load_dump_version(pg_dsn, json_dump(tmp_path, "1.0", {"wide": (first, "\t".join("1" * 900))}))
    second = [f"b{i}" for i in range(900)]  # each version alone fits; the parent would not
    with pytest.raises(SchemaError) as raised:  # was: psycopg.errors.TooManyColumns
        load_dump_version(
            pg_dsn, json_dump(tmp_path, "2.0", {"wide": (second, "\t".join("2" * 900))})
        )
    message = str(raised.value)
    assert '"wide" (version 2.0)' in message and "1800 columns" in message
    assert "another schema" in message
    assert versions_of(pg_dsn, "shop", "wide") == {"1.0": 1}
    assert leftover_load_tables(pg_dsn) == []


def test_a_type_postgresql_does_not_know_is_named(pg_dsn, tmp_path):
    path = make_zip(
        tmp_path / "shop_1.0.zip",
        {
            "manifest.json": json.dumps({"app": "shop", "version": "1.0", "dialect": "mysql"}),
            "t.json": json.dumps(
                {"columns": [{"name": "g", "type": "geometry", "pg_type": "geometry"}]}
            ),
            "t.txt": "POINT(1 2)\n",
        },
    )
    with pytest.raises(SchemaError) as raised:  # was: psycopg.errors.UndefinedObject
        load_dump_version(pg_dsn, path)
    message = str(raised.value)
    assert '"t" (version 1.0), column "g"' in message
    assert 'type "geometry" does not exist' in message
    assert "pg_type" in message
    assert leftover_load_tables(pg_dsn) == []
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('shop.\"t__v1.0\"')").fetchone() == (None,)


def test_names_postgresql_holds_load_as_they_are(pg_dsn, tmp_path):
    tables = {name: (["id"], "1\n") for name in ("Order Details", "kunde_ü_客户", "a.b-c")}
    reports = load_dump_version(pg_dsn, json_dump(tmp_path, "1.0", tables))
    assert sorted(r.child_table for r in reports) == [
        "Order Details__v1.0",
        "a.b-c__v1.0",
        "kunde_ü_客户__v1.0",
    ]
    for name in tables:
        assert versions_of(pg_dsn, "shop", name) == {"1.0": 1}
