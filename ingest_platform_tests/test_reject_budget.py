"""The reject budget (issue 12): records that cannot load are quarantined whole when the dump allows
errors; strict dumps and dumps over their budget fail as before, and nothing is lost."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingest_platform.defs.dumps import QUARANTINE_CHECK, ROWS_CHECK, build_dump_definitions
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.dumps import load_dialect, open_dump
from ingest_platform.dumps.copy_text import sql_server_hex
from ingest_platform.dumps.directory import describe_dump, scan_dump_dir
from ingest_platform.dumps.tsql_schema import read_tsql_script
from ingest_platform.errors import FormatError
from ingest_platform.io_managers.multiprocess_copy import MultiprocessCopyIOManager
from ingest_platform.loading.dump_versions import load_dump_version, load_table_version, plan_for
from ingest_platform.loading.reject_budget import RejectBudgetExceeded
from ingest_platform.postgres.quarantine import QUARANTINE_TABLE
from ingest_platform_tests.conftest import MSSQL_DIR, make_zip
from ingest_platform_tests.test_dump_assets import TRANSLATOR, run_dump
from ingest_platform_tests.test_dump_loading import leftover_load_tables, versions_of

SMALL_BLOCKS = 65536  # the 8 MB UTF-16 file then goes through the worker processes
PHOTO_LOAD = """BULK INSERT [Production].[ProductPhoto] FROM '$(SqlSamplesSourceDataPath)\
ProductPhoto.csv'
WITH (
    CHECK_CONSTRAINTS,
    CODEPAGE = '65001',
    DATAFILETYPE = 'char',
    FIELDTERMINATOR = '+|',
    ROWTERMINATOR = '&|\\n',"""


def photo_records() -> list[str]:
    """ProductPhoto.csv of the real export, as records (101 of them, varbinary photos as hex)."""
    return (MSSQL_DIR / "ProductPhoto.csv").read_text("utf-8").split("&|\n")[:-1]


def bad_photo_records() -> list[str]:
    """Record 3: a ThumbNailPhoto with an odd number of hex digits (SQL Server's CONVERT rejects
    it); record 41: ModifiedDate 2019-02-30, which SQL Server's datetime rejects too."""
    records = photo_records()
    fields = records[2].split("+|")
    fields[1] = fields[1][:-1]
    records[2] = "+|".join(fields)
    fields = records[40].split("+|")
    fields[5] = "2019-02-30 00:00:00.000"
    records[40] = "+|".join(fields)
    return records


def genuine_export(directory: Path, version: str, records: list[str], max_errors: str) -> Path:
    """The real AdventureWorks export with ProductPhoto as the issue's export has it: UTF-16 with a
    BOM, '+|' fields, '&|\\r\\n' rows, loaded by the install script's BULK INSERT (with MAXERRORS
    when `max_errors` is not empty)."""
    if not MSSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    script = (MSSQL_DIR / "instawdb.sql").read_text("utf-8")
    assert PHOTO_LOAD in script
    options = f"    MAXERRORS = {max_errors},\n" if max_errors else ""
    script = script.replace(
        PHOTO_LOAD,
        PHOTO_LOAD.split("WITH (")[0]
        + "WITH (\n    CHECK_CONSTRAINTS,\n"
        + options
        + "    DATAFILETYPE = 'widechar',\n    FIELDTERMINATOR = '+|',\n"
        + "    ROWTERMINATOR = '&|\\r\\n',",
    )
    data = "\ufeff" + "".join(record + "&|\r\n" for record in records)
    return make_zip(
        directory / f"adventureworks_{version}.zip",
        {"instawdb.sql": script, "ProductPhoto.csv": data.encode("utf-16-le")},
    )


def load_photos(pg_dsn: str, path: Path, processes: int = 1):
    with open_dump(path, dialect="mssql") as dump:
        # The export's script declares every table; this test loads one, visible on its own.
        plan = replace(plan_for(dump, "ProductPhoto", "aw"), dump_tables=())
        return load_table_version(pg_dsn, plan, processes=processes, chunk_bytes=SMALL_BLOCKS)


def quarantine_rows(pg_dsn: str, schema: str = "aw") -> list[tuple]:
    with psycopg.connect(pg_dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.{QUARANTINE_TABLE}",)).fetchone() == (
            None,
        ):
            return []
        return conn.execute(
            "SELECT table_name, version, dump, file, record, column_name, reason, raw_record"
            f' FROM "{schema}"."{QUARANTINE_TABLE}" ORDER BY table_name, version, record'
        ).fetchall()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_genuine_export_loads_with_its_bad_records_quarantined(pg_dsn, tmp_path, processes):
    records = bad_photo_records()
    report = load_photos(pg_dsn, genuine_export(tmp_path, "2025", records, "10"), processes)
    assert (report.rows, report.quarantined, report.processes) == (99, 2, processes)

    [odd, bad_date] = quarantine_rows(pg_dsn)
    place = ("ProductPhoto", "2025", "adventureworks_2025.zip", "ProductPhoto.csv")
    assert odd[:6] == (*place, 3, "ThumbNailPhoto")
    assert "odd number of hex digits" in odd[6]
    assert bad_date[:6] == (*place, 41, "ModifiedDate")
    assert "2019-02-30" in bad_date[6]
    # The raw records, byte for byte as the file has them (UTF-16 LE, without the row terminator).
    assert bytes(odd[7]) == records[2].encode("utf-16-le")
    assert bytes(bad_date[7]) == records[40].encode("utf-16-le")

    # Every other record loaded, exactly once, with its photo as SQL Server stores it.
    ids = [int(r.split("+|")[0]) for r in records]
    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute('SELECT "ProductPhotoID" FROM aw."ProductPhoto"').fetchall()
        assert sorted(i for (i,) in loaded) == sorted(ids[:2] + ids[3:40] + ids[41:])
        fields = records[1].split("+|")
        photo = conn.execute(
            'SELECT "ThumbNailPhoto" FROM aw."ProductPhoto" WHERE "ProductPhotoID" = %s',
            (ids[1],),
        ).fetchone()
        assert photo is not None and bytes(photo[0]) == bytes.fromhex(fields[1])
    assert leftover_load_tables(pg_dsn) == []

    # Fixed and loaded again: the version's quarantine empties with the new child.
    (tmp_path / "fixed").mkdir()
    again = load_photos(pg_dsn, genuine_export(tmp_path / "fixed", "2025", photo_records(), "10"))
    assert (again.rows, again.quarantined) == (101, 0)
    assert quarantine_rows(pg_dsn) == []


def test_strict_mode_fails_naming_file_record_column_and_loads_nothing(pg_dsn, tmp_path):
    path = genuine_export(tmp_path, "2025", bad_photo_records(), "")
    with pytest.raises(FormatError) as raised:
        load_photos(pg_dsn, path)
    error = raised.value
    assert not isinstance(error, RejectBudgetExceeded)
    assert (error.file, error.line, error.column) == ("ProductPhoto.csv", 3, "ThumbNailPhoto")
    assert "odd number of hex digits (7705)" in str(error)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('aw.\"ProductPhoto__v2025\"')").fetchone() == (
            None,
        )
    assert leftover_load_tables(pg_dsn) == [] and quarantine_rows(pg_dsn) == []


@pytest.mark.parametrize("processes", [1, 2])
def test_over_budget_fails_naming_the_first_errors_and_keeps_earlier_versions(
    pg_dsn, tmp_path, processes
):
    assert load_photos(pg_dsn, genuine_export(tmp_path, "2024", photo_records(), "1")).rows == 101
    (tmp_path / "bad").mkdir()
    path = genuine_export(tmp_path / "bad", "2025", bad_photo_records(), "1")
    with pytest.raises(RejectBudgetExceeded) as raised:
        load_photos(pg_dsn, path, processes)
    message = str(raised.value)
    assert message.startswith("ProductPhoto.csv, line 3, column ThumbNailPhoto: ")
    assert "max_errors is 1" in message and "nothing was loaded" in message
    assert "(1) record 3, column ThumbNailPhoto: odd number of hex digits" in message
    assert "(2) record 41, column ModifiedDate: " in message
    assert versions_of(pg_dsn, "aw", "ProductPhoto") == {"2024": 101}
    assert leftover_load_tables(pg_dsn) == [] and quarantine_rows(pg_dsn) == []


def test_a_wrong_field_count_and_bad_bytes_are_quarantined_as_the_file_has_them(pg_dsn, tmp_path):
    """MySQL --tab rows; the manifest's dump-wide max_errors is the budget."""
    rows = [f"{i}\tnote {i}\t{i}.25\n".encode() for i in range(1, 301)]
    rows[99] = b"100\tonly two fields\n"
    rows[199] = b"200\tbad \xff byte\t1.00\n"
    rows[249] = b"250\tno number\tabc\n"
    schema = {
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "note", "type": "text"},
            {"name": "amount", "type": "decimal(10,2)"},
        ]
    }
    manifest = {"app": "shop", "version": "1.0", "dialect": "mysql", "max_errors": 3}
    path = make_zip(
        tmp_path / "shop_1.0.zip",
        {
            "manifest.json": json.dumps(manifest),
            "orders.json": json.dumps(schema),
            "orders.txt": b"".join(rows),
        },
    )
    [report] = load_dump_version(pg_dsn, path)
    assert (report.rows, report.quarantined) == (297, 3)
    found = [(r[4], r[5], bytes(r[7])) for r in quarantine_rows(pg_dsn, "shop")]
    assert found == [
        (100, None, rows[99][:-1]),
        (200, "note", rows[199][:-1]),
        (250, "amount", rows[249][:-1]),
    ]


def test_bulk_insert_maxerrors_and_the_manifest_set_the_budget(tmp_path):
    script = """CREATE TABLE [dbo].[t] ([id] [int] NOT NULL, [b] [varbinary](10) NULL);
GO
BULK INSERT [dbo].[t] FROM '$(Path)t.csv' WITH (MAXERRORS = 7, FIELDTERMINATOR = '\\t');
GO
CREATE TABLE [dbo].[u] ([id] [int] NOT NULL);
GO
BULK INSERT [dbo].[u] FROM '$(Path)u.csv' WITH (FIELDTERMINATOR = '\\t');
"""
    result = read_tsql_script(script, load_dialect("mssql"))
    assert result.format_overrides["t"]["max_errors"] == 7
    assert "max_errors" not in result.format_overrides["u"]  # SQL Server's default 10 is not taken

    manifest = {"app": "a", "version": "1", "dialect": "mssql", "max_errors": 2}
    manifest["tables"] = {"t": {"max_errors": 0}}
    path = make_zip(
        tmp_path / "a_1.zip",
        {"manifest.json": json.dumps(manifest), "install.sql": script, "t.csv": "", "u.csv": ""},
    )
    with open_dump(path) as dump:
        # the table's own setting wins over BULK INSERT, which wins over the dump-wide default
        assert dump.tables["t"].file_format.max_errors == 0
        assert dump.tables["u"].file_format.max_errors == 2


@pytest.mark.parametrize(
    "text, digits",
    [("", ""), ("0x", ""), ("0A1b", "0A1b"), ("0x0a1B", "0a1B")],
)
def test_binary_text_converts_as_sql_server_does(text, digits):
    assert sql_server_hex(text) == digits


@pytest.mark.parametrize(
    "text, says",
    [
        ("abc", "odd number of hex digits (3)"),
        ("0xabc", "odd number of hex digits (3)"),
        ("0X12", "'X' is not a hex digit"),
        ("12 34", "' ' is not a hex digit"),
        ("12\n34", "'\\n' is not a hex digit"),
    ],
)
def test_binary_text_sql_server_rejects_is_rejected(text, says):
    with pytest.raises(ValueError) as raised:
        sql_server_hex(text)
    assert says in str(raised.value)


MSSQL_SCRIPT = """CREATE TABLE [dbo].[Doc] ([DocID] [int] NOT NULL, [Body] [varbinary](max) NULL,
    [Pages] [smallint] NULL);
GO
BULK INSERT [dbo].[Doc] FROM '$(Path)Doc.csv'
WITH (DATAFILETYPE = 'widechar', FIELDTERMINATOR = '+|', ROWTERMINATOR = '&|\\n', MAXERRORS = 5);
GO
"""


def test_the_quarantine_asset_and_its_check_through_dagster(pg_dsn, tmp_path):
    directory = tmp_path / "dumps"
    directory.mkdir()
    records = [f"{i}+|0A0B0C+|{i}" for i in range(1, 51)]
    records[9] = "10+|0A0B0+|10"  # odd hex digits
    records[19] = "20+|0A+|99999"  # out of smallint's range, as in SQL Server
    data = "\ufeff" + "".join(r + "&|\r\n" for r in records)
    make_zip(
        directory / "docs_1.0.zip",
        {
            "manifest.json": json.dumps({"dialect": "mssql"}),
            "install.sql": MSSQL_SCRIPT,
            "Doc.csv": data.encode("utf-16-le"),
        },
    )
    defs = dg.Definitions.merge(
        build_dump_definitions(scan_dump_dir(directory), TRANSLATOR),
        dg.Definitions(
            resources={
                "postgres": PostgresResource(dsn=pg_dsn),
                "dump_copy_io_manager": MultiprocessCopyIOManager(dsn=pg_dsn, processes=2),
            }
        ),
    )
    dump = describe_dump(directory / "docs_1.0.zip")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_dump(defs, instance, dump)
        assert result.success
        checks = {
            (c.asset_key.path[-1], c.check_name): c for c in result.get_asset_check_evaluations()
        }
        assert checks["Doc", ROWS_CHECK].passed  # 48 loaded + 2 quarantined == 50 in the file
        assert checks["Doc", ROWS_CHECK].metadata["rows_quarantined"].value == 2
        quarantine = checks[QUARANTINE_TABLE, QUARANTINE_CHECK]
        assert not quarantine.passed
        assert "2 records of version 1.0" in quarantine.description
        assert "Doc: Doc.csv, record 10, column Body: odd number of hex digits" in (
            quarantine.description
        )
        key = TRANSLATOR.get_quarantine_spec("docs").key
        event = instance.get_latest_materialization_event(key)
        assert event.asset_materialization.metadata["dagster/row_count"].value == 2
        doc = instance.get_latest_materialization_event(TRANSLATOR.asset_key("docs", "Doc"))
        assert doc.asset_materialization.metadata["rows_quarantined"].value == 2
    assert [(r[4], r[5]) for r in quarantine_rows(pg_dsn, "docs")] == [(10, "Body"), (20, "Pages")]
