"""Real MariaDB exports load exactly: every value in PostgreSQL equals the server's own.

A MariaDB server at 127.0.0.1:3306 (root, no password) gets tables covering every MySQL/MariaDB
column type and attribute, with edge values; they are exported with the real ``mysqldump --tab``
(per-table ``.sql`` files), with ``mysqldump --no-data`` (one schema file, with a view, a trigger
and a procedure) and with ``SELECT ... INTO OUTFILE`` (default options), loaded with
``load_dump_version`` and compared value by value with what MariaDB returns, under the mapping
the README documents (zero dates -> NULL, BIT -> its number, spatial -> MySQL's bytes, JSON by
value, FLOAT by the text MariaDB prints). Skipped with the reason when no MariaDB answers there,
when its clients are missing, or when it cannot write export files onto this machine.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest_platform.errors import FormatError
from ingest_platform.loading.dump_versions import load_dump_version
from ingest_platform_tests.conftest import make_zip, unique_name, zip_directory
from ingest_platform_tests.test_dump_loading import leftover_load_tables, versions_of

HOST, PORT, USER = "127.0.0.1", "3306", "root"
ALL_BYTES = bytes(range(256)).hex()

# fmt: off
SCHEMA = """
CREATE TABLE integers (
  id int NOT NULL PRIMARY KEY,
  t tinyint, tu tinyint unsigned, s smallint, su smallint unsigned, m mediumint,
  mu mediumint unsigned, i int, iu int unsigned, b bigint, bu bigint unsigned,
  z int(6) unsigned zerofill, flag tinyint(1), ok boolean, y year
);
INSERT INTO integers VALUES
 (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 0, 0, false, 1901),
 (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,
  18446744073709551615, 42, 2, true, 2155),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 1, -1, 1, -1, 1, -1, 1, -1, 1, 999999, -1, NULL, 0);

CREATE TABLE numbers (
  id int NOT NULL PRIMARY KEY,
  f float, fu float unsigned, f73 float(7,3), d double, du double unsigned,
  dz double(16,4) unsigned zerofill, dmax decimal(65,30), du10 decimal(10,0) unsigned,
  d52 decimal(5,2), p30 float(30)
);
INSERT INTO numbers VALUES
 (1, 3.40282e38, 1.17549e-38, 1234.568, 1.7976931348623157e308, 2.2250738585072014e-308,
  12345678.1234, 99999999999999999999999999999999999.999999999999999999999999999999,
  9999999999, -999.99, 0.1),
 (2, -1.4013e-45, 0, -9999.999, 5e-324, 0, 0, -0.000000000000000000000000000001, 0, 0.5, -1e300),
 (3, 0.1, 1e-10, 0.001, 0.1, 1e300, 1, 1, 1, -0.01, 3.141592653589793),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

CREATE TABLE bits (
  id int NOT NULL PRIMARY KEY,
  b1 bit(1), b1n bit(1) NOT NULL, b8 bit(8), b16 bit(16) NOT NULL, bare bit, b24 bit(24),
  b63 bit(63), b64 bit(64), tail varchar(10)
);
INSERT INTO bits VALUES
 (1, 0, 1, 9, 0x5C4E, 1, 0x5C4E09, 0, 0xFFFFFFFFFFFFFFFF, 'x\\ty'),
 (2, 1, 0, 10, 0, 0, 0x0A0909, 0x7FFFFFFFFFFFFFFF, 0x5C0A090D005C4E00, '\\\\N'),
 (3, NULL, 1, 92, 0x0909, NULL, 0x5C4E5C, 0x5C4E, 0x5C4E, NULL),
 (4, NULL, 0, NULL, 0x0A0A, NULL, NULL, NULL, NULL, '');

CREATE TABLE dates (
  id int NOT NULL PRIMARY KEY,
  d date, dt datetime, dt6 datetime(6), ts timestamp(3) NULL DEFAULT NULL, t time, t6 time(6),
  y year(4), dnn date NOT NULL DEFAULT '0000-00-00',
  upd datetime NOT NULL DEFAULT '0000-00-00 00:00:00' ON UPDATE current_timestamp()
);
INSERT INTO dates VALUES
 (1, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000',
  '-838:59:59', '-00:00:00.000001', 1901, '9999-12-31', '2000-01-01 00:00:00'),
 (2, '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999',
  '838:59:59', '838:59:59.999999', 2155, '0000-00-00', '0000-00-00 00:00:00'),
 (3, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00.000',
  '00:00:00', '00:00:00.5', 0, '2010-00-15', '2010-05-00 12:00:00'),
 (4, '2010-00-15', '2010-05-00 12:00:00', NULL, NULL, NULL, NULL, NULL, '2024-02-29',
  '0000-01-01 00:00:00'),
 (5, '2024-02-29', '2024-02-29 12:34:56', '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.789',
  '-12:00:00', '100:00:00.25', 2024, '2024-02-29', '2024-02-29 12:34:56');

CREATE TABLE texts (
  id int NOT NULL PRIMARY KEY,
  vc varchar(100), c5 char(5), tt tinytext, tx text, mt mediumtext, lt longtext,
  l1 varchar(20) CHARACTER SET latin1, cy varchar(20) CHARACTER SET cp1251 COLLATE cp1251_bin,
  ascii_col varchar(20) CHARACTER SET ascii, u3 varchar(20) CHARACTER SET utf8mb3,
  nc national char(3), e enum('a','b,c','it''s','ü','😀'), s set('x','y','z'),
  l1e enum('é','ö') CHARACTER SET latin1, bin_coll varchar(20) COLLATE utf8mb4_bin, c0 char(0),
  FULLTEXT KEY vc_words (vc, tx)
) DEFAULT CHARSET=utf8mb4;
INSERT INTO texts VALUES
 (1, 'tab\\there', 'ab', 'nl\\nx', 'cr\\rx\\r\\n', 'back\\\\slash \\\\N N', REPEAT('long ', 20000),
  CONCAT('é€', _utf8mb4 X'C281C29D', 'ÿ'), 'Жж', 'plain', 'é', 'ü', 'b,c', 'x,z', 'é', 'Case', ''),
 (2, '😀 non-BMP 𝄞 ñ', 'ab   ', '', '', '', '', '', '', '', '', '', 'it''s', '', 'ö', '', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL),
 (4, '\\\\N', 'N', '\\\\', '\\\\\\\\', '\\\\t', '\\\\\\n', 'x\\\\', 'Ё', 'x', 'ß', 'ẞ', '😀', 'y',
  NULL, ' ', '');

CREATE TABLE legacy (
  id int NOT NULL PRIMARY KEY, name varchar(50), note text, code char(2) CHARACTER SET utf8mb4
) ENGINE=MyISAM DEFAULT CHARSET=latin1;
INSERT INTO legacy VALUES (1, 'Müller', 'façade\\tñ', 'ü'), (2, 'plain', NULL, '😀');

CREATE TABLE binaries (
  id int NOT NULL PRIMARY KEY,
  b4 binary(4), vb varbinary(300), tb tinyblob, bl blob, mb mediumblob, lb longblob,
  vbs varchar(20) CHARACTER SET binary
);
INSERT INTO binaries VALUES
 (1, X'00', X'{ALL_BYTES}', X'', X'5C4E', X'0A090D5C00', X'{ALL_BYTES}', 'abc'),
 (2, 'ab', X'', NULL, X'00', X'5C', X'', X'5C0A'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

CREATE TABLE others (
  id int NOT NULL PRIMARY KEY,
  j json, ip4 inet4, ip6 inet6, u uuid,
  g geometry, pt point, ls linestring, pg polygon, mpt multipoint, mls multilinestring,
  mpg multipolygon, gc geometrycollection,
  gen_v int AS (id * 2) VIRTUAL, gen_s varchar(40) AS (concat('id-', id)) PERSISTENT,
  hidden int INVISIBLE DEFAULT 7, loc point NOT NULL,
  SPATIAL KEY loc_index (loc), CONSTRAINT positive CHECK (id > 0)
) ENGINE=InnoDB;
INSERT INTO others (id, j, ip4, ip6, u, g, pt, ls, pg, mpt, mls, mpg, gc, hidden, loc) VALUES
 (1, '{{"b": 1, "a": [1.50, null, "x\\\\ty"], "n": 12345678901234567890.123456789}}', '0.0.0.0',
  '::ffff:1.2.3.4', '123e4567-e89b-12d3-a456-426655440000',
  ST_GeomFromText('POINT(1.5 -2)', 4326), ST_GeomFromText('POINT(0 0)'),
  ST_GeomFromText('LINESTRING(0 0, 1 1, 2 1)'),
  ST_GeomFromText('POLYGON((0 0, 4 0, 4 4, 0 4, 0 0), (1 1, 2 1, 2 2, 1 1))'),
  ST_GeomFromText('MULTIPOINT(0 0, 1 1)'),
  ST_GeomFromText('MULTILINESTRING((0 0, 1 1), (2 2, 3 3))'),
  ST_GeomFromText('MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))'),
  ST_GeomFromText('GEOMETRYCOLLECTION(POINT(9 9), LINESTRING(0 0, 9 9))'), 1, Point(1, 1)),
 (2, 'null', '255.255.255.255', '2001:db8::ff00:42:8329', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  ST_GeomFromText('POINT(9.25 10)', 3857), ST_GeomFromText('POINT(-1 1e300)'), NULL, NULL, NULL,
  NULL, NULL, ST_GeomFromText('GEOMETRYCOLLECTION EMPTY'), NULL, Point(2, 2)),
 (3, '"\\\\u00e9😀 \\\\n"', NULL, '::', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -1,
  Point(3, 3)),
 (4, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, Point(4, 4)),
 (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, Point(5, 5));

CREATE TABLE empty_table (id int NOT NULL PRIMARY KEY, note varchar(10));

CREATE TABLE bulk (
  id int NOT NULL PRIMARY KEY, bits bit(64), hash binary(32), note varchar(80), at datetime(6),
  x double, l1 varchar(20) CHARACTER SET latin1
);
SET max_recursive_iterations = 100000;
INSERT INTO bulk
 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
 SELECT i, CAST(CONV(LEFT(SHA2(i, 256), 16), 16, 10) AS UNSIGNED), UNHEX(SHA2(i, 256)),
        CONCAT('row', CHAR(9), i, '\\\\', CHAR(10), 'end'),
        TIMESTAMP('2020-01-01') + INTERVAL i SECOND + INTERVAL i MICROSECOND, i / 7,
        IF(i % 3 = 0, CONCAT('é', i), NULL)
 FROM n;

CREATE VIEW integer_view AS SELECT id, t FROM integers;
DELIMITER ;;
CREATE TRIGGER integers_touch BEFORE UPDATE ON integers FOR EACH ROW BEGIN
  SET NEW.t = NEW.t; SET NEW.s = NEW.s;
END;;
CREATE PROCEDURE not_a_table() BEGIN
  SELECT 'CREATE TABLE fake (a int);'; CREATE TEMPORARY TABLE scratch (a int); DROP TABLE scratch;
END;;
DELIMITER ;
""".replace("{ALL_BYTES}", ALL_BYTES).replace("{{", "{").replace("}}", "}")
# fmt: on
TABLES = [
    "integers",
    "numbers",
    "bits",
    "dates",
    "texts",
    "legacy",
    "binaries",
    "others",
    "empty_table",
    "bulk",
]
INTEGER_TYPES = {"tinyint", "smallint", "mediumint", "int", "bigint", "year", "bit"}
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry"}
BINARY_TYPES |= {"point", "linestring", "polygon", "multipoint", "multilinestring"}
BINARY_TYPES |= {"multipolygon", "geometrycollection"}


@dataclass
class MariaDB:
    """The `mariadb` and `mysqldump` command-line clients against one database."""

    client: str
    dump: str
    database: str = ""

    def args(self) -> list[str]:
        return [f"--host={HOST}", f"--port={PORT}", f"--user={USER}", "--protocol=TCP"]

    def run(self, script: str) -> str:
        command = [self.client, *self.args(), "--connect-timeout=5", "--batch", "--raw"]
        command += ["--skip-column-names", "--default-character-set=utf8mb4"]
        result = subprocess.run(
            [*command, *([self.database] if self.database else [])],
            input=script.encode(),
            capture_output=True,
            timeout=300,
        )
        if result.returncode:
            raise RuntimeError(result.stderr.decode(errors="replace").strip())
        return result.stdout.decode()

    def rows(self, query: str) -> list[list[str | None]]:
        output = self.run(f"SET time_zone = '+00:00';\n{query}")
        return [
            [None if field == "NULL" else field for field in line.split("\t")]
            for line in output.splitlines()
        ]

    def mysqldump(self, *options: str, tables: tuple[str, ...] = ()) -> bytes:
        """mysqldump's output; with its default character set, as a user runs it."""
        result = subprocess.run(
            [self.dump, *self.args(), *options, self.database, *tables],
            capture_output=True,
            timeout=300,
        )
        if result.returncode:
            raise RuntimeError(result.stderr.decode(errors="replace").strip())
        return result.stdout


@pytest.fixture(scope="module")
def mariadb_server() -> MariaDB:
    client = shutil.which("mariadb") or shutil.which("mysql")
    dump = shutil.which("mysqldump") or shutil.which("mariadb-dump")
    if client is None or dump is None:
        pytest.skip("needs the mariadb and mysqldump clients (apt-get install mariadb-client)")
    server = MariaDB(client, dump)
    try:
        version = server.run("SELECT version()").strip()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"no MariaDB answers at {HOST}:{PORT} as {USER}: {error}")
    if "mariadb" not in version.lower():
        pytest.skip(f"{HOST}:{PORT} is MySQL {version}; these tests use MariaDB's types")
    return server


@pytest.fixture
def export_dir() -> Iterator[Path]:
    """A directory the server can write into (it writes --tab files itself, as user mysql)."""
    directory = Path(tempfile.mkdtemp(prefix="ingest_mysql_export_"))
    directory.chmod(0o777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb(mariadb_server) -> Iterator[MariaDB]:
    """A database with the tables of SCHEMA, dropped afterwards."""
    database = unique_name("ingest_test")
    mariadb_server.run(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    db = MariaDB(mariadb_server.client, mariadb_server.dump, database)
    probe = Path(tempfile.mkdtemp(prefix="ingest_mysql_probe_"))
    try:
        probe.chmod(0o777)
        try:
            db.run(f"SELECT 1 INTO OUTFILE '{probe}/probe.txt'")
        except RuntimeError as error:
            pytest.skip(f"MariaDB cannot write export files (FILE, secure_file_priv): {error}")
        if not (probe / "probe.txt").exists():
            pytest.skip("MariaDB writes export files on another machine (not this filesystem)")
        db.run("SET SESSION sql_mode = 'STRICT_ALL_TABLES';\nSET time_zone = '+00:00';\n" + SCHEMA)
        yield db
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        mariadb_server.run(f"DROP DATABASE IF EXISTS {database}")


# -- comparing ---------------------------------------------------------------------------------


def _columns(db: MariaDB, table: str) -> list[tuple[str, str]]:
    """(name, DATA_TYPE) of every column, invisible and generated ones included, in order."""
    return [
        (name or "", data_type or "")
        for name, data_type in db.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{db.database}' AND table_name = '{table}' "
            "ORDER BY ordinal_position"
        )
    ]


def _mariadb_expression(name: str, data_type: str) -> str:
    """A MariaDB expression whose text is ASCII without tabs: what the server says the value is."""
    column = f"`{name}`"
    if data_type in INTEGER_TYPES:
        return f"{column} + 0"  # the number, also of BIT, YEAR and ZEROFILL columns
    if data_type in TEXT_TYPES:
        return f"HEX(CONVERT({column} USING utf8mb4))"
    if data_type in BINARY_TYPES:
        return f"HEX({column})"
    return f"CAST({column} AS CHAR)"  # decimal, float, double, dates, times, inet, uuid


def _zero_date(text: str) -> bool:
    year, month, day = text[:10].split("-")
    return int(year) == 0 or int(month) == 0 or int(day) == 0


def _time(text: str) -> timedelta:
    sign = -1 if text.startswith("-") else 1
    hours, minutes, seconds = text.lstrip("-").split(":")
    return sign * timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def expected_value(data_type: str, text: str | None, pg_type: str):
    """The value PostgreSQL must hold for MariaDB's text, by the README's mapping."""
    if text is None:
        return None
    if data_type in INTEGER_TYPES:
        return int(text)
    if data_type == "decimal":
        return Decimal(text)
    if data_type == "float":  # the float nearest the text MariaDB prints (6 digits)
        return _float32(float(text))
    if data_type == "double":
        return float(text)
    if data_type in ("date", "datetime", "timestamp"):
        if _zero_date(text):
            return None
        return date.fromisoformat(text) if data_type == "date" else datetime.fromisoformat(text)
    if data_type == "time":
        return _time(text)
    if data_type in TEXT_TYPES:
        value = bytes.fromhex(text).decode("utf-8")
        return json.loads(value, parse_float=Decimal) if pg_type == "jsonb" else value
    if data_type in BINARY_TYPES:
        return bytes.fromhex(text)
    if data_type in ("inet4", "inet6"):
        return ipaddress.ip_address(text)
    if data_type == "uuid":
        return uuid.UUID(text)
    raise AssertionError(f"no comparison for MariaDB type {data_type}")


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def actual_value(value, pg_type: str):
    if value is None:
        return None
    if pg_type == "real":
        return _float32(value)  # psycopg reads PostgreSQL's shortest text of the float4
    if pg_type == "boolean":
        return int(value)
    if pg_type == "character":
        return value.rstrip(" ")  # CHAR pads in PostgreSQL; MySQL strips trailing blanks
    if pg_type == "jsonb":
        return json.loads(value, parse_float=Decimal)  # selected as text
    if pg_type == "bytea":
        return bytes(value)
    return value


def assert_table_equal(db: MariaDB, pg_dsn: str, schema: str, table: str, version: str) -> int:
    """Every row and column of `table` in PostgreSQL equals MariaDB's; returns the row count."""
    columns = _columns(db, table)
    expressions = ", ".join(_mariadb_expression(n, t) for n, t in columns)
    source = db.rows(f"SELECT {expressions} FROM `{table}` ORDER BY id")
    with psycopg.connect(pg_dsn) as conn:
        pg_types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
        )
        select = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(n))
            if pg_types[n] == "jsonb"
            else sql.Identifier(n)
            for n, _ in columns
        )
        loaded = conn.execute(
            sql.SQL("SELECT {} FROM {}.{} WHERE _version = %s ORDER BY id").format(
                select, sql.Identifier(schema), sql.Identifier(table)
            ),
            (version,),
        ).fetchall()
    assert len(loaded) == len(source), table
    for source_row, loaded_row in zip(source, loaded, strict=True):
        for (name, data_type), text, value in zip(columns, source_row, loaded_row, strict=True):
            pg_type = pg_types[name]
            expected = expected_value(data_type, text, pg_type)
            assert actual_value(value, pg_type) == expected, (
                f"{table}.{name} (MariaDB {data_type}, PostgreSQL {pg_type}), id {source_row[0]}: "
                f"MariaDB says {text!r}, PostgreSQL holds {value!r}"
            )
    return len(loaded)


def assert_all_tables_equal(db: MariaDB, pg_dsn: str, schema: str, version: str) -> None:
    rows = {table: assert_table_equal(db, pg_dsn, schema, table, version) for table in TABLES}
    assert rows["bulk"] == 30000 and rows["empty_table"] == 0


def tab_export(db: MariaDB, directory: Path, *tables: str, options: tuple[str, ...] = ()) -> Path:
    db.mysqldump(f"--tab={directory}", *options, tables=tables)
    return directory


# -- the tests ---------------------------------------------------------------------------------


def test_mysqldump_tab_loads_every_type_exactly(mariadb, export_dir, pg_dsn, tmp_path):
    tab_export(mariadb, export_dir)
    assert {p.name for p in export_dir.glob("*.txt")} == {f"{t}.txt" for t in TABLES}
    dump = zip_directory(export_dir, tmp_path / "shop_1.0.zip")
    reports = load_dump_version(pg_dsn, dump, processes=2, dialect="mysql")
    assert {r.table for r in reports} == set(TABLES)  # the view's .sql holds no table
    assert_all_tables_equal(mariadb, pg_dsn, "shop", "1.0")


def test_one_schema_file_from_mysqldump_no_data_loads_the_same(
    mariadb, export_dir, pg_dsn, tmp_path
):
    # mysqldump --no-data --routines: every CREATE TABLE in one file, with the sandbox line,
    # the view, the trigger and the procedure (DELIMITER ;;), as a genuine schema export.
    schema = mariadb.mysqldump("--no-data", "--routines")
    assert b"float unsigned" in schema and b"DELIMITER ;;" in schema
    tab_export(mariadb, export_dir)
    members: dict[str, bytes | str] = {"schema.sql": schema}
    members |= {p.name: p.read_bytes() for p in sorted(export_dir.glob("*.txt"))}
    dump = make_zip(tmp_path / "shop_2.0.zip", members)
    reports = load_dump_version(pg_dsn, dump, processes=2, dialect="mysql")
    assert {r.table for r in reports} == set(TABLES)
    assert_all_tables_equal(mariadb, pg_dsn, "shop", "2.0")


def test_select_into_outfile_with_default_options_loads_exactly(
    mariadb, export_dir, pg_dsn, tmp_path
):
    # SELECT .. INTO OUTFILE without FIELDS/LINES/CHARACTER SET: tab, LF, backslash escapes,
    # each column in its own charset, TIMESTAMP in the session's time zone (here UTC). The
    # column list is the table's (SELECT * would leave out the invisible column).
    for table in TABLES:
        names = ", ".join(f"`{name}`" for name, _ in _columns(mariadb, table))
        mariadb.run(
            f"SET time_zone = '+00:00';\n"
            f"SELECT {names} FROM `{table}` INTO OUTFILE '{export_dir}/{table}.txt'"
        )
    members: dict[str, bytes | str] = {"schema.sql": mariadb.mysqldump("--no-data")}
    members |= {p.name: p.read_bytes() for p in sorted(export_dir.glob("*.txt"))}
    dump = make_zip(tmp_path / "shop_3.0.zip", members)
    load_dump_version(pg_dsn, dump, processes=1, dialect="mysql")
    assert_all_tables_equal(mariadb, pg_dsn, "shop", "3.0")


@pytest.fixture
def own_tables(mariadb) -> Iterator[list[str]]:
    """Tables a test adds beside SCHEMA's; dropped afterwards (other tests export every table)."""
    names: list[str] = []
    yield names
    for name in names:
        mariadb.run(f"DROP TABLE IF EXISTS `{name}`")


def new_export_dir(parent: Path) -> Path:
    """Another directory the server can write into (INTO OUTFILE never overwrites a file)."""
    directory = Path(tempfile.mkdtemp(prefix="export_", dir=parent))
    directory.chmod(0o777)
    return directory


def test_text_with_a_nul_stops_the_load_naming_record_and_column(
    mariadb, own_tables, export_dir, pg_dsn, tmp_path
):
    # PostgreSQL text cannot hold NUL: the load stops with file, record and column; the version
    # loaded before stays, nothing of the new one is left behind.
    own_tables.append("notes")
    mariadb.run(
        "CREATE TABLE notes (id int PRIMARY KEY, v varchar(10));\n"
        "INSERT INTO notes VALUES (1, 'fine'), (2, 'also');"
    )
    good = zip_directory(tab_export(mariadb, export_dir, "notes"), tmp_path / "notes_1.0.zip")
    load_dump_version(pg_dsn, good, processes=1, dialect="mysql")
    mariadb.run("INSERT INTO notes VALUES (3, CONCAT('a', CHAR(0), 'b'));")
    bad_dir = tab_export(mariadb, new_export_dir(export_dir), "notes")
    bad = zip_directory(bad_dir, tmp_path / "notes_2.0.zip")
    with pytest.raises(FormatError) as error:
        load_dump_version(pg_dsn, bad, processes=1, dialect="mysql")
    assert "notes.txt" in str(error.value) and "column v" in str(error.value)
    assert "record 3: NUL character in a text value" in str(error.value)
    assert versions_of(pg_dsn, "notes", "notes") == {"1.0": 2}
    assert leftover_load_tables(pg_dsn) == []


def test_a_utf16_column_is_refused_and_loads_when_exported_as_utf8(
    mariadb, own_tables, export_dir, pg_dsn, tmp_path
):
    # mysqldump --tab writes a utf16 column in UTF-16 (here U+0A09 U+0A0A: bytes LF TAB LF LF,
    # unescaped): refused, saying what to do; exported with --default-character-set=utf8mb4 and
    # column_charsets off in the manifest, it loads exactly.
    own_tables.append("wide")
    mariadb.run(
        "CREATE TABLE wide (id int PRIMARY KEY, w varchar(10) CHARACTER SET utf16, "
        "l varchar(10) CHARACTER SET latin1);\n"
        "INSERT INTO wide VALUES (1, _utf8mb4 X'E0A889E0A88A', 'é'), (2, 'ok', 'ü');"
    )
    refused = zip_directory(tab_export(mariadb, export_dir, "wide"), tmp_path / "wide_1.0.zip")
    with pytest.raises(FormatError) as error:
        load_dump_version(pg_dsn, refused, processes=1, dialect="mysql")
    assert "wide.txt" in str(error.value) and "'w' is written in utf-16-be" in str(error.value)
    assert "--default-character-set=utf8mb4" in str(error.value)
    assert versions_of(pg_dsn, "wide", "wide") == {}
    assert leftover_load_tables(pg_dsn) == []

    utf8_dir = new_export_dir(export_dir)
    tab_export(mariadb, utf8_dir, "wide", options=("--default-character-set=utf8mb4",))
    manifest = {"tables": {"wide": {"column_charsets": False}}}
    (utf8_dir / "manifest.json").write_text(json.dumps(manifest))
    load_dump_version(pg_dsn, zip_directory(utf8_dir, tmp_path / "wide_2.0.zip"), dialect="mysql")
    assert_table_equal(mariadb, pg_dsn, "wide", "wide", "2.0")
