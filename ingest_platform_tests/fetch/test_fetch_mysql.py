"""Direct fetch from MariaDB at 127.0.0.1:3306 (root, no password); skipped when it is absent."""

from __future__ import annotations

import dataclasses
import textwrap

import psycopg
import pytest

from ingest_platform.errors import SchemaError, ServiceUnavailableError
from ingest_platform.fetch import pull
from ingest_platform.fetch.config import load_config
from ingest_platform.fetch.pull import compare_source, fetch
from ingest_platform.fetch.sources import MySQLSource, open_source
from ingest_platform_tests.conftest import unique_name

pymysql = pytest.importorskip("pymysql", reason="needs pymysql (a dependency of the platform)")


@pytest.fixture
def mysql_db():
    try:
        server = pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=3)
    except pymysql.err.MySQLError as error:
        pytest.skip(f"no MariaDB/MySQL answers at 127.0.0.1:3306 as root: {error}")
    database = unique_name("fetch_src")
    with server.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
        cur.execute(f"USE {database}")
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute(
            "CREATE TABLE items (id int unsigned PRIMARY KEY, flag tinyint(1), big bigint unsigned,"
            " kind enum('a','b'), tags set('x','y'), born date, bits bit(1), blob_ blob,"
            " note varchar(40), price decimal(8,2), updated_at datetime NOT NULL)"
        )
        cur.execute(
            "INSERT INTO items VALUES (1, 1, 18446744073709551615, 'a', 'x,y', '0000-00-00',"
            " b'1', x'00ff', 'tab\\there', 1.50, '2024-01-01 00:00:01'),"
            " (2, 0, 0, 'b', '', '2020-02-29', b'0', NULL, 'back\\\\slash', NULL,"
            " '2024-01-01 00:00:02')"
        )
    server.commit()
    yield f"mysql://root@127.0.0.1:3306/{database}", server
    with server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {database}")
    server.close()


def config(tmp_path, extra: str = ""):
    path = tmp_path / "sources.toml"
    path.write_text(
        textwrap.dedent(
            """
            [sources.apac]
            kind = "mysql"
            dsn_env = "FETCH_TEST_MY"
            app = "shop"
            pattern = "it*"
            version = "v1"

            [sources.apac.incremental.items]
            cursor = "updated_at"
            """
        )
        + extra
    )
    return load_config(path)["apac"]


def test_snapshot_and_incremental_from_mariadb(pg_dsn, mysql_db, tmp_path):
    url, server = mysql_db
    env = {"FETCH_TEST_MY": url}
    reports = fetch(pg_dsn, config(tmp_path), environ=env)
    assert [(r.table, r.rows) for r in reports] == [("items", 2)]
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute(
            "SELECT id, flag, big, kind, tags, born, bits, blob_, note, price,"
            " pg_typeof(id)::text, pg_typeof(big)::text FROM shop.items ORDER BY id"
        ).fetchall()
    assert got[0][:10] == (
        1, 1, 18446744073709551615, "a", "x,y", None, True, b"\x00\xff", "tab\there", 1.5
    )  # fmt: skip
    assert got[1][6:9] == (False, None, "back\\slash")
    assert got[0][10:] == ("bigint", "numeric")  # as the mysql dialect maps a dump's columns

    with server.cursor() as cur:
        cur.execute("UPDATE items SET note = 'changed', updated_at = '2025-01-01' WHERE id = 2")
        cur.execute("INSERT INTO items (id, updated_at) VALUES (3, '2025-01-02')")
        cur.execute("INSERT INTO items (id, updated_at) VALUES (4, '2025-01-03')")
    server.commit()
    (report,) = fetch(pg_dsn, config(tmp_path), incremental=True, environ=env)
    assert (report.mode, report.rows, report.deleted) == ("incremental", 3, 0)
    # NULL bit(1) columns of the new rows stay NULL (they once became true).
    assert report.checks == ["counts ok (4)", "hashes of changed rows ok (3 rows)"]
    with server.cursor() as cur:
        cur.execute("DELETE FROM items WHERE id = 1")
    server.commit()
    (report,) = fetch(pg_dsn, config(tmp_path), incremental=True, environ=env)
    assert (report.rows, report.deleted) == (0, 1)
    assert report.checks == ["counts ok (3)", "hashes of changed rows ok (0 rows)"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(
            "SELECT id, note, _deleted_at IS NOT NULL FROM shop.items ORDER BY id"
        ).fetchall() == [
            (1, "tab\there", True),
            (2, "changed", False),
            (3, None, False),
            (4, None, False),
        ]


def test_insert_and_delete_in_one_key_bucket_of_mariadb(pg_dsn, mysql_db, tmp_path):
    """Keys 1..15 share a bucket (id DIV 16): an insert and a delete there keep MariaDB's
    count, yet the delete is found; a row committed with an old cursor is named as missed."""
    url, server = mysql_db
    env = {"FETCH_TEST_MY": url}
    fetch(pg_dsn, config(tmp_path), environ=env)
    with server.cursor() as cur:
        cur.execute("INSERT INTO items (id, updated_at) VALUES (3, '2025-01-02')")
        cur.execute("DELETE FROM items WHERE id = 2")
    server.commit()
    (report,) = fetch(pg_dsn, config(tmp_path), incremental=True, environ=env)
    assert (report.rows, report.deleted) == (1, 1)
    assert report.checks == ["counts ok (2)", "hashes of changed rows ok (1 rows)"]
    with server.cursor() as cur:
        cur.execute("INSERT INTO items (id, updated_at) VALUES (7, '2000-01-01')")
        cur.execute("DELETE FROM items WHERE id = 1")
    server.commit()
    with pytest.raises(pull.CheckFailed, match="never pulled.*first key: 7"):
        fetch(pg_dsn, config(tmp_path), incremental=True, environ=env)


def test_bucket_hashes_of_mariadb_name_a_changed_value(pg_dsn, mysql_db, tmp_path):
    """MariaDB's canonical texts equal PostgreSQL's for every mapped kind (the snapshot's checks
    pass); a value changed in MariaDB behind the cursor's back is named by key and column."""
    url, server = mysql_db
    env = {"FETCH_TEST_MY": url}
    with server.cursor() as cur:
        cur.execute(
            "CREATE TABLE kinds (id bigint PRIMARY KEY, d double, r float, t time(6),"
            " ts timestamp(6) NULL, dt datetime(6), j json, c char(3), u varchar(10),"
            " n decimal(10,4), s smallint unsigned, updated_at datetime NOT NULL)"
        )
        cur.execute(
            "INSERT INTO kinds VALUES (1, 1e20, 0.1, '12:34:56.5', '2024-02-29 10:00:00.25',"
            " '1999-12-31 23:59:59.999999', '{\"a\": [1, 2]}', 'ab', 'ünï|:', 12.5, 65535,"
            " '2024-01-01'), (2, 1.5e-7, -2.5, '00:00:00', NULL, '1970-01-01', NULL, NULL, '',"
            " 0, 0, '2024-01-01'), (3, 1/3, NULL, NULL, NULL, NULL, 'null', 'x', 'N', -1.0001,"
            " NULL, '2024-01-01'), (4, 0, 3.4e38, '23:59:59', '2038-01-19 03:14:07', NULL, '[]',"
            " '', NULL, NULL, 1, '2024-01-01'), (5, -1e-300, NULL, '838:59:59', NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, '2024-01-01')"
        )
    server.commit()
    cfg = dataclasses.replace(config(tmp_path), pattern="kinds")
    (report,) = fetch(pg_dsn, cfg, environ=env)
    assert report.checks[0] == "counts ok (5)" and report.checks[1].startswith("hashes ok")
    assert compare_source(pg_dsn, cfg, "kinds", "v1", env).passed
    with server.cursor() as cur:
        cur.execute("UPDATE kinds SET d = 2e20 WHERE id = 1")
        cur.execute("UPDATE kinds SET u = 'üni|:' WHERE id = 3")
    server.commit()
    result = compare_source(pg_dsn, cfg, "kinds", "v1", env)
    assert [(d.key, d.status, d.detail) for d in result.differences] == [
        ({"id": "1"}, "different", "columns: d"),
        ({"id": "3"}, "different", "columns: u"),
    ]


def test_mariadb_faults_are_named(pg_dsn, mysql_db, tmp_path):
    url, server = mysql_db
    with pytest.raises(ServiceUnavailableError, match="apac.*refused.*Access denied") as caught:
        fetch(
            pg_dsn,
            config(tmp_path),
            environ={"FETCH_TEST_MY": url.replace("root@", "nobody:pw9secret@")},
        )
    assert "pw9secret" not in str(caught.value)
    with server.cursor() as cur:
        cur.execute("ALTER TABLE items ADD COLUMN shape point")
    server.commit()
    # Every MariaDB type has a mapping; one the operator maps to a type PostgreSQL lacks is named.
    bad = config(tmp_path, '[sources.apac.types]\npoint = "geometry"\n')
    with pytest.raises(SchemaError, match='column "shape".*no type geometry'):
        fetch(pg_dsn, bad, environ={"FETCH_TEST_MY": url})
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('shop.items')").fetchone() == (None,)


def test_kept_counts_of_a_text_key_from_mariadb(pg_dsn, mysql_db, tmp_path, caplog):
    """A varchar key: buckets by md5 of its text, kept in the warehouse by each incremental
    pull after the first (which builds them); a key
    deleted, re-inserted and deleted again is found each time without scanning the warehouse,
    and the kept counts equal a fresh count of the child's live keys."""
    import logging

    caplog.set_level(logging.INFO)
    url, server = mysql_db
    env = {"FETCH_TEST_MY": url}
    with server.cursor() as cur:
        cur.execute(
            "CREATE TABLE codes (code varchar(20) PRIMARY KEY, n int, updated_at datetime NOT NULL)"
        )
        cur.execute(
            "INSERT INTO codes SELECT concat('c-', seq), seq, '2024-01-01' + interval seq second"
            " FROM seq_1_to_300"
        )
    server.commit()
    cfg = config(tmp_path, '\n[sources.apac.incremental.codes]\ncursor = "updated_at"\n')
    cfg = dataclasses.replace(cfg, pattern="codes")
    fetch(pg_dsn, cfg, environ=env)
    fetch(pg_dsn, cfg, incremental=True, environ=env)  # the first one builds the counts

    def incremental(*changes: str) -> int:
        with server.cursor() as cur:
            for change in changes:
                cur.execute(change)
        server.commit()
        caplog.clear()
        (report,) = fetch(pg_dsn, cfg, incremental=True, environ=env)
        assert "scanning the warehouse's keys" not in caplog.text
        assert report.checks[0].startswith("counts ok"), report.checks
        with psycopg.connect(pg_dsn) as conn:
            kept = conn.execute(
                "SELECT bucket, n, total FROM shop._fetch_key_buckets WHERE n <> 0 ORDER BY 1"
            ).fetchall()
            fresh = conn.execute(
                "SELECT left(md5(code), 3), count(*),"
                " sum(('x' || substr(md5(code), 4, 7))::bit(28)::int) FROM ONLY shop.codes__vv1"
                " WHERE _deleted_at IS NULL GROUP BY 1 ORDER BY 1"
            ).fetchall()
        assert kept == fresh and kept
        return report.deleted

    assert incremental("DELETE FROM codes WHERE code IN ('c-7', 'c-8')") == 2
    assert (
        incremental(
            "INSERT INTO codes VALUES ('c-7', 7, '2025-01-01')",
            "UPDATE codes SET n = -9, updated_at = '2025-01-02' WHERE code = 'c-9'",
        )
        == 0
    )
    assert incremental("DELETE FROM codes WHERE code = 'c-7'") == 1
    with psycopg.connect(pg_dsn) as conn:
        gone = conn.execute(
            "SELECT code FROM ONLY shop.codes__vv1 WHERE _deleted_at IS NOT NULL ORDER BY 1"
        ).fetchall()
        assert gone == [("c-7",), ("c-8",)]
        assert conn.execute("SELECT count(*) FROM ONLY shop.codes__vv1").fetchone() == (300,)


def test_mariadb_keys_read_whole_or_in_batches(mysql_db, tmp_path):
    """An integer key's values (the delete detection's source side) come back as one
    GROUP_CONCAT, or in key order in batches where that text would be cut (longer than
    max_allowed_packet): the same keys either way; a cut text is noticed."""
    url, server = mysql_db
    with server.cursor() as cur:
        cur.execute("INSERT INTO items (id, updated_at) SELECT seq, '2024-01-01' FROM seq_3_to_50")
        cur.execute("ANALYZE TABLE items")
    server.commit()
    source = open_source(config(tmp_path), {"FETCH_TEST_MY": url})
    assert isinstance(source, MySQLSource)
    try:
        whole = source.integer_keys("items", "id", 1000)
        batched = source.integer_keys("items", "id", 1000, batch=7)
        assert whole is not None and batched is not None
        assert sorted(whole.tolist()) == batched.tolist() == list(range(1, 51))
        assert source.integer_keys("items", "id", 10) is None  # more rows than allowed
        source._run("SET SESSION group_concat_max_len = 20")
        joined = "SELECT COUNT(id), GROUP_CONCAT(id) FROM items"
        assert source._joined_keys(joined, "items") is None
    finally:
        source.close()
