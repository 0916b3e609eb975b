"""Reading a source database: its tables, their schemas as the warehouse will hold them, and
their rows streamed into a warehouse COPY.

PostgreSQL sources: ``COPY (SELECT col::target_type, ...) TO STDOUT (FORMAT binary)`` piped
chunk by chunk into ``COPY ... FROM STDIN (FORMAT binary)``: no file, no Python object per value,
and the cast on the source makes the binary rows exactly the warehouse's types (a parent an older
version widened, a type mapped under [types]).

MySQL/MariaDB sources: ``SHOW CREATE TABLE`` read by the dump path's DDL reader
(``dumps.mysql_schema``) with the ``mysql`` dialect's type map, so a fetched table has exactly
the types its ``mysqldump --tab`` dump would have (unsigned, tinyint(1), enum/set, BIT, zero
dates as NULL). Rows come through an unbuffered cursor (pymysql ``SSCursor``: one row in memory at
a time, not the result set) whose SELECT makes MySQL write each row's COPY text line
(``MySQLSource._field``): the client parses one value per row, Python joins lines.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import psycopg
from psycopg import sql

from ingest_platform.dumps.dialect import load_dialect, parse_type_name
from ingest_platform.dumps.mysql_schema import read_mysql_tables
from ingest_platform.dumps.schema import Column, TableSchema
from ingest_platform.errors import ConfigError, SchemaError, ServiceUnavailableError, first_line
from ingest_platform.fetch.config import SourceConfig
from ingest_platform.fetch.key_arrays import int8_array
from ingest_platform.fetch.key_buckets import Bucketing
from ingest_platform.postgres import catalog
from ingest_platform.postgres.connection import connect, server_address

COPY_ROWS_PER_WRITE = 2000  # MySQL rows joined into one COPY write


class SourceGone(ServiceUnavailableError):
    """The source dropped the connection (or stopped answering) mid-pull: worth a retry."""


class TableVanished(SchemaError):
    pass


# A position in (cursor, key...) order: rows strictly after it are pulled.
Position = tuple[Any, ...]


def open_source(config: SourceConfig, environ=None) -> PostgresSource | MySQLSource:
    import os

    dsn = config.dsn(environ if environ is not None else os.environ)
    return PostgresSource(config, dsn) if config.kind == "postgres" else MySQLSource(config, dsn)


def _select_tables(config: SourceConfig, present: Sequence[str]) -> list[str]:
    if config.pattern is not None:
        found = sorted(t for t in present if fnmatch.fnmatchcase(t, config.pattern))
        if not found:
            raise SchemaError(
                f"{config.file} [sources.{config.name}]: no table of the source matches pattern "
                f'"{config.pattern}"; fix the pattern.'
            )
        return found
    missing = [t for t in config.tables if t not in present]
    if missing:
        raise TableVanished(
            f"Source {config.name}: table {missing[0]} does not exist (any more) in the source"
            f"{'' if config.kind == 'mysql' else f' schema {config.schema}'}; nothing was pulled. "
            f"Remove it from tables in {config.file}, or restore it in the source."
        )
    return list(config.tables)


def _after(cursor: str, key: Sequence[str]) -> list[str]:
    return [cursor, *key]


# ----------------------------------------------------------------------------- PostgreSQL


class PostgresSource:
    def __init__(self, config: SourceConfig, dsn: str):
        self.config, self.dsn = config, dsn
        self.address = server_address(dsn)
        self.label = f"source {config.name} (PostgreSQL at {self.address})"
        try:
            self.conn = connect(dsn)
        except ServiceUnavailableError as error:
            raise ServiceUnavailableError(f"Source {config.name}: {error}") from None
        # Every transaction of this connection reads one snapshot (REPEATABLE READ) and writes
        # nothing; a pull's snapshot begins with its first statement after a rollback.
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True

    def close(self) -> None:
        self.conn.close()

    def begin_snapshot(self) -> None:
        """A new REPEATABLE READ, READ ONLY transaction: every table read sees one snapshot."""
        self._guard(self.conn.rollback)

    def end(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()

    def export_snapshot(self) -> str:
        """The id of this transaction's snapshot, for ``sharing`` (valid while it is open)."""
        return self._guard(
            lambda: self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        )

    def sharing(self, snapshot: str) -> PostgresSource:
        """Another connection to the source whose transaction reads the exported `snapshot`."""
        other = PostgresSource(self.config, self.dsn)
        other._guard(
            lambda: other.conn.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
            )
        )
        return other

    def table_bytes(self, tables: Sequence[str]) -> dict[str, int]:
        rows = self._guard(
            lambda: self.conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s)",
                (self.config.schema, list(tables)),
            ).fetchall()
        )
        return {name: int(size) for name, size in rows}

    def version(self, query: str) -> str:
        return str(self._guard(lambda: self.conn.execute(query).fetchone() or [None])[0])

    def list_tables(self) -> list[str]:
        rows = self._guard(
            lambda: self.conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (self.config.schema,),
            ).fetchall()
        )
        return _select_tables(self.config, [r[0] for r in rows])

    def table_schema(self, table: str) -> TableSchema:
        oid = self._guard(lambda: catalog.relation_oid(self.conn, self.config.schema, table))
        if oid is None:
            raise TableVanished(
                f"Source {self.config.name}: table {self.config.schema}.{table} vanished from "
                "the source; nothing was pulled. Remove it from the config or restore it."
            )
        columns = [
            Column(c.name, c.type, self.config.types.get(c.type.lower(), c.type), not c.not_null)
            for c in catalog.columns(self.conn, oid)
        ]
        return TableSchema(table, columns, list(catalog.primary_key(self.conn, oid)))

    def _select(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        after: tuple[Sequence[str], Position] | None,
        limit: int | None,
    ) -> sql.Composable:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns
            ),
            catalog.qualified(self.config.schema, table),
        )
        if after is not None:
            names, position = after
            ids = sql.SQL(", ").join(map(sql.Identifier, names))
            if position is not None:
                # COPY takes no parameters: the position goes as literals (sql.Literal quotes).
                query += sql.SQL(" WHERE ({}) > ({})").format(
                    ids, sql.SQL(", ").join(map(sql.Literal, position))
                )
            query += sql.SQL(" ORDER BY {}").format(ids)
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
        return query

    def copy_into(
        self,
        cur: psycopg.Cursor,
        target: sql.Composable,
        table: str,
        columns: Sequence[tuple[str, str]],
        after: tuple[Sequence[str], Position] | None = None,
        limit: int | None = None,
    ) -> int:
        """Stream the rows (binary COPY both ways) into `target`; the caller's transaction."""
        out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(
            self._select(table, columns, after, limit)
        )
        into = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            target, sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
        )

        def run() -> None:
            with self.conn.cursor() as source, source.copy(out) as reader, cur.copy(into) as writer:
                for data in reader:
                    writer.write(data)

        self._guard(run, table)
        return cur.rowcount

    def integer_keys(self, table: str, key: str, most: int) -> np.ndarray | None:
        """Every value of an integer key, in this connection's snapshot, as ONE binary array
        (``array_agg``, no grouping; a COPY of them is a message per row, 0.7 s per 1M keys
        through psycopg); None for more than `most` rows (the planner's estimate)."""
        relation = catalog.qualified(self.config.schema, table)

        def read() -> np.ndarray | None:
            # As the planner estimates: the rows per page of the last ANALYZE times the pages
            # now; never analyzed: at most a row per 24 bytes (a tuple header).
            (estimate,) = self.conn.execute(
                "SELECT CASE WHEN reltuples >= 0 AND relpages > 0 THEN reltuples / relpages"
                " * pg_relation_size(oid) / current_setting('block_size')::int"
                " ELSE pg_relation_size(oid) / 24 END FROM pg_class WHERE oid = %s::regclass",
                (relation.as_string(self.conn),),
            ).fetchone() or (most + 1,)
            if estimate > most:
                return None
            row = self.conn.execute(
                sql.SQL(
                    "SELECT array_send(array_agg({k}::bigint)) FROM {t} WHERE {k} IS NOT NULL"
                ).format(k=sql.Identifier(key), t=relation),
                binary=True,
            ).fetchone()
            return int8_array(row[0] if row else None)

        return self._guard(read, table)

    def count(self, table: str) -> int:
        return self._guard(
            lambda: self.conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    catalog.qualified(self.config.schema, table)
                )
            ).fetchone()[0],  # type: ignore[index]
            table,
        )

    def max_cursor(self, table: str, cursor: str) -> Any:
        return self._guard(
            lambda: self.conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier(cursor), catalog.qualified(self.config.schema, table)
                )
            ).fetchone()[0],  # type: ignore[index]
            table,
        )

    def _guard(self, action: Callable[[], Any], table: str | None = None) -> Any:
        try:
            return action()
        except psycopg.errors.UndefinedTable:
            raise TableVanished(
                f"Source {self.config.name}: table {self.config.schema}.{table} vanished from the "
                "source during the pull; nothing was pulled. Remove it from the config or restore "
                "it."
            ) from None
        except psycopg.errors.UndefinedColumn as error:
            raise SchemaError(
                f"Source {self.config.name}, table {table}: {first_line(error)}; fix the "
                f"incremental cursor or key in {self.config.file}."
            ) from None
        except psycopg.OperationalError as error:
            if not self.conn.broken:  # the warehouse's side of a pipe broke, not the source
                raise
            raise SourceGone(
                f"Source {self.config.name}: PostgreSQL at {self.address} broke off "
                f"({first_line(error)})"
            ) from None


# ----------------------------------------------------------------------------- MySQL / MariaDB


def _mysql_params(dsn: str, name: str) -> dict:
    try:
        url = urlsplit(dsn)
        port = url.port or 3306
    except ValueError:
        url, port = None, 0
    if url is None or url.scheme not in ("mysql", "mariadb") or not url.hostname:
        raise ConfigError(
            f"Source {name}: the URL is not mysql://user[:password]@host[:port]/database (it is "
            "not shown: it may hold a password)."
        )
    database = unquote(url.path.lstrip("/"))
    if not database:
        raise ConfigError(f"Source {name}: the URL names no database (mysql://user@host/DB).")
    return {
        "host": url.hostname,
        "port": port,
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
        "database": database,
    }


# COPY text's escapes, as MySQL string literals (backslash escapes on): \\ -> \\\\, tab -> \\t ...
_COPY_ESCAPES = (("\\\\", "\\\\\\\\"), ("\\t", "\\\\t"), ("\\n", "\\\\n"), ("\\r", "\\\\r"))


def _after_position(columns: Sequence[str], position: Position) -> tuple[str, list[Any]]:
    """``(c, k) > (v, w)`` as ``c >= v AND (c > v OR (c = v AND k > w))``: MariaDB reads a range
    of the (cursor, key) index for this form, but scans the whole table for the row comparison."""
    params: list[Any] = [position[0]]
    alternatives = []
    for i in range(len(columns)):
        equal = [f"{columns[j]} = %s" for j in range(i)]
        alternatives.append("(" + " AND ".join([*equal, f"{columns[i]} > %s"]) + ")")
        params_i = [*position[:i], position[i]]
        params.extend(params_i)
    return f"{columns[0]} >= %s AND ({' OR '.join(alternatives)})", params


def _quote_mysql(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class MySQLSource:
    def __init__(self, config: SourceConfig, dsn: str):
        import pymysql
        import pymysql.converters
        import pymysql.cursors

        self.config = config
        params = _mysql_params(dsn, config.name)
        self.database = params["database"]
        self.address = f"{params['host']}:{params['port']}"
        self.label = f"source {config.name} (MySQL at {self.address})"
        self.dialect = load_dialect("mysql")
        if config.types:
            self.dialect.types.update(config.types)
        self._pymysql = pymysql
        try:
            # Encoders only, no decoders: text columns arrive as str exactly as MySQL prints
            # them (what COPY text reads), binary ones as bytes.
            self.conn = pymysql.connect(
                **params,
                charset="utf8mb4",
                conv=dict(pymysql.converters.encoders),
                connect_timeout=5,
                read_timeout=600,
                cursorclass=pymysql.cursors.SSCursor,
                autocommit=True,
            )
        except pymysql.err.MySQLError as error:
            raise ServiceUnavailableError(
                f"Source {config.name}: MySQL at {self.address} {self._refusal(error)}."
            ) from None
        self._run("SET SESSION time_zone = '+00:00'")
        # The COPY text expressions below are written with backslash escapes.
        self._run("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")

    def _refusal(self, error: Exception) -> str:
        code, message = (error.args + ("",))[:2] if error.args else (0, str(error))
        if code in (1044, 1045, 1049, 1698):
            return f"refused the connection: {message}"
        return f"does not answer: {message or type(error).__name__}"

    def close(self) -> None:
        try:
            self.conn.close()
        except self._pymysql.err.Error:
            pass

    def _run(self, statement: str, params: Any = None, table: str | None = None) -> list[tuple]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall())
        except self._pymysql.err.MySQLError as error:
            raise self._translate(error, table) from None

    def _translate(self, error: Exception, table: str | None) -> Exception:
        code = error.args[0] if error.args else 0
        if code == 1146:
            return TableVanished(
                f"Source {self.config.name}: table {table} vanished from the source database "
                f"{self.database}; nothing was pulled. Remove it from the config or restore it."
            )
        if code == 1054:
            return SchemaError(
                f"Source {self.config.name}, table {table}: {error.args[1]}; fix the incremental "
                f"cursor or key in {self.config.file}."
            )
        err = self._pymysql.err
        if isinstance(error, (err.OperationalError, err.InterfaceError)):
            return SourceGone(
                f"Source {self.config.name}: MySQL at {self.address} broke off "
                f"({error.args[-1] if error.args else type(error).__name__})"
            )
        return SchemaError(f"Source {self.config.name}, table {table}: {error.args[-1]}")

    def begin_snapshot(self) -> None:
        self._run("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self._run("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")

    def end(self) -> None:
        try:
            self.conn.rollback()
        except self._pymysql.err.Error:
            pass

    def version(self, query: str) -> str:
        rows = self._run(query)
        value = rows[0][0] if rows else None
        return value.decode() if isinstance(value, bytes) else str(value)

    def list_tables(self) -> list[str]:
        rows = self._run("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
        return _select_tables(self.config, [_text(r[0]) for r in rows])

    def table_schema(self, table: str) -> TableSchema:
        ddl = _text(self._run(f"SHOW CREATE TABLE {_quote_mysql(table)}", table=table)[0][1])
        try:
            found = read_mysql_tables(ddl, self.dialect, f"{table} (SHOW CREATE TABLE)")
        except SchemaError as error:
            raise SchemaError(
                f"Source {self.config.name}, table {table}: {error}".replace(
                    "add it to [types] in its dialect config",
                    f"add it under [sources.{self.config.name}.types] in {self.config.file}",
                ).replace(
                    "to [types] in its dialect config",
                    f"under [sources.{self.config.name}.types] in {self.config.file} "
                    '(e.g. mytype = "text")',
                )
            ) from None
        schema = next(iter(found.values()))
        schema.name = table
        return schema

    def _field(self, name: str, target: str, source: Column) -> str:
        """The SQL expression of one column's COPY text field (\\N for NULL): MySQL writes each
        row's COPY line itself, so the client parses one value per row and Python only joins
        lines (measured: about twice as fast as converting ten values per row in Python)."""
        col = _quote_mysql(name)
        base = parse_type_name(target)[0]
        source_base = parse_type_name(source.source_type)[0]
        if source_base == "bit":
            # CASE, not IF(col = 0, ...): IF takes a NULL condition as false, and NULL became 't'
            # (the bucket hashes of the checks found it).
            text = (
                f"CASE WHEN {col} = 0 THEN 'f' WHEN {col} IS NOT NULL THEN 't' END"
                if base == "boolean"
                else f"CAST({col} AS UNSIGNED)"
            )
        elif base == "bytea":
            text = f"CONCAT('\\\\\\\\x', HEX({col}))"
        elif base in ("date", "timestamp", "timestamptz") or base.startswith("timestamp"):
            # MySQL's zero dates ('0000-00-00', a zero month or day) are NULL, as for dumps.
            text = (
                f"IF(SUBSTR({col}, 1, 4) = '0000' OR SUBSTR({col}, 6, 2) = '00'"
                f" OR SUBSTR({col}, 9, 2) = '00', NULL, {col})"
            )
        elif base in ("smallint", "integer", "bigint", "numeric", "real", "double precision"):
            text = col  # digits as MySQL prints them
        else:
            text = col
            for char, escaped in (
                ("\\\\", "\\\\\\\\"),
                ("\\t", "\\\\t"),
                ("\\n", "\\\\n"),
                ("\\r", "\\\\r"),
            ):
                text = f"REPLACE({text}, '{char}', '{escaped}')"
        return f"IFNULL({text}, '\\\\N')"

    def copy_into(
        self,
        cur: psycopg.Cursor,
        target: sql.Composable,
        table: str,
        columns: Sequence[tuple[str, str]],
        after: tuple[Sequence[str], Position] | None = None,
        limit: int | None = None,
        schema: TableSchema | None = None,
    ) -> int:
        source = {c.name: c for c in (schema or self.table_schema(table)).columns}
        line = "CONCAT_WS('\\t', {})".format(
            ", ".join(self._field(n, t, source[n]) for n, t in columns)
        )
        statement = f"SELECT {line} FROM {_quote_mysql(table)}"
        params: list[Any] = []
        if after is not None:
            names, position = after
            ids = ", ".join(map(_quote_mysql, names))
            if position is not None:
                where, params = _after_position([_quote_mysql(n) for n in names], position)
                statement += f" WHERE {where}"
            statement += f" ORDER BY {ids}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        into = sql.SQL("COPY {} ({}) FROM STDIN").format(
            target, sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
        )
        rows = 0
        try:
            with self.conn.cursor() as source_cur, cur.copy(into) as writer:
                source_cur.execute(statement, params or None)
                while True:
                    batch = source_cur.fetchmany(COPY_ROWS_PER_WRITE)
                    if not batch:
                        break
                    # A line with a binary column is bytes, else str (utf8mb4 text).
                    writer.write(
                        b"\n".join(
                            r[0]
                            if isinstance(r[0], bytes)
                            else r[0].encode("utf-8", "surrogatepass")
                            for r in batch
                        )
                        + b"\n"
                    )
                    rows += len(batch)
        except self._pymysql.err.MySQLError as error:
            raise self._translate(error, table) from None
        return rows

    def count(self, table: str) -> int:
        return int(self._run(f"SELECT count(*) FROM {_quote_mysql(table)}", table=table)[0][0])

    def integer_keys(
        self, table: str, key: str, most: int, batch: int | None = None
    ) -> np.ndarray | None:
        """Every value of an integer key, in this connection's snapshot, joined by MySQL into
        one text (GROUP_CONCAT: no grouping, one row back; pymysql would convert a row per key,
        3.7 s per 1M); None for more than `most` rows (the table's estimate). A text longer than
        the server's max_allowed_packet comes back NULL or cut short: then in batches in key
        order that fit it (`batch` keys)."""
        estimate, packet = self._run(
            "SELECT (SELECT table_rows FROM information_schema.tables WHERE table_schema ="
            " DATABASE() AND table_name = %s), @@max_allowed_packet",
            (table,),
            table,
        )[0]
        if estimate is None or int(estimate) > most:
            return None
        self._run("SET SESSION group_concat_max_len = %s", (int(packet),))
        k, t = _quote_mysql(key), _quote_mysql(table)
        batch = batch or int(packet) // 21  # keys of 20 characters and a comma
        joined = "SELECT COUNT({0}), GROUP_CONCAT({0}) FROM {1}"
        if int(estimate) < batch:
            whole = self._joined_keys(joined.format(k, t), table)
            if whole is not None:
                return whole
        parts: list[np.ndarray] = []
        after = ""
        while True:
            ordered = (
                f"(SELECT {k} FROM {t} WHERE {k} IS NOT NULL{after} ORDER BY {k} LIMIT {batch})"
            )
            keys = self._joined_keys(joined.format(k, f"{ordered} AS b"), table)
            if keys is None:
                return None
            parts.append(keys)
            if len(keys) < batch:
                return np.concatenate(parts)
            after = f" AND {k} > {int(keys.max())}"

    def _joined_keys(self, statement: str, table: str) -> np.ndarray | None:
        """The keys of a COUNT, GROUP_CONCAT `statement`; None if MySQL cut the text."""
        n, text = self._run(statement, table=table)[0]
        keys = (
            np.fromstring(_text(text), dtype=np.int64, sep=",") if text else np.zeros(0, np.int64)
        )
        return keys if len(keys) == int(n) else None

    def _key_parts(self, key: Sequence[str], bucketing: Bucketing) -> tuple[str, str, str]:
        """(bucket, sum, key value) expressions, equal to ``fetch.key_buckets.pg_parts``'s in
        PostgreSQL: ``key DIV width`` and the key for an integer key; else the first hex digits
        of md5 of the key's text and the next 28 bits."""
        if bucketing.integer:
            k = _quote_mysql(key[0])
            return f"{k} DIV {int(bucketing.width)}", k, k
        text = f"CONCAT_WS('|', {', '.join(map(_quote_mysql, key))})"
        digits = int(bucketing.digits)
        return (
            f"LEFT(MD5({text}), {digits})",
            f"CONV(SUBSTR(MD5({text}), {digits + 1}, 7), 16, 10)",
            text,
        )

    def key_buckets(
        self, table: str, key: Sequence[str], bucketing: Bucketing
    ) -> dict[Any, tuple[int, int]]:
        """Per key bucket: count and sum (see ``fetch.deletes``)."""
        bucket, summed, _ = self._key_parts(key, bucketing)
        rows = self._run(
            # ORDER BY NULL: no sort of the groups (MariaDB sorts GROUP BY results otherwise).
            f"SELECT {bucket}, count(*), SUM({summed}) FROM {_quote_mysql(table)} GROUP BY 1"
            " ORDER BY NULL",
            table=table,
        )
        read = int if bucketing.integer else _text
        return {read(_text(b)): (int(n), int(_text(total))) for b, n, total in rows}

    def keys_in(
        self, table: str, key: Sequence[str], bucketing: Bucketing, buckets: Sequence[Any]
    ) -> set[Any]:
        bucket, _, value = self._key_parts(key, bucketing)
        if bucketing.integer:  # key ranges: the primary key's index finds them
            where = " OR ".join(
                f"{value} BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in bucketing.ranges(buckets)
            )
            rows = self._run(
                f"SELECT {value} FROM {_quote_mysql(table)} WHERE {where}", table=table
            )
            return {int(_text(r[0])) for r in rows}
        rows = self._run(
            f"SELECT {value} FROM {_quote_mysql(table)} WHERE {bucket} IN"
            f" ({', '.join(['%s'] * len(buckets))})",
            list(buckets),
            table,
        )
        return {_text(r[0]) for r in rows}

    def max_cursor(self, table: str, cursor: str) -> Any:
        return self._run(
            f"SELECT max({_quote_mysql(cursor)}) FROM {_quote_mysql(table)}", table=table
        )[0][0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
