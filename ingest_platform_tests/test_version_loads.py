"""A dump version becomes visible whole or not at all; two loads of one version serialize.

Issue 12 ("a version visible whole") and issue 20 ("a failed reload destroys the good version",
"the same dump loaded twice at once", "a failed first load leaves an empty parent").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingest_platform.dumps.directory import describe_dump
from ingest_platform.errors import FormatError
from ingest_platform.loading.dump_versions import load_dump_version
from ingest_platform.postgres.quarantine import QUARANTINE_TABLE, quarantined_count
from ingest_platform.postgres.version_lock import version_lock
from ingest_platform_tests.conftest import make_zip
from ingest_platform_tests.test_dump_assets import TRANSLATOR, dump_definitions, run_dump
from ingest_platform_tests.test_dump_loading import leftover_load_tables, versions_of

pytestmark = pytest.mark.postgres

SCHEMA = {
    "columns": [
        {"name": "id", "type": "int"},
        {"name": "note", "type": "text"},
        {"name": "amount", "type": "decimal(10,2)"},
    ],
    "primary_key": ["id"],
}


def rows(count: int, start: int = 1) -> list[str]:
    return [f"{i}\tnote {i}\t{i}.25\n" for i in range(start, start + count)]


def shop_dump(
    directory: Path, version: str, tables: dict[str, list[str]], max_errors: dict | None = None
) -> Path:
    """A MySQL --tab dump of app shop; `max_errors`: table -> its reject budget."""
    manifest: dict = {"app": "shop", "version": version, "dialect": "mysql"}
    if max_errors:
        manifest["tables"] = {t: {"max_errors": n} for t, n in max_errors.items()}
    members: dict[str, str] = {"manifest.json": json.dumps(manifest)}
    for table, data in tables.items():
        members[f"{table}.json"] = json.dumps(SCHEMA)
        members[f"{table}.txt"] = "".join(data)
    directory.mkdir(parents=True, exist_ok=True)
    return make_zip(directory / f"shop_{version}.zip", members)


def with_bad_amount(data: list[str], index: int) -> list[str]:
    bad = list(data)
    bad[index] = f"{index + 1}\tbad\tnot a number\n"
    return bad


def registry(dsn: str) -> dict[tuple[str, str], tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return {
            (t, v): (n, d)
            for t, v, n, d in conn.execute(
                "SELECT table_name, version, rows, dump FROM shop._ingest_versions"
            )
        }


def parent_exists(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass(%s)", (f"shop.{table}",)).fetchone() != (None,)


def test_a_failed_reload_keeps_the_previous_load_whole(pg_dsn, tmp_path):
    load_dump_version(
        pg_dsn, shop_dump(tmp_path / "a", "1.0", {"customer": rows(20), "orders": rows(2000)})
    )
    before = registry(pg_dsn)
    # The reload's orders is valid but shorter; its customer has a bad value: nothing changes.
    bad = shop_dump(
        tmp_path / "b", "1.0", {"customer": with_bad_amount(rows(20), 4), "orders": rows(1500)}
    )
    with pytest.raises(FormatError) as raised:
        load_dump_version(pg_dsn, bad, processes=2)
    assert "customer.txt" in str(raised.value) and "record 5" in str(raised.value)
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 2000}
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 20}
    assert registry(pg_dsn) == before
    assert leftover_load_tables(pg_dsn) == []


def test_a_new_version_with_a_bad_table_shows_no_table_of_it_and_no_empty_parent(pg_dsn, tmp_path):
    load_dump_version(pg_dsn, shop_dump(tmp_path / "a", "1.0", {"customer": rows(5)}))
    tables = {"customer": with_bad_amount(rows(5), 2), "orders": rows(50), "newt": rows(3)}
    with pytest.raises(FormatError):
        load_dump_version(pg_dsn, shop_dump(tmp_path / "b", "1.1", tables))
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 5}
    assert not parent_exists(pg_dsn, "orders") and not parent_exists(pg_dsn, "newt")
    assert leftover_load_tables(pg_dsn) == []
    # The fixed dump of the same version loads every table.
    tables["customer"] = rows(5)
    load_dump_version(pg_dsn, shop_dump(tmp_path / "c", "1.1", tables))
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 5, "1.1": 5}
    assert versions_of(pg_dsn, "shop", "newt") == {"1.1": 3}
    assert versions_of(pg_dsn, "shop", "orders") == {"1.1": 50}


def quarantine_rows(dsn: str) -> int:
    """Every row of the quarantine table, pending or visible."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"shop.{QUARANTINE_TABLE}",)).fetchone() == (
            None,
        ):
            return 0
        return conn.execute(f"SELECT count(*) FROM shop.{QUARANTINE_TABLE}").fetchone()[0]


def test_quarantined_records_appear_with_their_version_and_not_before(pg_dsn, tmp_path):
    orders = with_bad_amount(with_bad_amount(rows(100), 9), 19)  # two bad records, budget 5
    failing = {"orders": orders, "customer": with_bad_amount(rows(10), 0)}  # customer: strict
    with pytest.raises(FormatError):
        load_dump_version(pg_dsn, shop_dump(tmp_path / "a", "2.0", failing, {"orders": 5}))
    assert not parent_exists(pg_dsn, "orders") and quarantine_rows(pg_dsn) == 0

    fixed = {"orders": orders, "customer": rows(10)}
    reports = load_dump_version(pg_dsn, shop_dump(tmp_path / "b", "2.0", fixed, {"orders": 5}))
    assert {r.table: (r.rows, r.quarantined) for r in reports} == {
        "orders": (98, 2),
        "customer": (10, 0),
    }
    assert versions_of(pg_dsn, "shop", "orders") == {"2.0": 98}
    with psycopg.connect(pg_dsn) as conn:
        assert quarantined_count(conn, "shop", "2.0", "orders") == 2
    assert quarantine_rows(pg_dsn) == 2 and leftover_load_tables(pg_dsn) == []


def test_in_dagster_a_failed_table_leaves_the_version_invisible_until_a_run_finishes_it(
    pg_dsn, tmp_path
):
    broken = describe_dump(
        shop_dump(
            tmp_path / "a", "3.0", {"customer": rows(8), "orders": with_bad_amount(rows(40), 3)}
        )
    )
    defs = dump_definitions(tmp_path / "a", pg_dsn)
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_dump(defs, instance, broken)
        assert not failed.success
        # The step loads the dump's tables in order: customer staged, then orders failed.
        [customer] = [
            m
            for m in failed.get_asset_materialization_events()
            if m.asset_key == TRANSLATOR.asset_key("shop", "customer")
        ]
        metadata = customer.step_materialization_data.materialization.metadata
        assert metadata["visible"].value is False and metadata["waiting_for"].value == "orders"
        assert not parent_exists(pg_dsn, "orders") and not parent_exists(pg_dsn, "customer")

        # The fixed file, same name: one run loads both tables, and nothing is left behind.
        fixed = describe_dump(
            shop_dump(tmp_path / "a", "3.0", {"customer": rows(8), "orders": rows(40)})
        )
        assert run_dump(defs, instance, fixed).success
    assert versions_of(pg_dsn, "shop", "orders") == {"3.0": 40}
    assert versions_of(pg_dsn, "shop", "customer") == {"3.0": 8}
    assert leftover_load_tables(pg_dsn) == []


def waiting_for_version_lock(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'ingest_platform version lock' AND wait_event_type = 'Lock'"
        ).fetchone() == (1,)


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_a_second_load_of_a_version_waits_for_the_first_then_replaces_it(pg_dsn, tmp_path, caplog):
    path = shop_dump(tmp_path, "1.0", {"customer": rows(30), "orders": rows(300)})
    outcome: list = []
    caplog.set_level(logging.INFO, logger="ingest_platform")
    with version_lock(pg_dsn, "shop", "1.0"):  # another run holds the version
        second = threading.Thread(
            target=lambda: outcome.append(load_dump_version(pg_dsn, path, processes=1))
        )
        second.start()
        wait_until(lambda: waiting_for_version_lock(pg_dsn), what="the second load to wait")
        assert not parent_exists(pg_dsn, "orders")  # it waits before any DDL
    second.join(timeout=120)
    assert not second.is_alive() and len(outcome) == 1
    assert 'Another run is loading version 1.0 into schema "shop"' in caplog.text
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 300}
    assert leftover_load_tables(pg_dsn) == []


def test_the_same_dump_loaded_twice_at_once_converges(pg_dsn, tmp_path):
    path = shop_dump(tmp_path, "1.0", {"customer": rows(500), "orders": rows(5000)})
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_dump_version(pg_dsn, path, processes=2)
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert versions_of(pg_dsn, "shop", "orders") == {"1.0": 5000}
    assert versions_of(pg_dsn, "shop", "customer") == {"1.0": 500}
    assert leftover_load_tables(pg_dsn) == []
