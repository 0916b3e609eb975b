"""The API's own tables in the schema of the config (default ``_ingest_api``).

- ``users``: name, argon2 hash, the tables (URL names, or ``*``) the user may write.
- ``requests``: one row per batch (request id, user, table, records received/accepted/rejected,
  atomic, time): the denominator of the reject share.
- ``rejects``: one row per rejected record (request id, user, table, record index, the record as
  sent, field, constraint, reason, time).
- ``login_failures``: failed logins (user name, client address, time) of the last window
  (``login_limit``).

Created when missing (``ensure_tables``); functions run in the caller's transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ingest_platform.postgres.catalog import qualified

DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {users} (
    name text PRIMARY KEY,
    password_hash text NOT NULL,
    tables text[] NOT NULL DEFAULT '{{}}',
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {requests} (
    request_id uuid PRIMARY KEY,
    username text NOT NULL,
    table_name text NOT NULL,
    received int NOT NULL,
    accepted int NOT NULL,
    rejected int NOT NULL,
    atomic boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS requests_at ON {requests} (at);
CREATE TABLE IF NOT EXISTS {rejects} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id uuid NOT NULL,
    username text NOT NULL,
    table_name text NOT NULL,
    record_index int NOT NULL,
    record jsonb,
    field text,
    constraint_name text,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rejects_at ON {rejects} (at);
CREATE TABLE IF NOT EXISTS {login_failures} (
    username text NOT NULL,
    address text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS login_failures_key ON {login_failures} (username, address, at);
CREATE INDEX IF NOT EXISTS login_failures_at ON {login_failures} (at);
"""


@dataclass(frozen=True)
class Reject:
    index: int
    field: str | None
    constraint: str | None
    reason: str


def ensure_tables(conn: psycopg.Connection, schema: str) -> None:
    # One server-wide advisory lock: two API processes starting at once would race on
    # CREATE ... IF NOT EXISTS (a unique violation in pg_type).
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('ingest_platform.api.store'))")
    conn.execute(
        sql.SQL(DDL).format(
            schema=sql.Identifier(schema),
            users=qualified(schema, "users"),
            requests=qualified(schema, "requests"),
            rejects=qualified(schema, "rejects"),
            login_failures=qualified(schema, "login_failures"),
        )
    )


def add_user(conn: psycopg.Connection, schema: str, name: str, hash_: str, tables: list[str]):
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (name, password_hash, tables) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,"
            " tables = excluded.tables"
        ).format(qualified(schema, "users")),
        (name, hash_, tables),
    )


def grant(conn: psycopg.Connection, schema: str, name: str, tables: list[str]) -> bool:
    """Add `tables` to what `name` may write (its password unchanged); False if no such user."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET tables = ARRAY(SELECT DISTINCT unnest(tables || %s::text[]) ORDER BY 1)"
            " WHERE name = %s"
        ).format(qualified(schema, "users")),
        (tables, name),
    )
    return cur.rowcount > 0


def remove_user(conn: psycopg.Connection, schema: str, name: str) -> bool:
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE name = %s").format(qualified(schema, "users")), (name,)
    )
    return cur.rowcount > 0


def list_users(conn: psycopg.Connection, schema: str) -> list[tuple[str, list[str], datetime]]:
    return conn.execute(
        sql.SQL("SELECT name, tables, created FROM {} ORDER BY name").format(
            qualified(schema, "users")
        )
    ).fetchall()


def password_hash(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    row = conn.execute(
        sql.SQL("SELECT password_hash FROM {} WHERE name = %s").format(qualified(schema, "users")),
        (name,),
    ).fetchone()
    return row[0] if row else None


def user_tables(conn: psycopg.Connection, schema: str, name: str) -> list[str] | None:
    """The tables `name` may write (``*``: all), or None if there is no such user."""
    row = conn.execute(
        sql.SQL("SELECT tables FROM {} WHERE name = %s").format(qualified(schema, "users")),
        (name,),
    ).fetchone()
    return row[0] if row else None


def log_request(
    conn: psycopg.Connection,
    schema: str,
    request_id: str,
    user: str,
    table: str,
    received: int,
    accepted: int,
    rejects: list[Reject],
    records: list,
    atomic: bool,
) -> None:
    """The batch's row and one row per rejected record (one multi-row statement)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (request_id, username, table_name, received, accepted, rejected,"
            " atomic) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        ).format(qualified(schema, "requests")),
        (request_id, user, table, received, accepted, len(rejects), atomic),
    )
    if not rejects:
        return
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (request_id, username, table_name, record_index, record, field,"
            " constraint_name, reason)"
            " SELECT %s, %s, %s, i, r::jsonb, f, c, m"
            " FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::text[])"
            "  AS u(i, r, f, c, m)"
        ).format(qualified(schema, "rejects")),
        (
            request_id,
            user,
            table,
            [r.index for r in rejects],
            [_loggable(records[r.index]) if r.index < len(records) else None for r in rejects],
            [no_nul(r.field) for r in rejects],
            [no_nul(r.constraint) for r in rejects],
            [no_nul(r.reason) for r in rejects],
        ),
    )


def no_nul(text: str | None) -> str | None:
    """A field name or reason quoting what was sent: U+0000 (which text refuses) as U+FFFD."""
    return text.replace("\x00", "\ufffd") if text else text


def _loggable(record) -> str:
    """The record as sent, as JSON text jsonb takes: U+0000 (which jsonb refuses) shown as
    U+FFFD."""
    return json.dumps(record, ensure_ascii=False).replace("\\u0000", "\\ufffd")


@dataclass(frozen=True)
class RejectSummary:
    """Received and rejected records since a time, the latest rejects, all rejects ever."""

    received: int
    rejected: int
    total_rejects: int
    latest: list[tuple]  # (at, user, table, record index, field, reason)

    @property
    def share(self) -> float:
        return self.rejected / self.received if self.received else 0.0


def reject_summary(
    conn: psycopg.Connection, schema: str, since: datetime, latest: int = 20
) -> RejectSummary:
    """For the Dagster asset and its check. Indexed on `at`; the total is the identity's last
    value (no count(*) over the whole log)."""
    received, rejected = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(received), 0), coalesce(sum(rejected), 0) FROM {} WHERE at >= %s"
        ).format(qualified(schema, "requests")),
        (since,),
    ).fetchone() or (0, 0)
    total = conn.execute(
        sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(qualified(schema, "rejects"))
    ).fetchone()
    rows = conn.execute(
        sql.SQL(
            "SELECT at, username, table_name, record_index, field, reason FROM {}"
            " ORDER BY id DESC LIMIT %s"
        ).format(qualified(schema, "rejects")),
        (latest,),
    ).fetchall()
    return RejectSummary(int(received), int(rejected), int(total[0] if total else 0), rows)
