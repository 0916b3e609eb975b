"""What PostgreSQL's system catalog says about a table: the one module that reads it.

Relation lookup, columns with printed and parsed types, the ordered primary key, qualified names
and fitting names into PostgreSQL's 63-byte identifiers. Every package asks here. The functions
run in the caller's transaction and never commit. Names are looked up as values
(``nspname = %s``), so quotes and spaces in them need no care; in SQL text they always go through
``qualified`` (``psycopg.sql.Identifier``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest_platform.postgres.connection import scalar
from ingest_platform.postgres.type_widening import PgType, parse_pg_type

# PostgreSQL truncates longer identifiers (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


def qualified(schema: str, name: str) -> sql.Composed:
    """``"schema"."name"``, both quoted as identifiers."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def relation_oid(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    """The oid of a table (plain or partitioned), or None if there is none of that name."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    return row[0] if row else None


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return relation_oid(conn, schema, name) is not None


@dataclass(frozen=True)
class Column:
    """One column as the catalog has it."""

    name: str
    type: str  # as format_type prints it: "character varying(50)", "timestamp(3) without time zone"
    not_null: bool = False

    @property
    def parsed(self) -> PgType:
        """The type in canonical form (``type_widening``). A spelling outside the accepted ones
        (a domain, an enum, ``"char"``) stays verbatim: PostgreSQL's own printing quotes it
        safely, and it only equals itself."""
        return parsed_type(self.type)


def parsed_type(printed: str) -> PgType:
    """A type as format_type printed it, parsed; verbatim where ``parse_pg_type`` declines."""
    try:
        return parse_pg_type(printed)
    except ValueError:
        return PgType(printed)


def columns(conn: psycopg.Connection, oid: int) -> list[Column]:
    """The table's columns in column order (dropped columns left out)."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    ).fetchall()
    return [Column(_text(name), _text(printed), not_null) for name, printed, not_null in rows]


def columns_of(conn: psycopg.Connection, schema: str, name: str) -> dict[str, Column]:
    """The columns of ``schema.name`` by name, in column order; {} if there is no such table."""
    oid = relation_oid(conn, schema, name)
    return {} if oid is None else {c.name: c for c in columns(conn, oid)}


def primary_key(conn: psycopg.Connection, oid: int) -> tuple[str, ...]:
    """The primary key's columns in key order (not column order); () without one."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (oid,),
    ).fetchall()
    return tuple(_text(r[0]) for r in rows)


def inherits_from(conn: psycopg.Connection, child_oid: int, parent_oid: int) -> bool:
    return scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %s AND inhparent = %s)",
        (child_oid, parent_oid),
    )


def parent_of(conn: psycopg.Connection, oid: int) -> str | None:
    """The name of the table this one INHERITS (the first, if several), or None."""
    return scalar(
        conn,
        "SELECT (SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent"
        " WHERE i.inhrelid = %s ORDER BY i.inhseqno LIMIT 1)",
        (oid,),
    )


def has_equality_check(conn: psycopg.Connection, oid: int, column: str, value: str) -> bool:
    """Whether the table has a validated CHECK (column = 'value'), the kind of constraint that
    constraint exclusion uses to skip it. Compared as PostgreSQL itself prints the constraint."""
    return scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = %s AND contype = 'c'"
        " AND convalidated AND pg_get_constraintdef(oid)"
        # As ruleutils prints a text constant: quotes doubled, backslashes kept (not %L's E'..')
        "   = format('CHECK ((%%I = ''%%s''::text))', %s::text, replace(%s::text, '''', '''''')))",
        (oid, column, value),
    )


def fit_identifier(head: str, tail: str = "") -> str:
    """``head + tail``, or if longer than 63 bytes: head shortened + a hash of the whole + tail,
    so that distinct long names stay distinct and the tail (a version, a suffix) stays readable."""
    name = head + tail
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len((digest + tail).encode())
    if room >= 8:
        return _truncate(head, room) + digest + tail
    return _truncate(name, MAX_IDENTIFIER_BYTES - len(digest)) + digest


def default_constraint_name(table: str, label: str) -> str:
    """The name PostgreSQL gives an unnamed constraint of `table` (``makeObjectName``): the table
    name clipped so that ``_label`` still fits in 63 bytes. Not ``fit_identifier``: a table
    rebuilt under another name must end up with the name a plain CREATE TABLE gives."""
    return _truncate(table, MAX_IDENTIFIER_BYTES - len(label.encode()) - 1) + "_" + label


def _truncate(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def _text(value: str | bytes) -> str:
    """Catalog names arrive as bytes from a SQL_ASCII database."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
