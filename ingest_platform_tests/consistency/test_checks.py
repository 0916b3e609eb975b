"""The consistency checks against a real PostgreSQL and the emulator: equal sides pass, and a
corrupted mirror (row deleted, value changed, row added) fails naming the right key."""

from __future__ import annotations

import psycopg
import pytest

from ingest_platform.bigquery.mirror import dump_source, mirror_dump_version
from ingest_platform.consistency.compare import (
    DIFFERENT,
    BigQuerySide,
    PostgresSide,
    compare_counts,
    compare_hashes,
    missing_in,
)
from ingest_platform_tests.bigquery.helpers import make_dump_table, target
from ingest_platform_tests.bigquery.test_mirror import COLUMNS, ROW_1, ROW_2

MISSING_IN_BIGQUERY, MISSING_IN_POSTGRES = missing_in("BigQuery"), missing_in("PostgreSQL")


@pytest.fixture
def conn(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        yield conn


def _sides(conn, client, mirror, schema, table, version=None):
    source = dump_source(conn, schema, table, version, bignumeric=False)
    return PostgresSide(conn, source), BigQuerySide(client, mirror.ref, source)


def test_every_type_hashes_identically_on_both_sides(conn, bigquery_resource, bq_dataset):
    rows = [ROW_1, ROW_2] + [
        (
            i,
            -3,
            None,
            None,
            None,
            1e-5 * i,
            False,
            "",
            None,
            b"",
            None,
            None,
            None,
            None,
            None,
            None,
            [],
            [],
            None,
        )
        for i in range(3, 40)
    ]
    rows.append(
        (
            99,
            0,
            None,
            None,
            None,
            float("nan"),
            None,
            "a|b:c",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            ["", None and "x" or "y"],
            None,
            "N",
        )
    )
    rows.append(
        (
            100,
            0,
            None,
            None,
            None,
            1234567.0,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    )
    make_dump_table(conn, "shop", "item", COLUMNS, {"1.0": rows}, ["id"])
    mirror = target(bq_dataset, "item")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror_dump_version(conn, client, writer, "shop", "item", "1.0", mirror)
        pg, bq = _sides(conn, client, mirror, "shop", "item")
        result = compare_hashes(pg, bq)
    assert result.passed, result.markdown()
    assert result.left_rows == result.right_rows == len(rows)


def _mirrored_table(conn, client, writer, bq_dataset, rows=300):
    columns = [
        ("id", "integer"),
        ("name", "text"),
        ("amount", "numeric(10,2)"),
        ("is_deleted", "boolean"),
    ]
    make_dump_table(
        conn,
        "app",
        "t",
        columns,
        {
            "1.0": [(i, f"n{i}", i / 4, i % 10 == 0) for i in range(rows)],
            "2.0": [(i, f"m{i}", None, False) for i in range(50)],
        },
        ["id"],
    )
    mirror = target(bq_dataset, "t")
    mirror_dump_version(conn, client, writer, "app", "t", "1.0", mirror)
    mirror_dump_version(conn, client, writer, "app", "t", "2.0", mirror)
    return mirror


def test_checks_pass_then_fail_naming_the_corrupted_keys(conn, bigquery_resource, bq_dataset):
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror = _mirrored_table(conn, client, writer, bq_dataset, rows=3000)
        pg, bq = _sides(conn, client, mirror, "app", "t")
        counts = compare_counts(pg, bq, group="_version", deleted="is_deleted")
        assert counts.passed and counts.groups["1.0"] == {"pg": (3000, 2700), "bq": (3000, 2700)}
        clean = compare_hashes(pg, bq)
        assert clean.passed and clean.buckets == 16 and not clean.differences

        client.query(f"DELETE FROM {mirror.ref} WHERE _version = '1.0' AND id = 17").result()
        client.query(
            f"UPDATE {mirror.ref} SET name = 'changed' WHERE _version = '2.0' AND id = 5"
        ).result()
        client.query(
            f"INSERT INTO {mirror.ref} (id, name, amount, is_deleted, _version) "
            f"VALUES (5000, 'extra', 1.5, false, '1.0')"
        ).result()
        client.query(
            f"UPDATE {mirror.ref} SET amount = 2.25 WHERE _version = '1.0' AND id = 8"
        ).result()
        broken = compare_hashes(pg, bq)
        counts = compare_counts(pg, bq, group="_version", deleted="is_deleted")
    assert (
        counts.passed
    )  # one row deleted and one added in 1.0: counts cannot see it, the hashes do
    assert not broken.passed
    found = {(d.key["_version"], d.key["id"]): d.status for d in broken.differences}
    assert found == {
        ("1.0", "17"): MISSING_IN_BIGQUERY,
        ("2.0", "5"): DIFFERENT,
        ("1.0", "5000"): MISSING_IN_POSTGRES,
        ("1.0", "8"): DIFFERENT,
    }
    report = broken.markdown()
    assert "missing in BigQuery" in report and "| 1.0 | 17 |" in report


def test_only_the_checked_version_is_compared_and_narrowing_goes_deeper(
    conn, bigquery_resource, bq_dataset
):
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror = _mirrored_table(conn, client, writer, bq_dataset, rows=3000)
        client.query(f"DELETE FROM {mirror.ref} WHERE _version = '1.0' AND id < 40").result()
        counts = compare_counts(
            *_sides(conn, client, mirror, "app", "t"), group="_version", deleted="is_deleted"
        )
        assert not counts.passed and counts.groups["1.0"] == {
            "pg": (3000, 2700),
            "bq": (2960, 2664),
        }
        assert counts.groups["2.0"] == {
            "pg": (50, 50),
            "bq": (50, 50),
        } and "DIFFERENT" in counts.markdown("_version")
        pg2, bq2 = _sides(conn, client, mirror, "app", "t", "2.0")
        assert compare_hashes(pg2, bq2).passed
        pg1, bq1 = _sides(conn, client, mirror, "app", "t", "1.0")
        result = compare_hashes(pg1, bq1, rows_per_bucket=1000, leaf_rows=50)
    assert result.depth >= 2 and len(result.differences) == 20 and result.more_differences
    assert all(
        d.status == MISSING_IN_BIGQUERY and int(d.key["id"]) < 40 for d in result.differences
    )


def test_a_table_without_key_is_compared_by_row_hash(conn, bigquery_resource, bq_dataset):
    make_dump_table(
        conn,
        "app",
        "nokey",
        [("a", "integer"), ("b", "text")],
        {"1": [(1, "x"), (1, "x"), (2, "y")]},
        [],
    )
    mirror = target(bq_dataset, "nokey")
    with bigquery_resource.get_client() as client, bigquery_resource.get_write_client() as writer:
        mirror_dump_version(conn, client, writer, "app", "nokey", "1", mirror)
        pg, bq = _sides(conn, client, mirror, "app", "nokey")
        assert compare_hashes(pg, bq).passed
        client.query(f"DELETE FROM {mirror.ref} WHERE b = 'y'").result()
        result = compare_hashes(pg, bq)
    assert [(d.status, list(d.key)) for d in result.differences] == [
        (MISSING_IN_BIGQUERY, ["row_hash"])
    ]
