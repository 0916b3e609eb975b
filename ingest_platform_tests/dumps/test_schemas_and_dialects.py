"""Dialect configs, type mapping, and the three schema readers."""

from __future__ import annotations

import json

import pytest

from ingest_platform.dumps import load_dialect, open_dump, parse_dump_file_name
from ingest_platform.dumps.mysql_schema import read_mysql_tables
from ingest_platform.dumps.tsql_schema import read_tsql_script
from ingest_platform.errors import ConfigError, DumpError, SchemaError
from ingest_platform_tests.conftest import make_zip


@pytest.mark.parametrize(
    ("dialect", "source", "pg"),
    [
        ("mssql", "varchar(20)", "varchar(20)"),
        ("mssql", "nvarchar(max)", "text"),
        ("mssql", "decimal(8, 2)", "numeric(8,2)"),
        ("mssql", "money", "numeric(19,4)"),
        ("mssql", "datetime", "timestamp"),
        ("mssql", "bit", "boolean"),
        ("mssql", "varbinary(max)", "bytea"),
        ("mssql", "uniqueidentifier", "uuid"),
        ("mssql", "hierarchyid", "bytea"),
        ("mssql", "xml", "text"),
        ("mysql", "int(10) unsigned", "bigint"),
        ("mysql", "bigint(20) unsigned", "numeric(20,0)"),
        ("mysql", "enum('a', 'b')", "text"),
        ("mysql", "set('x')", "text"),
        ("mysql", "tinyint(1)", "smallint"),
        ("mysql", "double", "double precision"),
        ("mysql", "longtext", "text"),
    ],
)
def test_type_map(dialect, source, pg):
    assert load_dialect(dialect).map_type(source) == pg


def test_unknown_type_and_dialect(tmp_path):
    with pytest.raises(SchemaError, match="frobnicate"):
        load_dialect("mssql").map_type("frobnicate")
    with pytest.raises(ConfigError, match="unknown dialect"):
        load_dialect("oracle")
    custom = tmp_path / "pipes.toml"
    custom.write_text(
        'name = "pipes"\n[format]\nfield_terminator = "||"\n[types]\nnum = "numeric"\n'
    )
    dialect = load_dialect(custom)
    assert dialect.file_format.field_terminator == "||" and dialect.map_type("NUM") == "numeric"


def test_tsql_alias_types_computed_columns_keys_and_bulk_insert():
    script = """CREATE TYPE [dbo].[Name] FROM nvarchar(50) NULL;
CREATE TYPE [Flag] FROM bit NOT NULL
GO
CREATE PROCEDURE p AS BEGIN CREATE TABLE #tmp (x int); SELECT 1 END
GO
CREATE TABLE [Sales].[Odd "name"]]](
    [ID] [int] IDENTITY (1, 1) NOT NULL,
    [Name] [Name] NOT NULL,
    [On] [Flag],
    [Total] AS ISNULL([ID] * 2, 0),
    [rowguid] uniqueidentifier ROWGUIDCOL NOT NULL UNIQUE CONSTRAINT [DF_x] DEFAULT (NEWID())
) ON [PRIMARY];
GO
ALTER TABLE [Sales].[Odd "name"]]] WITH CHECK ADD CONSTRAINT [PK]
    PRIMARY KEY CLUSTERED ([ID]) ON [PRIMARY];
GO
BULK INSERT [Sales].[Odd "name"]]] FROM '$(Path)odd.csv'
WITH (CODEPAGE = '65001', DATAFILETYPE = 'widechar', FIELDTERMINATOR = '+|',
      ROWTERMINATOR = '&|\\n', TABLOCK);
GO
"""
    result = read_tsql_script(script, load_dialect("mssql"))
    table = result.tables['Odd "name"]']
    assert [(c.name, c.source_type, c.pg_type, c.nullable, c.computed) for c in table.columns] == [
        ("ID", "integer", "integer", False, False),
        ("Name", "nvarchar(50)", "varchar(50)", False, False),
        ("On", "bit", "boolean", False, False),
        ("Total", "computed", "text", True, True),
        ("rowguid", "uniqueidentifier", "uuid", False, False),
    ]
    assert table.primary_key == ["ID"] and table.source_schema == "Sales"
    assert result.data_files['Odd "name"]'] == "odd.csv"
    assert result.format_overrides['Odd "name"]'] == {
        "field_terminator": "+|",
        "row_terminator": "&|\n",
        "row_terminator_crlf_sniff": True,
        "encoding": "utf-16-le",
    }


def test_real_tsql_script_primary_keys(mssql_dump):
    tables = mssql_dump.tables
    assert tables["Address"].schema.primary_key == ["AddressID"]
    assert tables["Document"].schema.columns[1].computed  # DocumentLevel, exported by bcp
    assert tables["BusinessEntity"].file_format.field_terminator == "+|"
    assert len(tables) == 71


def test_mysql_create_table():
    ddl = (
        "CREATE TABLE `a b` (`id` int(10) unsigned NOT NULL AUTO_INCREMENT, "
        "`c``d` varchar(3) DEFAULT NULL, "
        "`at` datetime NOT NULL DEFAULT '0000-00-00 00:00:00', PRIMARY KEY (`id`)) ENGINE=MyISAM;"
    )
    table = read_mysql_tables(ddl, load_dialect("mysql"))["a b"]
    assert [(c.name, c.pg_type, c.nullable) for c in table.columns] == [
        ("id", "bigint", False),
        ("c`d", "varchar(3)", True),
        ("at", "timestamp", True),
    ]
    assert table.primary_key == ["id"]


def test_json_schema_errors(tmp_path):
    bad = make_zip(tmp_path / "app_1.zip", {"t.json": json.dumps({"columns": [{"name": "a"}]})})
    with pytest.raises(SchemaError, match="t.json"):
        open_dump(bad, dialect="mssql")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("crm_2025.zip", ("crm", "2025")),
        ("crm_eu_1.2.3.zip", ("crm_eu", "1.2.3")),
        ("shop_v2.zip.gpg", ("shop", "v2")),
    ],
)
def test_file_name_version_rule(name, expected):
    assert parse_dump_file_name(name) == expected


def test_file_name_without_version_and_manifest(tmp_path):
    with pytest.raises(DumpError, match="manifest"):
        parse_dump_file_name("dump.zip")
    schema = json.dumps({"columns": [{"name": "a", "type": "text"}, {"name": "b", "type": "text"}]})
    manifest = json.dumps(
        {
            "app": "crm",
            "version": "7",
            "dialect": "mysql",
            "tables": {"t": {"data": "data/t.tsv", "null": "NULL"}},
        }
    )
    dump = open_dump(
        make_zip(
            tmp_path / "whatever.zip",
            {"manifest.json": manifest, "t.json": schema, "data/t.tsv": "x\tNULL\n"},
        )
    )
    assert (dump.app, dump.version, dump.dialect.name) == ("crm", "7", "mysql")
    assert b"".join(dump.iter_copy_chunks("t")) == b"x\t\\N\n"
    with pytest.raises(ConfigError, match="dialect"):
        open_dump(make_zip(tmp_path / "crm_1.zip", {"t.json": schema}))
