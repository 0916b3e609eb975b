"""Read ``CREATE TABLE`` statements written by mysqldump (``<table>.sql`` from ``--tab``).

Decision: with the dialect's ``zero_dates = "null"``, DATE/DATETIME/TIMESTAMP columns are made
nullable, because their zero dates ('0000-00-00 00:00:00', even as a NOT NULL default) arrive as
NULL in PostgreSQL.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from ingest_platform.dumps.dialect import Dialect, parse_type_name
from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import SchemaError

DATE_TYPES = {"date", "datetime", "timestamp"}


def read_mysql_tables(
    text: str, dialect: Dialect, file: str = "table.sql"
) -> dict[str, TableSchema]:
    try:
        statements = sqlglot.parse(text, read="mysql")
    except sqlglot.errors.SqlglotError as error:
        raise SchemaError(f"{file}: cannot parse MySQL DDL: {error}") from error
    tables = {}
    for statement in statements:
        if (
            isinstance(statement, exp.Create)
            and statement.kind == "TABLE"
            and isinstance(statement.this, exp.Schema)
        ):
            schema = _table_schema(statement, dialect, file)
            tables[schema.name] = schema
    return tables


def _table_schema(create: exp.Create, dialect: Dialect, file: str) -> TableSchema:
    columns, primary_key = [], []
    for element in create.this.expressions:
        if isinstance(element, exp.ColumnDef):
            kinds = [c.args.get("kind") for c in element.constraints]
            data_type = element.args["kind"]
            source_type = data_type.sql("mysql").lower()
            try:
                pg_type = dialect.map_type(source_type)
            except SchemaError as error:
                raise SchemaError(f"{file}: column {element.name}: {error}") from error
            nullable = not any(
                isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")
                for k in kinds
            )
            if (
                dialect.file_format.zero_dates == "null"
                and parse_type_name(source_type)[0] in DATE_TYPES
            ):
                nullable = True
            columns.append(Column(element.name, source_type, pg_type, nullable))
            if any(isinstance(k, exp.PrimaryKeyColumnConstraint) for k in kinds):
                primary_key.append(element.name)
        elif isinstance(element, exp.PrimaryKey):
            primary_key = [e.name for e in element.expressions]
    table = create.this.this
    return TableSchema(table.name, columns, primary_key, source_schema=table.db or None).validate()
