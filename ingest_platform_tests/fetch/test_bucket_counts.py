"""The kept key-bucket counts of the delete detection (``fetch.bucket_counts``) against real
PostgreSQL: after every kind of change that could make them drift they equal a fresh count of the
child's live keys, deletes are found exactly, and counts that cannot be trusted are rebuilt from a
scan, with a log line saying why."""

from __future__ import annotations

import logging

import psycopg

from ingest_platform.fetch import key_arrays
from ingest_platform.fetch.config import load_config
from ingest_platform.fetch.pull import fetch
from ingest_platform_tests.fetch.test_fetch import PG_CONFIG, rows, seed_pg, write_config

SCANNED = "scanning the warehouse's keys"


def kept_equals_a_fresh_count(pg_dsn: str) -> None:
    (width,) = rows(pg_dsn, "SELECT width FROM shop._fetch_key_bucket_state")[0]
    kept = rows(
        pg_dsn,
        "SELECT bucket, n, total FROM shop._fetch_key_buckets WHERE n <> 0 ORDER BY 1",
    )
    fresh = rows(
        pg_dsn,
        f"SELECT (id / {width})::text, count(*), sum(id) FROM ONLY shop.orders__vv1"
        " WHERE _deleted_at IS NULL GROUP BY 1 ORDER BY 1",
    )
    assert kept == fresh and kept


def same_keys(pg_dsn: str, source_dsn: str) -> set[int]:
    """The warehouse's live keys equal the source's; each key once. The soft-deleted keys."""
    source = {r[0] for r in rows(source_dsn, "SELECT id FROM orders")}
    warehouse = rows(pg_dsn, "SELECT id, _deleted_at IS NOT NULL FROM shop.orders__vv1")
    assert len(warehouse) == len({i for i, _ in warehouse})
    assert {i for i, gone in warehouse if not gone} == source
    return {i for i, gone in warehouse if gone}


def test_kept_counts_survive_reinserts_updates_and_full_pulls(pg_dsn, source_dsn, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}

    def incremental(changes: list[str], first: bool = False) -> tuple[int, int]:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            for change in changes:
                conn.execute(change)
        caplog.clear()
        (report,) = [r for r in fetch(pg_dsn, config, True, environ=env) if r.table == "orders"]
        assert report.checks[0].startswith("counts ok"), report.checks
        # The first pull after a snapshot pull scans the child and builds the counts; the others
        # find them current (had they drifted, the keys read in differing buckets would have
        # shown it and the child been scanned: correct, but a failure of this test).
        assert (SCANNED in caplog.text) == first
        kept_equals_a_fresh_count(pg_dsn)
        return report.rows, report.deleted

    fetch(pg_dsn, config, environ=env)
    assert incremental(["DELETE FROM orders WHERE id = 4"], first=True) == (0, 1)
    assert incremental(["DELETE FROM orders WHERE id = 5"]) == (0, 1)
    # The deleted key back (its soft-deleted row replaced), a row updated under its key, a new key.
    assert incremental(
        [
            "INSERT INTO orders VALUES (5, 1, 2, 'back', '2025-01-01')",
            "UPDATE orders SET note = 'changed', updated_at = '2025-01-02' WHERE id = 6",
            "INSERT INTO orders VALUES (1017, 1, 2, 'new', '2025-01-03')",
        ]
    ) == (3, 0)
    assert same_keys(pg_dsn, source_dsn) == {4}
    # Deleted again, beside a neighbour in the same bucket: exactly those two.
    assert incremental(["DELETE FROM orders WHERE id IN (5, 7)"]) == (0, 2)
    assert same_keys(pg_dsn, source_dsn) == {4, 5, 7}
    # A full pull replaces the child; the next incremental pull rebuilds the counts.
    fetch(pg_dsn, config, environ=env)
    assert incremental(["DELETE FROM orders WHERE id = 8"], first=True) == (0, 1)
    assert incremental(["DELETE FROM orders WHERE id = 9"]) == (0, 1)
    assert same_keys(pg_dsn, source_dsn) == {8, 9}


def test_counts_that_cannot_be_trusted_are_rebuilt_from_a_scan(
    pg_dsn, source_dsn, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    fetch(pg_dsn, config, True, environ=env)  # the first incremental pull builds the counts

    def incremental(source_change: str, warehouse_change: str) -> int:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute(source_change)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(warehouse_change)
        caplog.clear()
        (report,) = [r for r in fetch(pg_dsn, config, True, environ=env) if r.table == "orders"]
        kept_equals_a_fresh_count(pg_dsn)
        return report.deleted

    # Written by another version of the code.
    assert (
        incremental(
            "DELETE FROM orders WHERE id = 20", "UPDATE shop._fetch_key_bucket_state SET format = 0"
        )
        == 1
    )
    assert "kept key-bucket counts of format 0" in caplog.text and SCANNED in caplog.text
    # Behind the watermark (a pull that moved it without keeping the counts).
    assert (
        incremental(
            "DELETE FROM orders WHERE id = 21",
            "UPDATE shop._fetch_key_bucket_state SET position = NULL",
        )
        == 1
    )
    assert "behind the watermark" in caplog.text
    # Missing altogether.
    assert (
        incremental("DELETE FROM orders WHERE id = 22", "DROP TABLE shop._fetch_key_bucket_state")
        == 1
    )
    assert "no kept key-bucket counts" in caplog.text
    # Drifted (a hand edit): a wrong count in a bucket without deletes shows as a difference from
    # the source; the keys read there expose the drift, the counts are rebuilt, nothing deleted.
    assert (
        incremental("SELECT 1", "UPDATE shop._fetch_key_buckets SET n = n + 1 WHERE bucket = '10'")
        == 0
    )
    assert "differ from the keys in 1 bucket(s) (first: 10)" in caplog.text
    assert same_keys(pg_dsn, source_dsn) == {20, 21, 22}
    # Current again: no scan.
    assert incremental("DELETE FROM orders WHERE id = 23", "SELECT 1") == 1
    assert SCANNED not in caplog.text
    assert same_keys(pg_dsn, source_dsn) == {20, 21, 22, 23}


def test_counts_of_a_dropped_child_go_with_the_next_rebuild(pg_dsn, source_dsn, tmp_path):
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    fetch(pg_dsn, config, True, environ=env)  # builds the counts
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # what a dropped version leaves
        conn.execute("CREATE TABLE shop.orders__vold (id int)")
        conn.execute(
            "INSERT INTO shop._fetch_key_bucket_state SELECT 'orders__vold',"
            " 'shop.orders__vold'::regclass, format, integer_key, width, digits, watermark_key,"
            " position FROM shop._fetch_key_bucket_state"
        )
        conn.execute(
            "INSERT INTO shop._fetch_key_buckets SELECT 'orders__vold', bucket, n, total"
            " FROM shop._fetch_key_buckets"
        )
        conn.execute("DROP TABLE shop.orders__vold")
    fetch(pg_dsn, config, environ=env)  # a new child: the next incremental pull rebuilds
    fetch(pg_dsn, config, True, environ=env)
    for table in ("_fetch_key_bucket_state", "_fetch_key_buckets"):
        children = rows(pg_dsn, f"SELECT DISTINCT child FROM shop.{table}")
        assert children == [("orders__vv1",)]
    kept_equals_a_fresh_count(pg_dsn)


def test_deletes_named_by_bucket_sums_read_where_they_share_a_bucket(
    pg_dsn, source_dsn, tmp_path, caplog, monkeypatch
):
    """A PostgreSQL source's keys are compared in numpy (64-key buckets): a bucket with one
    delete names its key, two deletes in a bucket have its keys read; a source with more keys
    than one array should hold is grouped in the source instead. Each way: exactly the deletes."""
    caplog.set_level(logging.DEBUG, logger="ingest_platform.fetch")
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    fetch(pg_dsn, config, True, environ=env)  # builds the counts
    assert rows(pg_dsn, "SELECT width FROM shop._fetch_key_bucket_state") == [(64,)]

    def incremental(change: str) -> int:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute(change)
        caplog.clear()
        (report,) = [r for r in fetch(pg_dsn, config, True, environ=env) if r.table == "orders"]
        assert report.checks[0].startswith("counts ok"), report.checks
        assert SCANNED not in caplog.text
        kept_equals_a_fresh_count(pg_dsn)
        return report.deleted

    assert incremental("DELETE FROM orders WHERE id IN (1, 100, 300, 990)") == 4
    assert "4 key bucket(s) differ; 4 named their deleted key by count and sum" in caplog.text
    assert incremental("DELETE FROM orders WHERE id IN (500, 501)") == 2  # both in bucket 7
    assert "1 key bucket(s) differ; 0 named" in caplog.text
    monkeypatch.setattr(key_arrays, "MAX_KEYS", 10)
    assert incremental("DELETE FROM orders WHERE id = 700") == 1
    assert "1 key bucket(s) differ; 0 named" in caplog.text
    assert same_keys(pg_dsn, source_dsn) == {1, 100, 300, 990, 500, 501, 700}


def test_a_solved_key_that_is_not_live_is_drift_and_deletes_nothing(
    pg_dsn, source_dsn, tmp_path, caplog
):
    """Kept numbers edited by hand so that a bucket's count and sum name a key that is already
    soft-deleted: its UPDATE finds it not live, nothing of the comparison is committed, the
    drift is logged and the counts rebuilt from a scan, which finds the one real delete."""
    caplog.set_level(logging.INFO)
    seed_pg(source_dsn)
    config = load_config(write_config(tmp_path, PG_CONFIG))["eu"]
    env = {"FETCH_TEST_EU": source_dsn}
    fetch(pg_dsn, config, environ=env)
    fetch(pg_dsn, config, True, environ=env)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id = 20")
    fetch(pg_dsn, config, True, environ=env)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE shop._fetch_key_buckets SET n = n + 1, total = total + 20 WHERE bucket = '0'"
        )
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id = 200")
    caplog.clear()
    (report,) = [r for r in fetch(pg_dsn, config, True, environ=env) if r.table == "orders"]
    assert "differ from the keys in 1 bucket(s) (first: 0)" in caplog.text
    assert SCANNED in caplog.text and report.deleted == 1
    assert same_keys(pg_dsn, source_dsn) == {20, 200}
    kept_equals_a_fresh_count(pg_dsn)
