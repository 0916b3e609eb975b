"""The demo dumps (`ingest-platform demo-dumps`): every file opens, counts and converts exactly."""

from __future__ import annotations

import re
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest

from ingest_platform.demo.dumps import demo_rows, demo_tables, write_demo_dump, write_demo_dumps
from ingest_platform.dumps import open_dump

ROWS = 500
NAMES = ["shop_1.0-eu.zip", "shop_1.0-us.zip", "shop_2.0-eu.zip", "shop_2.0-us.zip"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    write_demo_dumps(directory, rows=ROWS)
    return directory


def test_four_dumps_of_one_app_with_manifests(demo_dir):
    assert sorted(p.name for p in demo_dir.iterdir()) == NAMES  # no temporary files left behind
    for name in NAMES:
        version = name.removeprefix("shop_").removesuffix(".zip")
        with open_dump(demo_dir / name) as dump:  # dialect comes from manifest.json
            assert (dump.app, dump.version) == ("shop", version)
            assert dump.dialect.name == ("mssql" if version.endswith("eu") else "mysql")
            expected = ["customer", "orders"] + (
                ["order_item"] if version.startswith("2.0") else []
            )
            assert sorted(dump.tables) == sorted(expected)


@pytest.mark.parametrize("name", NAMES)
def test_every_table_has_exactly_rows_records(demo_dir, name):
    with open_dump(demo_dir / name) as dump:
        for table in dump.tables:
            assert dump.count_rows(table) == ROWS, table
            copy_text = b"".join(dump.iter_copy_chunks(table))
            assert copy_text.count(b"\n") == ROWS, table  # COPY text: raw LF only ends a record


@pytest.mark.parametrize("name", NAMES)
def test_copy_text_holds_the_generated_values(demo_dir, name):
    """Parse the COPY text back and compare with the values the generator encoded."""
    version, region = name.removeprefix("shop_").removesuffix(".zip").split("-")
    with open_dump(demo_dir / name) as dump:
        for table in demo_tables(version):
            kinds = [c.kind for c in table.columns]
            records = b"".join(dump.iter_copy_chunks(table.name)).decode("utf-8").split("\n")[:-1]
            for record, expected in zip(
                records, demo_rows(table, version, region, ROWS), strict=True
            ):
                fields = [_copy_field(f) for f in record.split("\t")]
                assert [_as_value(f, k) for f, k in zip(fields, kinds, strict=True)] == list(
                    expected
                )


def test_schemas_evolve_between_versions(demo_dir):
    def columns(name, table):
        with open_dump(demo_dir / name) as dump:
            return {c.name: c.pg_type for c in dump.tables[table].schema.columns}

    for region in ("eu", "us"):
        old, new = f"shop_1.0-{region}.zip", f"shop_2.0-{region}.zip"
        assert set(columns(new, "customer")) - set(columns(old, "customer")) == {"country"}
        assert (columns(old, "orders")["id"], columns(new, "orders")["id"]) == ("integer", "bigint")
        assert (columns(old, "orders")["note"], columns(new, "orders")["note"]) == (
            "varchar(50)",
            "varchar(100)",
        )
        assert columns(new, "order_item")["checksum"] == "bytea"
        with open_dump(demo_dir / new) as dump:
            assert all(entry.schema.primary_key == ["id"] for entry in dump.tables.values())


def test_files_look_like_what_the_exporters_write(demo_dir):
    with zipfile.ZipFile(demo_dir / "shop_2.0-eu.zip") as archive:
        script = archive.read("install.sql").decode()
        orders, customer = archive.read("orders.dat"), archive.read("customer.dat")
        items = archive.read("order_item.dat")
    assert "BULK INSERT [dbo].[orders]" in script and "FIELDTERMINATOR = '+|'" in script
    assert "ADD CONSTRAINT [PK_customer] PRIMARY KEY" in script
    assert b"+|\0+|" in orders  # bcp: an empty string is one NUL byte ...
    assert b"+|+|" in orders  # ... and NULL an empty field
    assert b"gift\twrap please" in orders and orders.endswith(b"&|\n")
    assert re.search(rb"\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.000\t-?\d+\.\d{4}\t[01]\t", customer)
    assert re.search(rb"\t[0-9A-F]{16}\n", items)  # varbinary as bare hex
    with zipfile.ZipFile(demo_dir / "shop_2.0-us.zip") as archive:
        orders = archive.read("orders.txt")
        assert b"CREATE TABLE `orders`" in archive.read("orders.sql")
    assert b"\t\\N\t" in orders and b"gift\\\twrap please" in orders and b"C:\\\\orders" in orders


def test_same_arguments_write_the_same_bytes(tmp_path):
    first = write_demo_dump(tmp_path, "2.0", "us", rows=50).read_bytes()
    (tmp_path / "again").mkdir()
    assert write_demo_dump(tmp_path / "again", "2.0", "us", rows=50).read_bytes() == first


def test_writing_streams_instead_of_building_files_in_memory(tmp_path, monkeypatch):
    # Small write batches: a streaming writer's peak is then the same for 3k and 12k rows.
    monkeypatch.setattr("ingest_platform.demo.dumps.ROWS_PER_WRITE", 500)
    peaks = []
    for rows in (3_000, 12_000):
        tracemalloc.start()
        try:
            write_demo_dump(tmp_path, "1.0", "us", rows=rows)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.2, f"peak memory grew with rows: {peaks}"


# ------------------------------------------------------------------ COPY text decoding

_COPY_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def _copy_field(text: str) -> str | None:
    if text == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), text)


def _as_value(field: str | None, kind: str):
    if field is None:
        return None
    parsers: dict[str, Callable[[str], object]] = {
        "int": int,
        "text": str,
        "datetime": datetime.fromisoformat,
        "decimal2": lambda f: int(Decimal(f).scaleb(2)),
        "decimal4": lambda f: int(Decimal(f).scaleb(4)),
        "flag": lambda f: {"1": True, "0": False}[f],
        "bytes": lambda f: bytes.fromhex(f.removeprefix("\\x")),
    }
    return parsers[kind](field)
