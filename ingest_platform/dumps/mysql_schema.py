"""Read the ``CREATE TABLE`` statements of a MySQL/MariaDB script: one ``<table>.sql`` per table
(``mysqldump --tab``) or one file with them all (``mysqldump --no-data``, a hand-written schema).

Decision: a small reader of MySQL's own grammar, not sqlglot. A loader needs only each column's
name, type, NOT NULL, primary key and character set, but it must read the scripts MySQL and
MariaDB accept, and sqlglot's MySQL dialect refuses some of them (``float unsigned``, ``point``,
``PERSISTENT``, ``SPATIAL KEY``, ``inet6``). So the script is split into statements as the
``mysql`` client does (strings, comments, ``DELIMITER``; the content of version comments
``/*!50100 ... */`` is code), statements other than ``CREATE TABLE`` are skipped (views, triggers,
routines, ``SET``, ``INSERT``), and in a column definition everything after the type that is not
one of the attributes above is skipped, parentheses balanced (defaults, comments, references).

Type spellings are normalized as ``SHOW CREATE TABLE`` prints them (``integer`` -> ``int``,
``double precision``/``real`` -> ``double``, ``bool`` -> ``tinyint(1)``, ``serial`` -> ``bigint
unsigned NOT NULL``, bare ``bit`` -> ``bit(1)``, ``float(p)`` with p > 24 -> ``double``); MariaDB's
``JSON`` (``longtext ... CHECK (json_valid(col))``) is ``json``. Generated columns and invisible
columns are columns like any other: mysqldump ``--tab`` writes their values.

With the dialect's ``zero_dates = "null"``, DATE/DATETIME/TIMESTAMP columns are made nullable,
because their zero dates ('0000-00-00 00:00:00', even as a NOT NULL default) arrive as NULL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest_platform.dumps.charsets import charset_of_collation, codec_of
from ingest_platform.dumps.dialect import Dialect, parse_type_name
from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import SchemaError

DATE_TYPES = {"date", "datetime", "timestamp"}
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
_BINARY_OF_TEXT = {
    "char": "binary",
    "varchar": "varbinary",
    "tinytext": "tinyblob",
    "text": "blob",
    "mediumtext": "mediumblob",
    "longtext": "longblob",
}
# Spellings MySQL accepts -> the name SHOW CREATE TABLE prints.
_SYNONYMS = {
    "integer": "int",
    "int1": "tinyint",
    "int2": "smallint",
    "int3": "mediumint",
    "middleint": "mediumint",
    "int4": "int",
    "int8": "bigint",
    "dec": "decimal",
    "fixed": "decimal",
    "numeric": "decimal",
    "real": "double",
    "float4": "float",
    "float8": "double",
    "double precision": "double",
    "character": "char",
    "nchar": "char",
    "national char": "char",
    "national character": "char",
    "nvarchar": "varchar",
    "national varchar": "varchar",
    "char varying": "varchar",
    "character varying": "varchar",
    "national char varying": "varchar",
    "national character varying": "varchar",
    "nchar varying": "varchar",
    "long": "mediumtext",
    "long varchar": "mediumtext",
    "long varbinary": "mediumblob",
    "geomcollection": "geometrycollection",
}
_NATIONAL = {"nchar", "nvarchar", "national"}  # national types are utf8
_CONSTRAINT_STARTS = {
    "primary",
    "key",
    "index",
    "unique",
    "fulltext",
    "spatial",
    "constraint",
    "foreign",
    "check",
}


@dataclass(frozen=True)
class Token:
    kind: str  # "word" (keyword or bare name), "quoted" (`name`), "string", "op"
    text: str  # the value: unquoted names and strings, operators as written
    line: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<comment>(?:--(?=\s|$)|\#)[^\n]*|/\*(?![!]|M!).*?\*/)
    |(?P<version>/\*M?!\d*)
    |(?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    |(?P<quoted>`(?:[^`]|``)*`)
    |(?P<word>[\w$]+)
    |(?P<op>.)""",
    re.VERBOSE | re.DOTALL,
)
_DELIMITER = re.compile(r"(?i)delimiter[ \t]+(?P<delimiter>\S+)[^\n]*")
_VERSION_END = re.compile(r"(?P<version_end>\*/)")
_COMMENT_END = re.compile(r"(?P<comment>.*?\*/)", re.DOTALL)
_STRING_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_STRING_ESCAPES = {
    "0": "\0",
    "b": "\b",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "Z": "\x1a",
    "%": "\\%",
    "_": "\\_",
}


def read_mysql_tables(
    text: str, dialect: Dialect, file: str = "table.sql"
) -> dict[str, TableSchema]:
    """Every ``CREATE TABLE`` of a script, by table name (later definitions win, as in MySQL)."""
    tables: dict[str, TableSchema] = {}
    for statement in split_statements(text, file):
        if _starts(statement, "create", "table"):
            schema = _TableReader(statement, dialect, file, tables).read()
            tables[schema.name] = schema
        elif _starts(statement, "drop", "table"):
            # Older mysqldumps create a stand-in table for each view and drop it again.
            for name in _dropped(statement):
                tables.pop(name, None)
    return tables


def split_statements(text: str, file: str) -> list[list[Token]]:
    """The script's statements as token lists, split at the delimiter as the mysql client does."""
    statements: list[list[Token]] = []
    tokens: list[Token] = []
    delimiter, pos, line, in_version = ";", 0, 1, False
    while pos < len(text):
        if not tokens and (match := _DELIMITER.match(text, pos)):
            delimiter = match.group("delimiter")
        elif text.startswith(delimiter, pos):
            if tokens:
                statements.append(tokens)
            tokens, pos = [], pos + len(delimiter)
            continue
        elif in_version and text.startswith("*/", pos):
            in_version, match = False, _VERSION_END.match(text, pos)
        else:
            match = _TOKEN.match(text, pos)
        assert match is not None  # _TOKEN's last alternative matches any character
        kind, value = match.lastgroup, match.group()
        if kind == "op" and (value in "'\"`" or text.startswith("/*", pos)):
            raise SchemaError(f"{file}: line {line}: unterminated {_what(value)}; is the file cut?")
        if kind == "version":
            if text.startswith("\\", match.end()):  # /*M!999999\- ... */: a client command
                match = _COMMENT_END.match(text, pos)
                if match is None:
                    raise SchemaError(
                        f"{file}: line {line}: unterminated comment; is the file cut?"
                    )
            else:
                in_version = True  # the comment's content is code (MySQL runs it)
        elif kind in ("string", "quoted", "word", "op"):
            tokens.append(Token(kind, _unquote(kind, value), line))
        line += match.group().count("\n")
        pos = match.end()
    if tokens:
        statements.append(tokens)
    return statements


def _what(start: str) -> str:
    return {"'": "string", '"': "string", "`": "quoted name"}.get(start, "comment")


def _unquote(kind: str, value: str) -> str:
    if kind == "quoted":
        return value[1:-1].replace("``", "`")
    if kind == "string":
        body = value[1:-1].replace(value[0] * 2, value[0])
        return _STRING_ESCAPE.sub(lambda m: _STRING_ESCAPES.get(m.group(1), m.group(1)), body)
    return value


def _starts(tokens: list[Token], verb: str, noun: str) -> bool:
    """CREATE [OR REPLACE] TABLE, DROP TABLE: not CREATE TEMPORARY TABLE (a dump has none)."""
    words = [t.text.lower() for t in tokens[:4] if t.kind == "word"]
    words = [w for w in words if w not in ("or", "replace")]
    return words[:2] == [verb, noun]


def _dropped(tokens: list[Token]) -> list[str]:
    """Tables of DROP TABLE [IF EXISTS] a, db.b [CASCADE]."""
    names = [t for t in tokens[2:] if not t.is_word("if", "exists", "restrict", "cascade")]
    return [part[-1].text for part in _split_commas(names) if part]


class _TableReader:
    """One CREATE TABLE statement -> TableSchema."""

    def __init__(self, tokens: list[Token], dialect: Dialect, file: str, known: dict):
        self.tokens, self.dialect, self.file, self.known = tokens, dialect, file, known

    def error(self, token: Token, message: str) -> SchemaError:
        return SchemaError(f"{self.file}: line {token.line}: {message}")

    def read(self) -> TableSchema:
        tokens = self.tokens
        at = next(i for i, t in enumerate(tokens) if t.is_word("table")) + 1
        if [t.text.lower() for t in tokens[at : at + 3]] == ["if", "not", "exists"]:
            at += 3
        if at >= len(tokens):
            raise self.error(tokens[-1], "CREATE TABLE without a table name")
        name_token, db = tokens[at], None
        if _is_op(tokens, at + 1, ".") and at + 2 < len(tokens):
            db, name_token, at = name_token.text, tokens[at + 2], at + 2
        name, rest = name_token.text, tokens[at + 1 :]
        like = [i for i, t in enumerate(rest[:2]) if t.is_word("like")]
        if like:
            return self._like(name, db, rest[like[0] + 1 :], name_token)
        end = _closing(rest, 0) if _is_op(rest, 0, "(") else None
        if end is None:
            raise self.error(
                name_token,
                f"CREATE TABLE {name}: no column list to read (CREATE TABLE .. SELECT has none, "
                "or a parenthesis is missing); give the table its column definitions",
            )
        table_charset = _charset_option(rest[end + 1 :])
        columns: list[Column] = []
        primary_key: list[str] = []
        for definition in _split_commas(rest[1:end]):
            first = definition[0] if definition else None
            if first is None:
                raise self.error(rest[0], f"CREATE TABLE {name}: an empty column definition")
            if first.kind == "word" and first.text.lower() in _CONSTRAINT_STARTS:
                # Unquoted, these words are reserved: never a column name.
                primary_key = _primary_key(definition) or primary_key
            elif first.is_word("period") and len(definition) > 1 and definition[1].is_word("for"):
                continue  # MariaDB's PERIOD FOR (system or application time)
            else:
                column, is_key = self._column(definition, table_charset, name)
                columns.append(column)
                if is_key:
                    primary_key = [column.name]
        try:
            return TableSchema(name, columns, primary_key, source_schema=db).validate()
        except SchemaError as error:
            raise self.error(name_token, str(error)) from None

    def _like(self, name: str, db: str | None, rest: list[Token], token: Token) -> TableSchema:
        original = self.known.get(rest[0].text) if rest else None
        if original is None:
            other = rest[0].text if rest else "?"
            raise self.error(token, f"CREATE TABLE {name} LIKE {other}: {other} is not defined")
        return TableSchema(name, list(original.columns), list(original.primary_key), db)

    def _column(self, tokens: list[Token], table_charset, table: str) -> tuple[Column, bool]:
        name = tokens[0].text
        where = f"table {table}, column {name}"
        if len(tokens) < 2 or tokens[1].kind != "word":
            raise self.error(tokens[0], f"{where}: no data type")
        base, at = _type_name(tokens, 1)
        national = tokens[1].text.lower() in _NATIONAL
        base = _SYNONYMS.get(base, base)
        params = ""
        if _is_op(tokens, at, "("):
            end = _closing(tokens, at)
            if end is None:
                raise self.error(tokens[at], f"{where}: unbalanced parentheses")
            params, at = _params_text(tokens[at + 1 : end]), end + 1
        rest = tokens[at:]
        attributes = _top_level(rest)
        words = [t.text.lower() if t.kind == "word" else "" for t in attributes]
        following = [*words[1:], ""]
        modifiers = {w for w in words if w in ("unsigned", "zerofill")}
        nullable, is_key, generated = True, False, False
        charset, collation = ("utf8" if national else None), None
        for i, word in enumerate(words):
            if word == "not" and following[i] == "null":
                nullable = False
            elif word == "primary" or (word == "key" and words[i - 1 : i] != ["unique"]):
                is_key = True  # a column's KEY attribute is PRIMARY KEY
            elif word == "charset" or (word == "character" and following[i] == "set"):
                charset = _word_after(attributes, i + (1 if word == "charset" else 2))
            elif word == "collate":
                collation = _word_after(attributes, i + 1)
            elif word in ("as", "generated"):
                generated = True
            elif word == "serial" and following[i] == "default":
                nullable = False  # SERIAL DEFAULT VALUE = NOT NULL AUTO_INCREMENT UNIQUE
        if base == "serial":
            base, modifiers, nullable = "bigint", {"unsigned"}, False
        if base in ("bool", "boolean"):
            base, params = "tinyint", "1"
        if base == "bit" and not params:
            params = "1"
        if base == "float" and params.isdigit():  # float(p): a float, or a double from p = 25
            base, params = ("double" if int(params) > 24 else "float"), ""
        if "zerofill" in modifiers:
            modifiers.add("unsigned")  # MySQL makes ZEROFILL columns unsigned
        if base == "longtext" and _json_valid_check(rest, name):
            base = "json"  # MariaDB's JSON type
        charset = charset or (charset_of_collation(collation) if collation else None)
        if base in TEXT_TYPES:
            charset = charset or table_charset
            if charset == "binary" and base in _BINARY_OF_TEXT:
                base, charset = _BINARY_OF_TEXT[base], None
        source_type = base + (f"({params})" if params else "")
        source_type += "".join(f" {m}" for m in ("unsigned", "zerofill") if m in modifiers)
        try:
            pg_type = self.dialect.map_type(source_type)
            encoding = codec_of(charset) if charset and base in TEXT_TYPES else None
        except (SchemaError, ValueError) as error:
            raise self.error(tokens[0], f"{where}: {error}") from None
        if (
            self.dialect.file_format.zero_dates == "null"
            and parse_type_name(source_type)[0] in DATE_TYPES
        ):
            nullable = True
        return Column(name, source_type, pg_type, nullable, generated, encoding), is_key


def _is_op(tokens: list[Token], at: int, op: str) -> bool:
    return at < len(tokens) and tokens[at].kind == "op" and tokens[at].text == op


def _word_after(tokens: list[Token], at: int) -> str | None:
    return tokens[at].text.lower() if at < len(tokens) else None


def _type_name(tokens: list[Token], at: int) -> tuple[str, int]:
    """The type name from tokens[at], with the words of 'double precision', 'long varchar'..."""
    name = tokens[at].text.lower()
    at += 1
    while at < len(tokens) and tokens[at].kind == "word":
        longer = f"{name} {tokens[at].text.lower()}"
        if longer not in _SYNONYMS and not any(s.startswith(longer + " ") for s in _SYNONYMS):
            break
        name, at = longer, at + 1
    return name, at


def _params_text(tokens: list[Token]) -> str:
    """Type parameters as SHOW CREATE TABLE prints them: 10,2 or 'a','b'."""
    return "".join(
        "'" + t.text.replace("'", "''") + "'" if t.kind == "string" else t.text for t in tokens
    )


def _closing(tokens: list[Token], at: int) -> int | None:
    """Index of the parenthesis that closes tokens[at]."""
    depth = 0
    for i in range(at, len(tokens)):
        if tokens[i].kind == "op" and tokens[i].text in "()":
            depth += 1 if tokens[i].text == "(" else -1
            if depth == 0:
                return i
    return None


def _split_commas(tokens: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == "op" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if depth == 0 and token.kind == "op" and token.text == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _top_level(tokens: list[Token]) -> list[Token]:
    """Tokens outside parentheses: a default's or a check's expression holds no attribute."""
    out, depth = [], 0
    for token in tokens:
        if token.kind == "op" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        elif depth == 0:
            out.append(token)
    return out


def _primary_key(definition: list[Token]) -> list[str]:
    """Columns of [CONSTRAINT [name]] PRIMARY KEY [USING BTREE] (a, b(10) DESC); [] otherwise."""
    words = [t.text.lower() for t in definition if t.kind == "word"]
    if "primary" not in words[:3]:
        return []
    start = next((i for i, t in enumerate(definition) if _is_op(definition, i, "(")), None)
    end = _closing(definition, start) if start is not None else None
    if start is None or end is None:
        return []
    return [part[0].text for part in _split_commas(definition[start + 1 : end]) if part]


def _charset_option(options: list[Token]) -> str | None:
    """The charset of the table options' [DEFAULT] CHARSET / CHARACTER SET / COLLATE."""
    words = [t for t in _top_level(options) if not (t.kind == "op" and t.text == "=")]
    charset = collation = None
    for i, token in enumerate(words):
        if token.is_word("charset"):
            charset = _word_after(words, i + 1)
        elif token.is_word("character") and i + 1 < len(words) and words[i + 1].is_word("set"):
            charset = _word_after(words, i + 2)
        elif token.is_word("collate"):
            collation = _word_after(words, i + 1)
    return charset or (charset_of_collation(collation) if collation else None)


def _json_valid_check(tokens: list[Token], column: str) -> bool:
    """CHECK (json_valid(`column`)): how MariaDB spells a JSON column (an alias of longtext)."""
    texts = [t.text.lower() for t in tokens]
    pattern = ["check", "(", "json_valid", "(", column.lower(), ")", ")"]
    return any(texts[i : i + len(pattern)] == pattern for i in range(len(texts)))
