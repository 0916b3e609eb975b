"""MySQL/MariaDB DDL that MySQL accepts parses: types, attributes, scripts, charsets, errors.

The MariaDB round trips (test_mysql_exports.py) prove the loads; these tests need no server.
"""

from __future__ import annotations

import json

import pytest

from ingest_platform.dumps import load_dialect, open_dump
from ingest_platform.dumps.mysql_schema import read_mysql_tables
from ingest_platform.errors import FormatError, SchemaError
from ingest_platform_tests.conftest import MYSQL_DIR, make_zip

MYSQL = load_dialect("mysql")

# As MariaDB 10.11's SHOW CREATE TABLE and MySQL 8's mysqldump write them, plus spellings
# MySQL accepts in hand-written DDL.
EVERY_TYPE = """
/*M!999999\\- enable the sandbox mode */
/*!40101 SET NAMES utf8mb4 */;
CREATE TABLE IF NOT EXISTS `shop`.`every type` (
  `f` float unsigned DEFAULT NULL,
  `fz` float(7,3) unsigned zerofill NOT NULL,
  `f30` FLOAT(30),
  `d` double(10,3) unsigned,
  `dp` DOUBLE PRECISION,
  `r` real,
  `dec` decimal(65,30) unsigned NOT NULL DEFAULT 0.000,
  `fixed` FIXED(5,2),
  `n` numeric,
  `i` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `ig` INTEGER SIGNED,
  `zf` int(6) zerofill,
  `mi` MIDDLEINT,
  `tb` tinyint(1) NOT NULL DEFAULT 0,
  `bo` BOOL,
  `bu` bigint(20) unsigned,
  `s` SERIAL,
  `b` bit,
  `b1` bit(1) NOT NULL DEFAULT b'0',
  `b9` bit(9),
  `b64` bit(64) DEFAULT b'101',
  `e` enum('a','b,c','it''s') CHARACTER SET latin1 COLLATE latin1_swedish_ci DEFAULT 'a',
  `st` set('x','y') NOT NULL,
  `dt` datetime(6) NOT NULL DEFAULT '0000-00-00 00:00:00.000000' ON UPDATE current_timestamp(6),
  `ts` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  `da` date NOT NULL,
  `t` time(3) DEFAULT NULL COMMENT 'x, y (z)',
  `y` year(4) DEFAULT NULL,
  `gv` int(11) GENERATED ALWAYS AS (`i` + 1) VIRTUAL,
  `gs` varchar(10) AS (concat(`e`,'x')) PERSISTENT,
  `gm` bigint GENERATED ALWAYS AS ((`i` * 2)) STORED NOT NULL,
  `pt` point NOT NULL /*!80003 SRID 4326 */,
  `g` geometry,
  `gc` geomcollection,
  `mp` multipolygon DEFAULT NULL,
  `j` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`j`)),
  `j8` json DEFAULT NULL,
  `lt` longtext CHECK (`lt` <> ''),
  `inv` int DEFAULT NULL /*!80023 INVISIBLE */,
  `inv2` int(11) INVISIBLE DEFAULT 7,
  `ip` inet6,
  `u` uuid,
  `c` char,
  `c0` char(0),
  `nc` NATIONAL CHARACTER VARYING(5),
  `nv` nvarchar(5),
  `cv` character varying(7),
  `vb` varchar(10) CHARACTER SET binary,
  `vbin` varchar(10) BINARY,
  `lg` LONG VARCHAR,
  `lvb` long varbinary,
  `bl` blob,
  `key` int KEY,
  `ref` int REFERENCES `other` (`id`) ON DELETE CASCADE,
  PRIMARY KEY (`i`),
  UNIQUE KEY `uk` (`y`),
  KEY `ix` (`e`(2), `st` DESC),
  SPATIAL KEY `sp` (`pt`),
  FULLTEXT KEY `ft` (`lt`),
  CONSTRAINT `fk` FOREIGN KEY (`y`) REFERENCES `o` (`y`),
  CONSTRAINT `ck` CHECK (`i` > 0),
  PERIOD FOR app_time (`da`, `dt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci
/*!50100 PARTITION BY HASH (`i`) PARTITIONS 2 */;
"""

EXPECTED = [
    # name, source type, PostgreSQL type, nullable, generated, encoding
    ("f", "float unsigned", "real", True, False, None),
    ("fz", "float(7,3) unsigned zerofill", "real", False, False, None),
    ("f30", "double", "double precision", True, False, None),
    ("d", "double(10,3) unsigned", "double precision", True, False, None),
    ("dp", "double", "double precision", True, False, None),
    ("r", "double", "double precision", True, False, None),
    ("dec", "decimal(65,30) unsigned", "numeric(65,30)", False, False, None),
    ("fixed", "decimal(5,2)", "numeric(5,2)", True, False, None),
    ("n", "decimal", "numeric(10,0)", True, False, None),
    ("i", "int(10) unsigned", "bigint", False, False, None),
    ("ig", "int", "integer", True, False, None),
    ("zf", "int(6) unsigned zerofill", "bigint", True, False, None),
    ("mi", "mediumint", "integer", True, False, None),
    ("tb", "tinyint(1)", "smallint", False, False, None),
    ("bo", "tinyint(1)", "smallint", True, False, None),
    ("bu", "bigint(20) unsigned", "numeric(20,0)", True, False, None),
    ("s", "bigint unsigned", "numeric(20,0)", False, False, None),
    ("b", "bit(1)", "boolean", True, False, None),
    ("b1", "bit(1)", "boolean", False, False, None),
    ("b9", "bit(9)", "bigint", True, False, None),
    ("b64", "bit(64)", "numeric(20,0)", True, False, None),
    ("e", "enum('a','b,c','it''s')", "text", True, False, "mysql-latin1"),
    ("st", "set('x','y')", "text", False, False, None),
    ("dt", "datetime(6)", "timestamp", True, False, None),  # zero dates arrive as NULL
    ("ts", "timestamp", "timestamp", True, False, None),
    ("da", "date", "date", True, False, None),
    ("t", "time(3)", "interval", True, False, None),
    ("y", "year(4)", "smallint", True, False, None),
    ("gv", "int(11)", "integer", True, True, None),
    ("gs", "varchar(10)", "varchar(10)", True, True, None),
    ("gm", "bigint", "bigint", False, True, None),
    ("pt", "point", "bytea", False, False, None),
    ("g", "geometry", "bytea", True, False, None),
    ("gc", "geometrycollection", "bytea", True, False, None),
    ("mp", "multipolygon", "bytea", True, False, None),
    ("j", "json", "jsonb", True, False, None),
    ("j8", "json", "jsonb", True, False, None),
    ("lt", "longtext", "text", True, False, None),
    ("inv", "int", "integer", True, False, None),
    ("inv2", "int(11)", "integer", True, False, None),
    ("ip", "inet6", "inet", True, False, None),
    ("u", "uuid", "uuid", True, False, None),
    ("c", "char", "char(1)", True, False, None),
    ("c0", "char(0)", "text", True, False, None),
    ("nc", "varchar(5)", "varchar(5)", True, False, None),
    ("nv", "varchar(5)", "varchar(5)", True, False, None),
    ("cv", "varchar(7)", "varchar(7)", True, False, None),
    ("vb", "varbinary(10)", "bytea", True, False, None),
    ("vbin", "varchar(10)", "varchar(10)", True, False, None),
    ("lg", "mediumtext", "text", True, False, None),
    ("lvb", "mediumblob", "bytea", True, False, None),
    ("bl", "blob", "bytea", True, False, None),
    ("key", "int", "integer", True, False, None),
    ("ref", "int", "integer", True, False, None),
]


def test_every_type_and_attribute_mysql_and_mariadb_accept():
    tables = read_mysql_tables(EVERY_TYPE, MYSQL, "every.sql")
    table = tables["every type"]
    assert table.source_schema == "shop"
    columns = [
        (c.name, c.source_type, c.pg_type, c.nullable, c.computed, c.encoding)
        for c in table.columns
    ]
    assert columns == EXPECTED
    assert table.primary_key == ["i"]


def test_a_schema_file_with_every_create_table_of_a_dump(tmp_path):
    # The export: all CREATE TABLEs in one file; `float unsigned` used to stop it.
    script = """
-- MySQL dump 10.13  Distrib 8.0.36
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `measure`;
CREATE TABLE `measure` (
  `id` int unsigned NOT NULL,
  `value` float unsigned NOT NULL DEFAULT '0',
  `weight` double unsigned DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
DROP TABLE IF EXISTS `site`;
CREATE TABLE `site` (`id` smallint NOT NULL, `name` varchar(40) NOT NULL, PRIMARY KEY (`id`));
"""
    dump = make_zip(
        tmp_path / "measure_1.0.zip",
        {"schema.sql": script, "measure.txt": "1\t3.5\t\\N\n", "site.txt": "7\tLyon\n"},
    )
    with open_dump(dump, dialect="mysql") as opened:
        assert set(opened.tables) == {"measure", "site"}
        assert opened.tables["measure"].schema.columns[1].pg_type == "real"
        assert b"".join(opened.iter_copy_chunks("measure")) == b"1\t3.5\t\\N\n"


def test_real_export_read_as_one_schema_file_equals_its_per_table_files():
    if not MYSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    texts = [p.read_text() for p in sorted(MYSQL_DIR.glob("*.sql"))]
    per_table = {}
    for text in texts:
        per_table.update(read_mysql_tables(text, MYSQL))
    assert read_mysql_tables("\n".join(texts), MYSQL, "all.sql") == per_table
    assert len(per_table) == 74


def test_only_create_table_statements_are_read_from_a_script():
    script = """
# a comment; CREATE TABLE no (a int);
-- another; CREATE TABLE no2 (a int);
/* CREATE TABLE no3 (a int); */
INSERT INTO `kept` VALUES (1,'x; CREATE TABLE no4 (a int);'),(2,'it\\'s; '' ');
/*!50001 CREATE TABLE `stand_in` (`a` tinyint NOT NULL) ENGINE=MyISAM */;
CREATE TEMPORARY TABLE scratch (a int);
CREATE TABLE `kept` (`a` int NOT NULL, `b` varchar(20), PRIMARY KEY (`a`));
CREATE TABLE copy LIKE `kept`;
CREATE OR REPLACE TABLE `db`.`replaced` (`a` int);
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER t BEFORE INSERT ON kept
FOR EACH ROW BEGIN SET NEW.b = 'x;'; CREATE TABLE no5 (a int); END */;;
CREATE PROCEDURE p() BEGIN CREATE TABLE no6 (a int); SELECT 1; END ;;
DELIMITER ;
/*!50001 DROP TABLE IF EXISTS `stand_in`*/;
/*!50001 CREATE VIEW `stand_in` AS SELECT 1 AS `a` */;
CREATE TABLE IF NOT EXISTS last (a int)
"""
    tables = read_mysql_tables(script, MYSQL, "script.sql")
    assert sorted(tables) == ["copy", "kept", "last", "replaced"]
    assert tables["copy"].column_names == ["a", "b"] and tables["copy"].primary_key == ["a"]
    assert tables["replaced"].source_schema == "db"


def test_character_sets_of_text_columns():
    script = """
CREATE TABLE legacy (
  a varchar(5),
  b text CHARACTER SET utf8mb4,
  c char(2) COLLATE cp1251_bin,
  d varchar(5) CHARSET koi8r,
  e nchar(2),
  f enum('x'),
  g int,
  h tinytext CHARACTER SET binary,
  i varchar(3) CHARACTER SET utf16
) DEFAULT CHARACTER SET = latin1;
CREATE TABLE by_collation (a varchar(5)) COLLATE latin2_general_ci;
"""
    tables = read_mysql_tables(script, MYSQL)
    legacy = {c.name: (c.pg_type, c.encoding) for c in tables["legacy"].columns}
    assert legacy == {
        "a": ("varchar(5)", "mysql-latin1"),
        "b": ("text", None),
        "c": ("char(2)", "cp1251"),
        "d": ("varchar(5)", "koi8-r"),
        "e": ("char(2)", None),  # national: utf8
        "f": ("text", "mysql-latin1"),
        "g": ("integer", None),
        "h": ("bytea", None),  # a text of charset binary is a blob
        "i": ("varchar(3)", "utf-16-be"),  # refused when loaded (see below)
    }
    assert tables["by_collation"].columns[0].encoding == "iso8859-2"


def test_mysql_latin1_is_cp1252_with_its_five_holes_as_c1_controls():
    decoded = bytes(range(256)).decode("mysql-latin1")
    assert decoded[0x80] == "€" and decoded[0xE9] == "é" and decoded[0xFF] == "ÿ"
    assert [decoded[b] for b in (0x81, 0x8D, 0x8F, 0x90, 0x9D)] == [
        "\x81",
        "\x8d",
        "\x8f",
        "\x90",
        "\x9d",
    ]
    assert decoded.encode("mysql-latin1") == bytes(range(256))


def test_columns_in_their_own_charset_load_decoded(tmp_path):
    ddl = "CREATE TABLE t (id int, l varchar(9) CHARACTER SET latin1, u text) CHARSET=utf8mb4;"
    rows = b"1\tcaf\xe9 \x80\tcaf\xc3\xa9\n2\t\xc3\xa9\t\\N\n"  # 'Ã©' in latin1 is valid UTF-8
    dump = make_zip(tmp_path / "cs_1.zip", {"t.sql": ddl, "t.txt": rows})
    with open_dump(dump, dialect="mysql") as opened:
        text = b"".join(opened.iter_copy_chunks("t")).decode("utf-8")
    assert text == "1\tcafé €\tcafé\n2\tÃ©\t\\N\n"


def test_a_column_in_utf16_is_refused_unless_the_file_is_all_utf8(tmp_path):
    ddl = "CREATE TABLE t (id int, w varchar(9) CHARACTER SET utf16);"
    refused = make_zip(tmp_path / "w_1.zip", {"t.sql": ddl, "t.txt": b"1\t\x0a\x09\n"})
    with open_dump(refused, dialect="mysql") as opened, pytest.raises(FormatError) as error:
        list(opened.iter_copy_chunks("t"))
    assert str(error.value).startswith("t.txt: column 'w' is written in utf-16-be")
    assert "--default-character-set=utf8mb4" in str(error.value)
    manifest = json.dumps({"tables": {"t": {"column_charsets": False}}})
    utf8 = make_zip(
        tmp_path / "w_2.zip",
        {"manifest.json": manifest, "t.sql": ddl, "t.txt": "1\tਉ\n".encode()},
    )
    with open_dump(utf8, dialect="mysql") as opened:
        assert b"".join(opened.iter_copy_chunks("t")) == "1\tਉ\n".encode()
    manifest = json.dumps({"tables": {"t": {"column_charsets": "no"}}})
    bad = make_zip(tmp_path / "w_3.zip", {"manifest.json": manifest, "t.sql": ddl, "t.txt": ""})
    with pytest.raises(SchemaError, match="table 't': .*column_charsets must be true or false"):
        open_dump(bad, dialect="mysql")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "CREATE TABLE t (\n a varchar(3) DEFAULT 'x,\n b int);",
            r"^bad\.sql: line 2: unterminated string; is the file cut\?$",
        ),
        ("CREATE TABLE t (a int) /* never closed", r"^bad\.sql: line 1: unterminated comment"),
        (
            "\n\nCREATE TABLE t AS SELECT 1 AS a;",
            r"^bad\.sql: line 3: CREATE TABLE t: no column list to read",
        ),
        (
            "CREATE TABLE t (a int,\n b hugeint);",
            r"^bad\.sql: line 2: table t, column b: dialect 'mysql' has no PostgreSQL type for "
            r"source type 'hugeint'; add 'hugeint' to \[types\]",
        ),
        (
            "CREATE TABLE t (a varchar(3) CHARACTER SET armscii8);",
            r"^bad\.sql: line 1: table t, column a: CHARACTER SET armscii8 has no Python codec",
        ),
        ("CREATE TABLE t LIKE u;", r"^bad\.sql: line 1: CREATE TABLE t LIKE u: u is not defined"),
        ("CREATE TABLE t (a int, a int);", r"declares columns \['a'\] more than once"),
        ("CREATE TABLE t (a int, );", r"^bad\.sql: line 1: CREATE TABLE t: an empty column"),
        ("CREATE TABLE t (a int", r"^bad\.sql: line 1: CREATE TABLE t: no column list"),
    ],
)
def test_ddl_errors_name_file_line_table_and_column(script, message):
    with pytest.raises(SchemaError, match=message):
        read_mysql_tables(script, MYSQL, "bad.sql")


def test_a_bad_schema_file_stops_open_dump_naming_the_member(tmp_path):
    dump = make_zip(tmp_path / "app_1.zip", {"t.sql": "CREATE TABLE t (a int) 'x", "t.txt": ""})
    # One line naming the dump and the member.
    with pytest.raises(SchemaError, match=r"^\S*app_1\.zip: t\.sql: line 1: unterminated string"):
        open_dump(dump, dialect="mysql")
