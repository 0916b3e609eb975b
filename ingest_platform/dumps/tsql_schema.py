"""Read table schemas and per-file formats from a T-SQL install script (SQL Server dumps).

The script is split into batches on ``GO`` lines.  Inside a batch the sqlglot tokenizer finds the
statements we need (``CREATE TYPE``, ``CREATE TABLE``, ``ALTER TABLE .. PRIMARY KEY``,
``BULK INSERT``); only those are parsed, so procedures, triggers and SQLCMD lines that sqlglot
cannot read are skipped instead of failing the whole script.

Decisions (checked against AdventureWorks' bcp files):

- Computed columns ARE in bcp's data files (bcp exports every column; e.g. Customer.csv has 7
  fields for 6 stored + 1 computed column), so they stay in the schema, in order, as ``text``
  columns flagged ``computed=True``: their values are useful and their type is an expression.
- ``ROWGUIDCOL`` (unknown to sqlglot) is removed before parsing; a column definition that still
  does not parse is cut back token by token from the end until it does (name and type survive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.tokens import TokenType

from ingest_platform.dumps.dialect import Dialect
from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import SchemaError

_GO_LINE = re.compile(r"^[ \t]*GO[ \t]*(?:--[^\n]*)?\r?$", re.IGNORECASE | re.MULTILINE)
_SQLCMD_VARIABLE = re.compile(r"\$\([^)]*\)")
_WORDS_SQLGLOT_CANNOT_READ = {"ROWGUIDCOL", "SPARSE", "FILESTREAM"}
# A keyword at paren depth 0 that starts the next statement (T-SQL needs no semicolons).
_STATEMENT_STARTS = {
    "CREATE",
    "ALTER",
    "BULK",
    "PRINT",
    "IF",
    "EXEC",
    "EXECUTE",
    "INSERT",
    "UPDATE",
    "DELETE",
    "DECLARE",
    "SET",
    "SELECT",
    "DROP",
    "USE",
    "BEGIN",
    "END",
    "RAISERROR",
    "WHILE",
    "RETURN",
    "GRANT",
}
_BUILTIN_ALIASES = {"sysname": "nvarchar(128)"}
_CODEPAGES = {
    "65001": "utf-8",
    "1200": "utf-16-le",
    "ACP": "cp1252",
    "OEM": "cp437",
    "RAW": "latin-1",
}


@dataclass
class TsqlScript:
    tables: dict[str, TableSchema] = field(default_factory=dict)  # by table name
    data_files: dict[str, str] = field(default_factory=dict)  # table -> file name
    format_overrides: dict[str, dict] = field(default_factory=dict)  # table -> FileFormat keys


def read_tsql_script(text: str, dialect: Dialect, file: str = "script.sql") -> TsqlScript:
    aliases: dict[str, tuple[exp.DataType | str, bool]] = {}
    creates: list[exp.Create] = []
    primary_keys: dict[tuple[str, str], list[str]] = {}
    script = TsqlScript()
    for batch in _GO_LINE.split(text.lstrip("\ufeff")):
        for kind, statement_text, tokens in _interesting_statements(batch):
            if kind == "CREATE TYPE":
                name, base = _read_alias_type(tokens, statement_text)
                if name:
                    aliases[name.lower()] = base
            elif kind == "CREATE TABLE":
                create = _parse_create_table(statement_text, tokens, file)
                if create is not None:
                    creates.append(create)
            elif kind == "ALTER TABLE":
                _read_primary_key(statement_text, primary_keys)
            elif kind == "BULK INSERT":
                table, data_file, overrides = _read_bulk_insert(tokens, file)
                script.data_files[table] = data_file
                script.format_overrides[table] = overrides
    for create in creates:
        schema = _table_schema(create, aliases, dialect, file)
        key = ((schema.source_schema or "dbo").lower(), schema.name.lower())
        if not schema.primary_key and key in primary_keys:
            schema.primary_key = primary_keys[key]
        if schema.name in script.tables:
            raise SchemaError(
                f"{file}: table name {schema.name!r} is declared in two schemas; "
                "give the dump <table>.json schemas instead"
            )
        script.tables[schema.name] = schema.validate()
    return script


def _interesting_statements(batch: str):
    """Yield (kind, text, tokens) for the statements this reader understands."""
    try:
        tokens = TSQL().tokenize(batch)
    except Exception:  # sqlglot cannot tokenize some T-SQL bodies; they hold nothing we need
        return
    words = [t.text.upper() for t in tokens]
    index = 0
    while index < len(tokens) - 1:
        pair = f"{words[index]} {words[index + 1]}"
        if pair in ("CREATE TYPE", "CREATE TABLE", "ALTER TABLE", "BULK INSERT"):
            end = _statement_end(tokens, words, index + 2)
            statement_tokens = tokens[index:end]
            text = batch[statement_tokens[0].start : statement_tokens[-1].end + 1]
            if pair != "ALTER TABLE" or "PRIMARY" in words[index:end]:
                yield pair, text, statement_tokens
            index = end
        else:
            index += 1


def _statement_end(tokens, words, index: int) -> int:
    depth = 0
    while index < len(tokens):
        kind = tokens[index].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and (kind == TokenType.SEMICOLON or words[index] in _STATEMENT_STARTS):
            return index
        index += 1
    return index


def _read_alias_type(tokens, text: str) -> tuple[str | None, tuple]:
    """``CREATE TYPE [dbo].[Name] FROM nvarchar(50) NULL`` -> ("Name", (DataType, nullable))."""
    words = [t.text.upper() for t in tokens]
    if "FROM" not in words:
        return None, ("", True)  # a table type or CLR type: not an alias
    at = words.index("FROM")
    name = tokens[at - 1].text
    rest = tokens[at + 1 :]
    nullable = True
    if len(rest) >= 2 and [t.text.upper() for t in rest[-2:]] == ["NOT", "NULL"]:
        nullable, rest = False, rest[:-2]
    elif rest and rest[-1].text.upper() == "NULL":
        rest = rest[:-1]
    base_text = text[rest[0].start - tokens[0].start : rest[-1].end - tokens[0].start + 1]
    return name, (_build_type(base_text), nullable)


def _build_type(type_text: str) -> exp.DataType | str:
    try:
        return exp.DataType.build(type_text, dialect="tsql")
    except Exception:
        return type_text.strip("[] ").lower()  # e.g. hierarchyid: sqlglot has no name for it


def _parse_create_table(text: str, tokens, file: str) -> exp.Create | None:
    # Cut out words sqlglot does not know, by token position (not by pattern).
    base = tokens[0].start
    for token in reversed(tokens):
        if token.text.upper() in _WORDS_SQLGLOT_CANNOT_READ:
            text = text[: token.start - base] + text[token.end - base + 1 :]
    table_name = tokens[2].text if len(tokens) > 2 else ""
    if table_name.startswith(("#", "@")):
        return None  # temporary tables inside procedures
    statement: exp.Expr | None
    try:
        statement = sqlglot.parse_one(text, read="tsql")
    except sqlglot.errors.SqlglotError:
        statement = _parse_create_table_tolerantly(text, file)
    if isinstance(statement, exp.Create) and isinstance(statement.this, exp.Schema):
        return statement
    return None


def _parse_create_table_tolerantly(text: str, file: str) -> exp.Expr | None:
    """Parse each column definition alone; trim the ones sqlglot rejects from the end."""
    tokens = TSQL().tokenize(text)
    open_at = next((i for i, t in enumerate(tokens) if t.token_type == TokenType.L_PAREN), None)
    if open_at is None:
        return None
    head = text[: tokens[open_at].start]
    elements: list[list] = []
    current: list = []
    depth = 0
    for token in tokens[open_at + 1 :]:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            if depth == 0:
                break
            depth -= 1
        if token.token_type == TokenType.COMMA and depth == 0:
            elements.append(current)
            current = []
        else:
            current.append(token)
    elements.append(current)
    parsed = []
    for element in elements:
        for keep in range(len(element), 1, -1):
            piece = text[element[0].start : element[keep - 1].end + 1]
            try:
                sqlglot.parse_one(f"{head}({piece})", read="tsql")
            except sqlglot.errors.SqlglotError:
                continue
            parsed.append(piece)
            break
    try:
        return sqlglot.parse_one(f"{head}({', '.join(parsed)})", read="tsql")
    except sqlglot.errors.SqlglotError as error:
        raise SchemaError(f"{file}: cannot read {head.strip()!r}: {error}") from error


def _table_schema(create: exp.Create, aliases: dict, dialect: Dialect, file: str) -> TableSchema:
    table = create.this.this
    columns, primary_key = [], []
    for element in create.this.expressions:
        if isinstance(element, exp.ColumnDef):
            column, is_key = _column(element, aliases, dialect, table.name, file)
            columns.append(column)
            if is_key:
                primary_key.append(column.name)
        elif _is_primary_key(element):
            primary_key = _key_columns(element)
    return TableSchema(
        name=table.name, columns=columns, primary_key=primary_key, source_schema=table.db or None
    )


def _column(definition: exp.ColumnDef, aliases: dict, dialect: Dialect, table: str, file: str):
    kinds = [c.args.get("kind") for c in definition.constraints]
    computed = any(isinstance(k, exp.ComputedColumnConstraint) for k in kinds)
    is_key = any(isinstance(k, exp.PrimaryKeyColumnConstraint) for k in kinds)
    null_rules = [k for k in kinds if isinstance(k, exp.NotNullColumnConstraint)]
    nullable = bool(null_rules[-1].args.get("allow_null")) if null_rules else None
    if computed:
        return Column(definition.name, "computed", "text", True, computed=True), is_key
    data_type: exp.DataType | str | None = definition.args.get("kind")
    if data_type is None:
        raise SchemaError(f"{file}: column {table}.{definition.name} has no type")
    # Resolve alias types (CREATE TYPE .. FROM) to their base type, alias nullability as default.
    for _ in range(5):
        name = _user_defined_name(data_type)
        if name is None:
            break
        if name in aliases:
            data_type, alias_nullable = aliases[name]
            nullable = alias_nullable if nullable is None else nullable
        elif name in _BUILTIN_ALIASES:
            data_type = _build_type(_BUILTIN_ALIASES[name])
        else:
            data_type = name
            break
    source_type = data_type if isinstance(data_type, str) else data_type.sql("tsql").lower()
    try:
        pg_type = dialect.map_type(source_type)
    except SchemaError as error:
        raise SchemaError(f"{file}: column {table}.{definition.name}: {error}") from error
    return Column(
        definition.name, source_type, pg_type, True if nullable is None else nullable
    ), is_key


def _user_defined_name(data_type) -> str | None:
    if isinstance(data_type, str):
        return data_type.split(".")[-1].strip("[]").lower()
    if data_type.this == exp.DataType.Type.USERDEFINED:
        return str(data_type.args.get("kind")).split(".")[-1].strip("[]").lower()
    return None


def _is_primary_key(node: exp.Expression) -> bool:
    return isinstance(node, exp.PrimaryKey) or node.find(exp.PrimaryKeyColumnConstraint) is not None


def _key_columns(node: exp.Expression) -> list[str]:
    columns = [c.name for c in node.find_all(exp.Column)]
    if not columns and isinstance(node, exp.PrimaryKey):
        columns = [e.name for e in node.expressions]
    return columns


def _read_primary_key(text: str, primary_keys: dict) -> None:
    statement: exp.Expr | None
    try:
        statement = sqlglot.parse_one(text, read="tsql")
    except sqlglot.errors.SqlglotError:
        return
    if not isinstance(statement, exp.Alter):
        return
    for constraint in statement.find_all(exp.Constraint, exp.PrimaryKey):
        if _is_primary_key(constraint):
            table = statement.this
            primary_keys[((table.db or "dbo").lower(), table.name.lower())] = _key_columns(
                constraint
            )
            return


def _read_bulk_insert(tokens, file: str) -> tuple[str, str, dict]:
    """``BULK INSERT [s].[t] FROM '..\\t.csv' WITH (FIELDTERMINATOR = '+|', ...)``."""
    words = [t.text.upper() for t in tokens]
    at_from = words.index("FROM") if "FROM" in words else len(words)
    name_tokens = [t for t in tokens[2:at_from] if t.token_type != TokenType.DOT]
    table = name_tokens[-1].text if name_tokens else ""
    path = _SQLCMD_VARIABLE.sub("", tokens[at_from + 1].text) if at_from + 1 < len(tokens) else ""
    data_file = re.split(r"[\\/]", path)[-1]
    options: dict[str, str] = {}
    index = at_from + 2
    while index < len(tokens):
        token = tokens[index]
        if token.token_type in (TokenType.VAR, TokenType.FORMAT) or token.text.isidentifier():
            if index + 2 < len(tokens) and tokens[index + 1].token_type == TokenType.EQ:
                options[token.text.upper()] = tokens[index + 2].text
                index += 3
                continue
        index += 1
    return table, data_file, _bulk_options_to_format(options, table, file)


def _bulk_options_to_format(options: dict[str, str], table: str, file: str) -> dict:
    overrides: dict = {}
    try:
        if "FIELDTERMINATOR" in options:
            overrides["field_terminator"] = _terminator(options["FIELDTERMINATOR"])
        if "ROWTERMINATOR" in options:
            overrides["row_terminator"] = _terminator(options["ROWTERMINATOR"])
    except ValueError:
        raise SchemaError(
            f"{file}: BULK INSERT {table}: a hex terminator ('0x..') has digits that are not "
            "hexadecimal; write it like '0x0a'"
        ) from None
    if "ROWTERMINATOR" in options:
        value = options["ROWTERMINATOR"]
        # bcp reads a typed "\n" as CRLF on Windows; a hex terminator means exactly those bytes.
        overrides["row_terminator_crlf_sniff"] = not value.lower().startswith("0x")
    data_file_type = options.get("DATAFILETYPE", "char").lower()
    if data_file_type in ("native", "widenative"):
        raise SchemaError(
            f"{file}: BULK INSERT {table}: DATAFILETYPE='{data_file_type}' is bcp's binary "
            "format, which this platform cannot read; export with bcp -c or -w"
        )
    if data_file_type == "widechar":
        overrides["encoding"] = "utf-16-le"
    elif "CODEPAGE" in options:
        page = options["CODEPAGE"].upper()
        overrides["encoding"] = _CODEPAGES.get(page, f"cp{page}")
    if "FIRSTROW" in options and options["FIRSTROW"].isdigit():
        overrides["header_rows"] = int(options["FIRSTROW"]) - 1
    if options.get("FORMAT", "").upper() == "CSV":
        overrides["quote"] = options.get("FIELDQUOTE", '"')
    # MAXERRORS: "the maximum number of syntax errors allowed in the data before the bulk-import
    # operation is canceled. Each row that cannot be imported ... is ignored and counted as one
    # error" (Microsoft, BULK INSERT (Transact-SQL), learn.microsoft.com/sql/t-sql/statements/
    # bulk-insert-transact-sql). Only a MAXERRORS the script writes counts: SQL Server's implicit
    # default of 10 is not taken over, so a dump without it loads strictly, as it always did.
    if options.get("MAXERRORS", "").isdigit():
        overrides["max_errors"] = int(options["MAXERRORS"])
    return overrides


def _terminator(value: str) -> str:
    """SQL Server terminator syntax: '\\t' '\\n' '\\r' '\\0' '\\\\' escapes, or hex '0x0a'."""
    if value.lower().startswith("0x"):
        return bytes.fromhex(value[2:]).decode("latin-1")
    escapes = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\"}
    out, index = [], 0
    while index < len(value):
        if value[index] == "\\" and index + 1 < len(value) and value[index + 1] in escapes:
            out.append(escapes[value[index + 1]])
            index += 2
        else:
            out.append(value[index])
            index += 1
    return "".join(out)
