"""Connections to PostgreSQL: DSN handling and a reachability check that answers within seconds."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest_platform.errors import ServiceUnavailableError

# Seconds to wait for a server before saying it does not answer (Dagster's own retry
# loop would take minutes to say the same).
CONNECT_TIMEOUT = 5


def one_row(conn: psycopg.Connection, query: Any, params: Any = None) -> tuple[Any, ...]:
    """The one row a query always returns (an aggregate, SHOW, INSERT ... RETURNING ...)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise AssertionError(f"expected a row from {query!r}")
    return row


def scalar(conn: psycopg.Connection, query: Any, params: Any = None) -> Any:
    """The first value of the one row a query returns (count(*), EXISTS, SHOW ...)."""
    return one_row(conn, query, params)[0]


def libpq_dsn(dsn: str) -> str:
    """`dsn` as libpq takes it: a SQLAlchemy URL's `+driver` removed."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else dsn


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials as `dsn`, another database."""
    return make_conninfo(dsn, dbname=database)


def server_address(dsn: str) -> str:
    """`host:port` (or the socket directory) of a DSN, for messages. Never the password."""
    params = conninfo_to_dict(libpq_dsn(dsn))
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}"


def to_url(dsn: str) -> str:
    """A SQLAlchemy URL for dagster-postgres, which needs the psycopg2 driver (SQLAlchemy 2.1
    otherwise picks psycopg 3, on which Dagster's `NOTIFY` statements fail)."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    database = quote(params.pop("dbname", ""), safe="")
    userinfo = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = "" if host.startswith("/") else host + (f":{port}" if port else "")
    if host.startswith("/"):  # a Unix socket directory travels as a query parameter
        params["host"] = host
        if port:
            params["port"] = port
    query = f"?{urlencode(params, quote_via=quote)}" if params else ""
    return f"postgresql+psycopg2://{userinfo}{netloc}/{database}{query}"


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """Open a connection, or raise ServiceUnavailableError naming the server within seconds."""
    try:
        return psycopg.connect(libpq_dsn(dsn), connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if (
            "FATAL" in reason
        ):  # the server answered and refused: a missing database, a role, a password
            raise ServiceUnavailableError(
                f"PostgreSQL at {server_address(dsn)} refused the connection: "
                f"{reason.split('FATAL:', 1)[1].strip()}."
            ) from None
        raise ServiceUnavailableError(
            f"PostgreSQL at {server_address(dsn)} does not answer: {reason}. "
            "Check that the server runs and that the DSN (INGEST_PG_DSN / DAGSTER_PG_URL) is right."
        ) from None


def ensure_database(dsn: str, database: str) -> None:
    """Create `database` on the server of `dsn` unless it exists."""
    with connect(dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
