"""Direct fetch against real servers: a second PostgreSQL database as the source, and MariaDB at
127.0.0.1:3306 (root, no password; skipped with the reason when absent)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ingest_platform.errors import ConfigError, SchemaError, ServiceUnavailableError
from ingest_platform.fetch import pull
from ingest_platform.fetch.config import load_config
from ingest_platform.fetch.pull import CursorWentBackwards, fetch
from ingest_platform.fetch.sources import open_source
from ingest_platform.local.cli import main

PROJECT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(textwrap.dedent(body))
    return path


PG_CONFIG = """
    [sources.eu]
    kind = "postgres"
    dsn_env = "FETCH_TEST_EU"
    app = "shop"
    tables = ["orders", "customers"]
    version = "v1"

    [sources.eu.incremental.orders]
    cursor = "updated_at"
"""


def seed_pg(dsn: str, rows: int = 1000) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2),"
            " note text, updated_at timestamptz NOT NULL)"
        )
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name varchar(40))")
        conn.execute(
            "INSERT INTO orders SELECT g, g %% 10, g * 1.5, 'n\t' || g,"
            " '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(0, 9) g")


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_snapshot_then_incremental_from_postgres(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    reports = fetch(pg_dsn, config, environ=env)
    assert {(r.table, r.rows, r.mode) for r in reports} == {
        ("orders", 1000, "snapshot"),
        ("customers", 10, "snapshot"),
    }
    assert all(any(c.startswith("hashes ok") for c in r.checks) for r in reports)
    assert rows(pg_dsn, "SELECT count(*), sum(amount) FROM shop.orders WHERE _version = 'v1'") == [
        (1000, 750750.0)
    ]
    assert rows(pg_dsn, "SELECT note FROM shop.orders WHERE id = 7") == [("n\t7",)]

    # 1% changed, one new, two deleted: only those rows travel; deletes are soft.
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET amount = -1, updated_at = '2025-01-01' WHERE id % 100 = 0")
        conn.execute("INSERT INTO orders VALUES (5000, 1, 2, 'new', '2025-01-02')")
        conn.execute("DELETE FROM orders WHERE id IN (3, 4)")
    reports = fetch(pg_dsn, config, incremental=True, environ=env, chunk_rows=4)
    by_table = {r.table: r for r in reports}
    assert by_table["orders"].mode == "incremental"
    assert by_table["orders"].rows == 11
    assert by_table["orders"].deleted == 2
    assert by_table["customers"].mode == "snapshot"  # no cursor: a snapshot each time
    assert rows(
        pg_dsn,
        "SELECT count(*), count(*) FILTER (WHERE amount = -1),"
        " count(*) FILTER (WHERE _deleted_at IS NOT NULL) FROM shop.orders",
    ) == [(1001, 10, 2)]
    # Nothing new: nothing pulled.
    again = {r.table: r for r in fetch(pg_dsn, config, incremental=True, environ=env)}
    assert again["orders"].rows == 0 and again["orders"].deleted == 0


def test_deletes_found_by_bucket_counts_even_beside_an_insert(pg_dsn, source_dsn, tmp_path):
    """Keys 992..1007 share one key bucket (id DIV 16): an insert and a delete there keep the
    source's count, yet the delete is found, and the checks pass on counts and changed rows."""
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1001, 1, 2, 'new', '2025-01-02')")
        conn.execute("DELETE FROM orders WHERE id = 1000")
    (report,) = [r for r in fetch(pg_dsn, config, True, environ=env) if r.table == "orders"]
    assert (report.rows, report.deleted) == (1, 1)
    assert report.checks == ["counts ok (1000)", "hashes of changed rows ok (1 rows)"]
    assert rows(
        pg_dsn, "SELECT id FROM shop.orders WHERE _deleted_at IS NOT NULL OR id = 1001 ORDER BY 1"
    ) == [(1000,), (1001,)]


def test_checks_of_an_incremental_pull_name_what_differs(pg_dsn, source_dsn, tmp_path):
    """A row committed with a cursor older than the watermark (with a delete in its bucket, so
    the counts match) is named as missed; a changed row whose value differs in the warehouse is
    named by the bucket hashes of the changed rows."""
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    # A fault on the warehouse's write path: a trigger that alters the value being upserted.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (child,) = conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = 'shop.orders'::regclass"
        ).fetchone()
        conn.execute(
            "CREATE FUNCTION shop.damage() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN NEW.amount := 99; RETURN NEW; END$$"
        )
        conn.execute(
            f"CREATE TRIGGER damage BEFORE INSERT ON {child} FOR EACH ROW"
            " WHEN (NEW.id = 10) EXECUTE FUNCTION shop.damage()"
        )
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET amount = 0, updated_at = '2025-01-01' WHERE id = 10")
    with pytest.raises(pull.CheckFailed, match=r"changed rows differ.*'id': '10'.*amount"):
        fetch(pg_dsn, config, True, environ=env)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER damage ON {child}")
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1002, 1, 2, 'late', '2024-01-01')")
        conn.execute("DELETE FROM orders WHERE id = 999")
    with pytest.raises(pull.CheckFailed, match="never pulled.*first key: 1002.*full pull"):
        fetch(pg_dsn, config, True, environ=env)
    assert rows(pg_dsn, "SELECT id FROM shop.orders WHERE _deleted_at IS NOT NULL") == [(999,)]


def test_parallel_readers_share_one_snapshot(pg_dsn, source_dsn, tmp_path):
    """A second reader adopts the pull's exported snapshot: a row committed after the export is
    invisible to both, visible to a new transaction; a snapshot pull of two tables (two readers)
    lands both, checked."""
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    source = open_source(config, {"FETCH_TEST_EU": source_dsn})
    try:
        source.begin_snapshot()
        helper = source.sharing(source.export_snapshot())
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO customers VALUES (99, 'late')")
        try:
            assert source.count("customers") == helper.count("customers") == 10
        finally:
            helper.close()
        source.end()
        assert source.count("customers") == 11
    finally:
        source.close()
    reports = fetch(pg_dsn, config, environ={"FETCH_TEST_EU": source_dsn})
    assert {(r.table, r.rows) for r in reports} == {("orders", 1000), ("customers", 11)}
    assert all(any(c.startswith("hashes ok") for c in r.checks) for r in reports)


def test_cursor_going_backwards_is_reported(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn, 50)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET updated_at = '2000-01-01'")
    with pytest.raises(CursorWentBackwards, match="went backwards.*without --incremental"):
        fetch(pg_dsn, config, incremental=True, environ=env)
    # The full pull offered works.
    assert fetch(pg_dsn, config, environ=env)[0].rows == 50


def test_schema_drift_follows_the_evolution_rules(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn, 20)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ADD COLUMN channel text DEFAULT 'web'")
        conn.execute("ALTER TABLE customers ALTER COLUMN name TYPE varchar(80)")
    reports = {r.table: r for r in fetch(pg_dsn, config, incremental=True, environ=env)}
    assert reports["orders"].mode == "snapshot"  # drift: a snapshot applies the rules
    assert any("channel" in c for c in reports["orders"].schema_changes)
    assert rows(pg_dsn, "SELECT DISTINCT channel FROM shop.orders") == [("web",)]
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE customers ALTER COLUMN name TYPE int USING 1")
    with pytest.raises(SchemaError, match='column "name".*incompatible'):
        fetch(pg_dsn, config, environ=env)
    assert rows(pg_dsn, "SELECT DISTINCT pg_typeof(name)::text FROM shop.customers") == [
        ("character varying",)
    ]


def test_bad_sources_are_named_without_password(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn, 5)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    refused = "postgresql://nobody:s3cretpw@127.0.0.1:1/none"
    with pytest.raises(ServiceUnavailableError) as caught:
        fetch(pg_dsn, config, environ={"FETCH_TEST_EU": refused})
    assert "eu" in str(caught.value) and "s3cretpw" not in str(caught.value)
    with pytest.raises(ConfigError, match="FETCH_TEST_EU"):
        fetch(pg_dsn, config, environ={})
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE customers")
    with pytest.raises(SchemaError, match="table customers does not exist"):
        fetch(pg_dsn, config, environ={"FETCH_TEST_EU": source_dsn})
    assert rows(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'shop'") == [(0,)] or (
        rows(pg_dsn, "SELECT to_regclass('shop.orders') IS NULL") == [(True,)]
    )


def test_unmapped_type_and_failed_pull_shows_nothing(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn, 5)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        conn.execute("ALTER TABLE customers ADD COLUMN feeling mood DEFAULT 'ok'")
    path = write_config(tmp_path, PG_CONFIG)
    env = {"FETCH_TEST_EU": source_dsn}
    with pytest.raises(SchemaError, match='column "feeling".*no type mood'):
        fetch(pg_dsn, load_config(path)["eu"], environ=env)
    # orders had loaded before customers failed: nothing of the version is visible.
    assert rows(pg_dsn, "SELECT to_regclass('shop.orders')") == [(None,)]
    path.write_text(path.read_text() + '\n[sources.eu.types]\nmood = "text"\n')
    reports = fetch(pg_dsn, load_config(path)["eu"], environ=env)
    assert {r.table for r in reports} == {"orders", "customers"}
    assert rows(pg_dsn, "SELECT DISTINCT feeling FROM shop.customers") == [("ok",)]


def test_cli_prints_a_table(pg_dsn, source_dsn, tmp_path, capsys, monkeypatch):
    seed_pg(source_dsn, 30)
    path = write_config(tmp_path, PG_CONFIG)
    monkeypatch.setenv("FETCH_TEST_EU", source_dsn)
    assert main(["fetch", "--config", str(path), "--dsn", pg_dsn]) == 0
    out = capsys.readouterr().out
    assert "orders" in out and "snapshot" in out and "30" in out and "hashes ok" in out
    assert main(["fetch", "--config", str(path), "--dsn", pg_dsn, "--source", "nope"]) == 1


def test_config_mistakes(tmp_path):
    with pytest.raises(ConfigError, match="kind must be one of"):
        load_config(write_config(tmp_path, PG_CONFIG.replace('"postgres"', '"oracle"')))
    with pytest.raises(ConfigError, match="either version"):
        load_config(write_config(tmp_path, PG_CONFIG.replace('version = "v1"', "")))
    with pytest.raises(ConfigError, match="version 'a b'"):
        load_config(write_config(tmp_path, PG_CONFIG.replace('"v1"', '"a b"')))


@pytest.mark.slow
def test_kill_9_mid_incremental_pull_converges(pg_dsn, source_dsn, tmp_path):
    """A pull killed between chunks resumes after its last committed chunk; nothing doubles."""
    seed_pg(source_dsn, 2000)
    path = write_config(tmp_path, PG_CONFIG)
    env = {**os.environ, "FETCH_TEST_EU": source_dsn, "PYTHONPATH": str(PROJECT)}
    config = load_config(path)["eu"]
    fetch(pg_dsn, config, environ=env)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET updated_at = '2030-01-01', amount = 7")
    script = (
        "import sys, logging; from ingest_platform.fetch.config import load_config;"
        "from ingest_platform.fetch.pull import fetch; import ingest_platform.fetch.pull as p;"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s');"
        f"fetch({pg_dsn!r}, load_config({str(path)!r})['eu'], True, chunk_rows=20)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:
        if "rows pulled" in line and int(line.split(": ")[1].split()[0]) >= 200:
            child.kill()
            break
    child.wait(timeout=30)
    done = rows(pg_dsn, "SELECT count(*) FROM shop.orders WHERE amount = 7")[0][0]
    assert 0 < done < 2000
    reports = {r.table: r for r in fetch(pg_dsn, config, incremental=True, environ=env)}
    assert reports["orders"].rows == 2000 - done  # resumed, not from zero
    assert rows(pg_dsn, "SELECT count(*), count(DISTINCT id), min(amount) FROM shop.orders") == [
        (2000, 2000, 7)
    ]


def _terminator(server_dsn: str, database: str, stop: threading.Event, once: bool) -> None:
    """Terminate the source database's COPY backends (once, or until `stop`)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        while not stop.is_set():
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() AND query LIKE 'COPY%%'",
                (database,),
            ).fetchone()
            if once and killed and killed[0]:
                return
            time.sleep(0.005)


@pytest.mark.parametrize("once", [True, False], ids=["retried", "given-up"])
def test_source_dropping_the_connection(
    pg_dsn, pg_server_dsn, source_dsn, tmp_path, monkeypatch, once, caplog
):
    seed_pg(source_dsn, 300_000)
    monkeypatch.setattr(pull, "RETRY_PAUSE", 0.01)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    database = psycopg.conninfo.conninfo_to_dict(source_dsn)["dbname"]
    stop = threading.Event()
    killer = threading.Thread(target=_terminator, args=(pg_server_dsn, database, stop, once))
    killer.start()
    try:
        if once:
            reports = fetch(pg_dsn, config, environ={"FETCH_TEST_EU": source_dsn})
            assert {r.table: r.rows for r in reports} == {"orders": 300_000, "customers": 10}
            assert "broke off" in caplog.text and "retrying (1/2)" in caplog.text
        else:
            with pytest.raises(ServiceUnavailableError, match="Source eu.*gave up after 3"):
                fetch(pg_dsn, config, environ={"FETCH_TEST_EU": source_dsn})
            assert rows(pg_dsn, "SELECT to_regclass('shop.orders')") == [(None,)]
            assert rows(
                pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%load%%'"
            ) == [(0,)]
    finally:
        stop.set()
        killer.join()
