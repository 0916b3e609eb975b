"""Hostile names and bad dumps in the code location: names derive safely, one bad dump never
takes the others down and shows where a user looks, duplicate keys fail their check."""

from __future__ import annotations

import json
import logging
import re

import dagster as dg
import psycopg
import pytest

from ingest_platform.defs.dumps import (
    KEY_CHECK,
    ROWS_CHECK,
    DumpTranslator,
    evaluate_dump_directory,
)
from ingest_platform.defs.names import dagster_name, key_part, node_name, tag_value
from ingest_platform.demo.dumps import write_demo_dumps
from ingest_platform.dumps.directory import describe_dump
from ingest_platform.local.ingest_command import summary_table
from ingest_platform_tests.conftest import make_zip
from ingest_platform_tests.test_defs import load_definitions_module
from ingest_platform_tests.test_dump_assets import dump_definitions, run_dump

HOSTILE = ["Order Details", "kunde_ü_客户", "order-items", "order_items", "class", "x" * 120]
VALID_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def dump_of(path, app: str, tables: dict[str, str], key: list[str] | None = None):
    """A MySQL-dialect dump: table -> data file text (one int column `id`)."""
    members = {"manifest.json": json.dumps({"app": app, "version": "1.0", "dialect": "mysql"})}
    for number, (table, data) in enumerate(tables.items()):
        schema = {"name": table, "columns": [{"name": "id", "type": "int"}]}
        members[f"t{number}.json"] = json.dumps({**schema, "primary_key": key or []})
        members[f"t{number}.txt"] = data
    manifest = json.loads(members["manifest.json"])
    manifest["tables"] = {t: {"data": f"t{n}.txt"} for n, t in enumerate(tables)}
    members["manifest.json"] = json.dumps(manifest)
    return make_zip(path, members)


def test_derived_names_are_valid_and_distinct():
    for name in HOSTILE:
        assert VALID_NAME.match(dagster_name(name)), name
        assert re.match(r"^[A-Za-z0-9_.-]{1,63}$", tag_value(name)), name
        assert dg.AssetKey(["dumps", key_part(name)]).to_python_identifier().isidentifier()
    assert len({dagster_name(n) for n in HOSTILE + ["my app", "my_app"]}) == len(HOSTILE) + 2
    assert len({node_name("load", ["dumps", "shop", key_part(n)]) for n in HOSTILE}) == len(HOSTILE)
    # Names that fit stay as they are: the demo's keys, jobs and groups do not change.
    assert (key_part("orders"), dagster_name("shop"), key_part("order-items")) == (
        "orders",
        "shop",
        "order-items",
    )
    assert dagster_name("Order Details").startswith("Order_Details_")
    assert dagster_name("kunde_ü_客户").startswith("kunde_u__")


def test_one_bad_dump_never_takes_the_code_location_down(tmp_path, monkeypatch, caplog):
    write_demo_dumps(tmp_path, rows=5)
    dump_of(tmp_path / "weird_1.0.zip", "shop", {name: "1\n" for name in HOSTILE})
    dump_of(tmp_path / "other_1.0.zip", "my app", {"Order Details": "1\n"})
    (tmp_path / "broken_1.0.zip").write_bytes(b"PK\x03\x04 not a zip")
    make_zip(
        tmp_path / "empty_1.0.zip",
        {"manifest.json": json.dumps({"app": "empty", "version": "", "dialect": "mysql"})},
    )
    with caplog.at_level(logging.WARNING):
        defs = load_definitions_module(tmp_path, monkeypatch)  # the real code location
    dg.Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    for name in ["orders", "customer", *HOSTILE]:
        assert dg.AssetKey(["dumps", "shop", key_part(name)]) in keys, name
        assert dg.AssetKey(["bigquery", "shop", key_part(name)]) in keys, name
    assert dg.AssetKey(["dumps", key_part("my app"), key_part("Order Details")]) in keys
    # The unreadable dumps: left out, each named in the code server's log ...
    logged = caplog.text
    assert "broken_1.0.zip: not a readable ZIP" in logged
    assert "empty_1.0.zip: manifest.json: 'version' must be a non-empty string" in logged
    # ... and in the sensor's tick.
    translator = DumpTranslator()
    log = dg.get_dagster_logger()
    first = evaluate_dump_directory(None, tmp_path, {}, translator, log, settle_seconds=0)
    second = evaluate_dump_directory(first.cursor, tmp_path, {}, translator, log, settle_seconds=0)
    reason = second.skip_reason.skip_message if second.skip_reason else ""
    assert "broken_1.0.zip: not a readable ZIP" in reason and "empty_1.0.zip" in reason, reason


def test_hostile_names_load_through_dagster(tmp_path, pg_dsn):
    dump_of(tmp_path / "weird_1.0.zip", "shop", {"Order Details": "1\n2\n", "kunde_ü_客户": "3\n"})
    defs = dump_definitions(tmp_path, pg_dsn)
    dump = describe_dump(tmp_path / "weird_1.0.zip")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_dump(defs, instance, dump)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    tables = {DumpTranslator().asset_key("shop", t): t for t in dump.tables}
    summary = summary_table(result, tables)
    assert re.search(r"^Order Details\s+2\s", summary, re.M), summary
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute('SELECT count(*) FROM shop."Order Details__v1.0"').fetchone()
        assert rows == (2,)
        assert conn.execute('SELECT id FROM shop."kunde_ü_客户"').fetchall() == [(3,)]


def test_duplicate_primary_keys_fail_the_blocking_check_naming_them(tmp_path, pg_dsn):
    dump_of(tmp_path / "shop_1.0.zip", "shop", {"orders": "1\n2\n2\n3\n3\n3\n"}, key=["id"])
    defs = dump_definitions(tmp_path, pg_dsn)
    dump = describe_dump(tmp_path / "shop_1.0.zip")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_dump(defs, instance, dump)
    assert not result.success  # a failed blocking check fails the run (and the CLI)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks[ROWS_CHECK].passed and not checks[KEY_CHECK].passed
    description = checks[KEY_CHECK].description or ""
    assert "primary key (id) of 'orders' repeats values, e.g. id=3 (3 rows), id=2 (2 rows)" in (
        description
    )
    assert "shop_1.0.zip" in description and "\n" not in description
    # Loaded as the file has it, so the rows can be looked at (decision: duplicate_keys.py).
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone() == (6,)


@pytest.mark.parametrize("key", [[], ["id"]])
def test_unique_or_undeclared_keys_pass(tmp_path, pg_dsn, key):
    dump_of(tmp_path / "shop_1.0.zip", "shop", {"orders": "1\n2\n3\n"}, key=key)
    defs = dump_definitions(tmp_path, pg_dsn)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_dump(defs, instance, describe_dump(tmp_path / "shop_1.0.zip"))
    assert result.success
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == KEY_CHECK]
    assert check.passed
