"""Connections to PostgreSQL: DSN handling and a reachability check that answers within seconds.

Passwords never leave a DSN for text a person or another process can see (messages, logs, run
metadata, printed `export` lines, process arguments). Every DSN that goes into text goes through
`server_address` (host:port) or `without_password`, and every DSN is parsed by `parse_dsn`,
whose errors quote none of it: libpq's own parse errors quote the text around the mistake, which
can be the password.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest_platform.errors import ConfigError, ServiceUnavailableError

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


# libpq options whose values are secrets.
SECRET_OPTIONS = (
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
)
_QUOTED = re.compile(r'"([^"]*)"')


def parse_dsn(dsn: str) -> dict[str, str]:
    """The options of a libpq DSN, `postgresql://` or SQLAlchemy URL; a ConfigError that quotes
    no part of it when it does not parse."""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(libpq_dsn(dsn)).items()}
    except psycopg.Error as exc:
        # libpq quotes the text at fault (`missing "=" after "..."`): keep option names and
        # punctuation only.
        keep = {o.keyword.decode() for o in pq.Conninfo.get_defaults()} | set("=[]")
        reason = _QUOTED.sub(
            lambda m: m[0] if m[1] in keep else '"..."', str(exc).strip() or "unreadable"
        )
        raise ConfigError(
            f"A PostgreSQL DSN (INGEST_PG_DSN, DAGSTER_PG_URL, INGEST_CDC_SOURCE_DSN or --dsn) "
            f"does not parse: {reason}. Write it as 'host=... port=... user=... dbname=...' or "
            "postgresql://user@host:port/dbname (it is not shown: it may hold a password)."
        ) from None
    if "@" in params.get("host", ""):  # libpq splits user:password@host at the first "@"
        raise ConfigError(
            "A PostgreSQL URL (INGEST_PG_DSN, DAGSTER_PG_URL, INGEST_CDC_SOURCE_DSN or --dsn) has "
            "an '@' in its user name or password: write it as %40."
        )
    return params


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials as `dsn`, another database."""
    return make_conninfo("", **{**parse_dsn(dsn), "dbname": database})


def server_address(dsn: str) -> str:
    """`host:port` (or the socket directory) of a DSN, for messages. Never the password."""
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    address = f"{host}:{params.get('port') or 5432}"
    if any(secret in address for secret in _secrets(params)):  # a DSN written wrong
        return "the server (its address is not shown: it holds the password)"
    return address


def _secrets(params: dict[str, str]) -> list[str]:
    return [value for key, value in params.items() if key in SECRET_OPTIONS and value]


def without_password(dsn: str) -> str:
    """`dsn` in the same form (key=value or URL with its scheme) without the password or any
    other secret option, for text people see. libpq finds the password in PGPASSWORD,
    PGPASSFILE or ~/.pgpass instead."""
    params = {k: v for k, v in parse_dsn(dsn).items() if k not in SECRET_OPTIONS}
    scheme, sep, _ = dsn.partition("://")
    return _url(params, scheme) if sep else make_conninfo("", **params)


def to_url(dsn: str) -> str:
    """A SQLAlchemy URL for dagster-postgres, which needs the psycopg2 driver (SQLAlchemy 2.1
    otherwise picks psycopg 3, on which Dagster's `NOTIFY` statements fail). It keeps the
    password: print `without_password(url)`."""
    return _url(parse_dsn(dsn), "postgresql+psycopg2")


def _url(params: dict[str, str], scheme: str) -> str:
    params = dict(params)
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
    return f"{scheme}://{userinfo}{netloc}/{database}{query}"


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """Open a connection, or raise ServiceUnavailableError naming the server within seconds."""
    secrets = _secrets(parse_dsn(dsn))
    try:
        return psycopg.connect(libpq_dsn(dsn), connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if any(secret in reason for secret in secrets):  # libpq quoting an option's value
            reason = "libpq's message is not shown: it quotes the password"
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
