"""Write sample dumps of one application, "shop", so a new user sees the whole story.

``write_demo_dumps(directory, rows)`` writes four ZIPs: two versions (1.0, 2.0) of the same
application, each shipped by two regions in the two dialects a region might use:

==================  =======  ==========================================================
file                dialect  layout
==================  =======  ==========================================================
shop_1.0-eu.zip     mssql    ``install.sql`` (CREATE TABLE, ALTER TABLE .. PRIMARY KEY,
shop_2.0-eu.zip              BULK INSERT with FIELDTERMINATOR/ROWTERMINATOR) + bcp ``.dat``
shop_1.0-us.zip     mysql    mysqldump --tab: ``<table>.sql`` + ``<table>.txt``
shop_2.0-us.zip
==================  =======  ==========================================================

Each has a ``manifest.json`` (app, version, dialect).  The region is part of the version
("1.0-eu"), so the two regions' copies of a version are two child tables, not one.

Version 1.0: ``customer`` and ``orders``.  Version 2.0: ``customer`` gains ``country``,
``orders.id`` grows from int to bigint, ``orders.note`` widens from 50 to 100 characters, and a
new table ``order_item`` (with a varbinary column) appears.  Every table has ``rows`` rows.

Values are seeded (the same call writes the same bytes) and exercise the formats: NULL next to
empty strings, notes with tabs, newlines and backslashes, money with four decimals, bit/tinyint
flags, bcp's bare hex and MySQL's escaped raw bytes.  In bcp files nothing can be escaped, so the
``orders`` file (whose notes hold tabs and newlines) is delimited with ``+|`` and ``&|\\n``, as
its BULK INSERT says, the way AdventureWorks ships such tables.

Pure Python (no Dagster, no database); rows are streamed into the ZIP, so memory stays flat.
"""

from __future__ import annotations

import json
import random
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

APP = "shop"
VERSIONS = ("1.0", "2.0")
REGION_DIALECTS = {"eu": "mssql", "us": "mysql"}
ROWS_PER_WRITE = 5_000  # rows joined into one write to the ZIP member
COUNTRIES = {"eu": ["DE", "FR", "NL", "IT", "ES", "PL"], "us": ["US", "CA", "MX"]}
FIRST_NAMES = [
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Eve",
    "Farah",
    "Gus",
    "Hiroko",
    "Ines",
    "José",
    "Kai",
    "Łucja",
]
LAST_NAMES = [
    "Smith",
    "Müller",
    "O'Brien",
    "García",
    "Nowak",
    "Rossi",
    "Tanaka",
    "Dubois",
    "Kowalski",
    "Silva",
]
SKUS = ["MUG-01", "TEE-M", "TEE-L", "CAP-RED", "BAG", "PEN-3", "NOTE-A5"]
# Notes that exercise the formats; None and "" are different values and must stay different.
TRICKY_NOTES = [
    None,
    None,
    "",
    "leave at the door",
    "gift\twrap please",
    "call first\nthen ring twice",
    "path C:\\orders\\new",
    "literally \\N, not NULL",
    "ends with a backslash \\",
    "crème brûlée",
    "carriage\r\nreturn",
]
LONG_NOTES = [
    "deliver to the back entrance between 9 and 5, ask for the warehouse manager, not reception",
    "fragile:\tglass items\nstack at most two high \\ keep dry",
]  # 2.0 only: > 50 characters
EPOCH = datetime(2014, 1, 1)


@dataclass(frozen=True)
class DemoColumn:
    name: str
    mssql_type: str  # T-SQL spelling, e.g. "nvarchar(100)"
    mysql_type: str  # MySQL spelling as mysqldump writes it
    kind: str  # how values are written: int float text datetime decimal2 decimal4 flag bytes
    nullable: bool = True


@dataclass(frozen=True)
class DemoTable:
    name: str
    columns: tuple[DemoColumn, ...]
    rows: Callable[[random.Random, int, str], Iterator[tuple]]  # (rng, row count, region) -> values
    field_terminator: str = "\t"  # bcp only (MySQL escapes instead)
    row_terminator: str = "\n"


# ---------------------------------------------------------------- the tables, per version


def _customer_rows(
    rng: random.Random, rows: int, region: str, with_country: bool
) -> Iterator[tuple]:
    for id_ in range(1, rows + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        roll = rng.random()
        email = (
            None
            if roll < 0.1
            else ""
            if roll < 0.13
            else f"{first}.{last}{id_}@example.com".lower()
        )
        created_at = EPOCH + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        balance = (
            None if rng.random() < 0.05 else rng.randrange(-50_000_000, 500_000_000)
        )  # 1/10000 units
        row: tuple = (id_, f"{first} {last}", email, created_at, balance, rng.random() < 0.8)
        if with_country:
            row += (None if rng.random() < 0.1 else rng.choice(COUNTRIES[region]),)
        yield row


def _orders_rows(rng: random.Random, rows: int, region: str, long_notes: bool) -> Iterator[tuple]:
    notes = TRICKY_NOTES + (LONG_NOTES if long_notes else [])
    for id_ in range(1, rows + 1):
        note = (
            rng.choice(notes) if rng.random() < 0.5 else f"order {id_} note {rng.randrange(1000)}"
        )
        placed_at = EPOCH + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        yield id_, rng.randrange(1, rows + 1), rng.randrange(100, 10_000_000), note, placed_at


def _order_item_rows(rng: random.Random, rows: int, region: str) -> Iterator[tuple]:
    for id_ in range(1, rows + 1):
        # Random bytes include NUL, TAB, LF and backslash: MySQL must escape them, bcp writes hex.
        checksum = None if rng.random() < 0.05 else rng.randbytes(8)
        yield (
            id_,
            rng.randrange(1, rows + 1),
            rng.choice(SKUS),
            rng.randrange(1, 10),
            rng.randrange(10_000, 1_000_000),
            checksum,
        )


_ID = DemoColumn("id", "int", "int(11)", "int", nullable=False)
_BIG_ID = DemoColumn("id", "bigint", "bigint(20)", "int", nullable=False)
_CUSTOMER_COLUMNS = (
    _ID,
    DemoColumn("name", "nvarchar(100)", "varchar(100)", "text", nullable=False),
    DemoColumn("email", "varchar(200)", "varchar(200)", "text"),
    DemoColumn("created_at", "datetime", "datetime", "datetime", nullable=False),
    DemoColumn("balance", "money", "decimal(19,4)", "decimal4"),
    # tinyint on both sides: SQL Server bit would map to boolean and MySQL tinyint(1) to smallint,
    # which cannot share one parent column.
    DemoColumn("is_active", "tinyint", "tinyint(1)", "flag", nullable=False),
)


def _orders_columns(id_column: DemoColumn, note_length: int) -> tuple[DemoColumn, ...]:
    return (
        id_column,
        DemoColumn("customer_id", "int", "int(11)", "int", nullable=False),
        DemoColumn("amount", "decimal(10,2)", "decimal(10,2)", "decimal2", nullable=False),
        DemoColumn("note", f"varchar({note_length})", f"varchar({note_length})", "text"),
        DemoColumn("placed_at", "datetime", "datetime", "datetime", nullable=False),
    )


def demo_tables(version: str) -> list[DemoTable]:
    """The shop's tables at a version ("1.0" or "2.0")."""
    v2 = version == "2.0"
    customer_columns = _CUSTOMER_COLUMNS + (
        (DemoColumn("country", "char(2)", "char(2)", "text"),) if v2 else ()
    )
    tables = [
        DemoTable(
            "customer", customer_columns, lambda rng, n, region: _customer_rows(rng, n, region, v2)
        ),
        DemoTable(
            "orders",
            _orders_columns(_BIG_ID if v2 else _ID, 100 if v2 else 50),
            lambda rng, n, region: _orders_rows(rng, n, region, v2),
            field_terminator="+|",
            row_terminator="&|\n",
        ),
    ]
    if v2:
        tables.append(
            DemoTable(
                "order_item",
                (
                    _BIG_ID,
                    DemoColumn("order_id", "bigint", "bigint(20)", "int", nullable=False),
                    DemoColumn("sku", "varchar(20)", "varchar(20)", "text", nullable=False),
                    DemoColumn("quantity", "int", "int(11)", "int", nullable=False),
                    DemoColumn("unit_price", "money", "decimal(19,4)", "decimal4", nullable=False),
                    DemoColumn("checksum", "varbinary(8)", "varbinary(8)", "bytes"),
                ),
                _order_item_rows,
            )
        )
    return tables


# ---------------------------------------------------------------- value formatting per dialect


def _decimal(scaled: int, scale: int) -> str:
    sign = "-" if scaled < 0 else ""
    units, fraction = divmod(abs(scaled), 10**scale)
    return f"{sign}{units}.{fraction:0{scale}d}"


def _bcp_formatter(kind: str) -> Callable[[object], str]:
    """bcp -c: NULL is an empty field, '' a single NUL byte, no escaping at all."""
    converters: dict[str, Callable[[Any], str]] = {
        "int": str,
        "float": repr,
        "text": lambda v: v or "\0",
        "datetime": lambda v: v.isoformat(" ", "milliseconds"),  # 2014-09-12 11:15:07.000
        "decimal2": lambda v: _decimal(v, 2),
        "decimal4": lambda v: _decimal(v, 4),  # money: 12.3400
        "flag": lambda v: "1" if v else "0",
        "bytes": lambda v: v.hex().upper(),  # bare hex, no 0x
    }
    convert = converters[kind]
    return lambda value: "" if value is None else convert(value)


_MYSQL_ESCAPES = str.maketrans({"\\": "\\\\", "\0": "\\0", "\t": "\\\t", "\n": "\\\n"})


def _mysql_formatter(kind: str) -> Callable[[object], str]:
    """SELECT .. INTO OUTFILE defaults: \\N is NULL; backslash escapes backslash, NUL, and (as
    backslash + the raw character) the field and line terminators."""
    converters: dict[str, Callable[[Any], str]] = {
        "int": str,
        "float": repr,
        "text": lambda v: v.translate(_MYSQL_ESCAPES),
        "datetime": lambda v: v.isoformat(" ", "seconds"),
        "decimal2": lambda v: _decimal(v, 2),
        "decimal4": lambda v: _decimal(v, 4),
        "flag": lambda v: "1" if v else "0",
        # Raw bytes: surrogateescape keeps bytes that are not UTF-8 exact through str.
        "bytes": lambda v: v.decode("utf-8", "surrogateescape").translate(_MYSQL_ESCAPES),
    }
    convert = converters[kind]
    return lambda value: "\\N" if value is None else convert(value)


def data_lines(table: DemoTable, dialect: str, rows: Iterable[tuple]) -> Iterator[str]:
    if dialect == "mssql":
        formatters = [_bcp_formatter(c.kind) for c in table.columns]
        field, row_end = table.field_terminator, table.row_terminator
    else:
        formatters = [_mysql_formatter(c.kind) for c in table.columns]
        field, row_end = "\t", "\n"
    for row in rows:
        yield field.join([f(v) for f, v in zip(formatters, row, strict=True)]) + row_end


# ---------------------------------------------------------------- schema files


def tsql_install_script(tables: list[DemoTable], app_version: str, app: str = APP) -> str:
    usage = 'sqlcmd -i install.sql -v DataPath="C:\\dumps\\shop\\"'
    parts = [f"-- {app} {app_version}: install script; run with {usage}\n"]
    for table in tables:
        columns = ",\n".join(
            f"    [{c.name}] {_tsql_type(c.mssql_type)} {'NULL' if c.nullable else 'NOT NULL'}"
            for c in table.columns
        )
        parts.append(f"CREATE TABLE [dbo].[{table.name}](\n{columns}\n) ON [PRIMARY];\nGO\n")
    for table in tables:
        parts.append(
            f"ALTER TABLE [dbo].[{table.name}] WITH CHECK ADD CONSTRAINT [PK_{table.name}] "
            f"PRIMARY KEY CLUSTERED ([{table.columns[0].name}]) ON [PRIMARY];\nGO\n"
        )
    for table in tables:
        parts.append(
            f"BULK INSERT [dbo].[{table.name}] FROM '$(DataPath){table.name}.dat'\nWITH (\n"
            f"    CODEPAGE = '65001',\n    DATAFILETYPE = 'char',\n"
            f"    FIELDTERMINATOR = '{_tsql_terminator(table.field_terminator)}',\n"
            f"    ROWTERMINATOR = '{_tsql_terminator(table.row_terminator)}',\n"
            "    TABLOCK\n);\nGO\n"
        )
    return "\n".join(parts)


def _tsql_type(type_text: str) -> str:
    """ "nvarchar(100)" -> "[nvarchar](100)", as SQL Server's script generator writes types."""
    name, paren, params = type_text.partition("(")
    return f"[{name}]{paren}{params}"


def _tsql_terminator(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n")


def mysql_create_table(table: DemoTable) -> str:
    columns = [
        f"  `{c.name}` {c.mysql_type} {'DEFAULT NULL' if c.nullable else 'NOT NULL'}"
        for c in table.columns
    ]
    columns.append(f"  PRIMARY KEY (`{table.columns[0].name}`)")
    body = ",\n".join(columns)
    return (
        f"-- MySQL dump 10.13 (mysqldump --tab), table `{table.name}`\n\n"
        f"DROP TABLE IF EXISTS `{table.name}`;\n"
        f"CREATE TABLE `{table.name}` (\n{body}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
    )


# ---------------------------------------------------------------- writing


def write_dump_zip(
    path: Path,
    members: Iterable[tuple[str, str | Iterable[str]]],
    encoding: str = "utf-8",
    compresslevel: int = 6,
) -> Path:
    """Write a ZIP whose members are given as text or as an iterable of text pieces (streamed).

    Written under a temporary name and renamed at the end: a half-written file in a watched dump
    directory must never look like a dump.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(
            partial, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        ) as archive:
            for name, content in members:
                if isinstance(content, str):
                    archive.writestr(name, content.encode(encoding))
                    continue
                # force_zip64: the size is unknown up front and may pass 2 GiB.
                with archive.open(name, "w", force_zip64=True) as member:
                    pieces = iter(content)
                    while batch := list(islice(pieces, ROWS_PER_WRITE)):
                        member.write("".join(batch).encode(encoding, "surrogateescape"))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def demo_rows(table: DemoTable, version: str, region: str, rows: int) -> Iterator[tuple]:
    """The Python values of a table's rows in one dump (what its data file encodes)."""
    rng = random.Random(
        f"{APP}/{version}-{region}/{table.name}"
    )  # str seeds are stable across runs
    return table.rows(rng, rows, region)


def write_demo_dump(directory: Path, version: str, region: str, rows: int) -> Path:
    dialect = REGION_DIALECTS[region]
    app_version = f"{version}-{region}"
    tables = demo_tables(version)
    manifest = json.dumps({"app": APP, "version": app_version, "dialect": dialect}, indent=2) + "\n"

    def data(table: DemoTable) -> Iterator[str]:
        return data_lines(table, dialect, demo_rows(table, version, region, rows))

    members: list[tuple[str, str | Iterable[str]]] = [("manifest.json", manifest)]
    if dialect == "mssql":
        members.append(("install.sql", tsql_install_script(tables, app_version)))
        members += [(f"{t.name}.dat", data(t)) for t in tables]
    else:
        for table in tables:
            members += [
                (f"{table.name}.sql", mysql_create_table(table)),
                (f"{table.name}.txt", data(table)),
            ]
    return write_dump_zip(directory / f"{APP}_{app_version}.zip", members)


def write_demo_dumps(directory: Path, rows: int = 10_000) -> list[Path]:
    """Write shop_{1.0,2.0}-{eu,us}.zip into directory (created if missing); return their paths."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_demo_dump(directory, version, region, rows)
        for version in VERSIONS
        for region in REGION_DIALECTS
    ]
