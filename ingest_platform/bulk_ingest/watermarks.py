"""High watermarks, stored durably in ``<schema>."_ingest_watermarks"``, one row per key.

The row of a key is written in the transaction of the batch it belongs to, so a stored watermark
always describes committed rows. Layout::

    key         text PRIMARY KEY   -- the caller's watermark_key, or the sorted table names
    watermark   jsonb              -- the value, tagged when JSON has no type for it (below)
    tables      text[] NOT NULL    -- the tables of the ingest, "schema.table"
    mode        text NOT NULL      -- the Mode of the last batch stored
    batches     bigint NOT NULL    -- batches stored under this key since it was created
    updated_at  timestamptz NOT NULL

Values: None, bool, int, float and str are stored as JSON; datetime, date, time, Decimal, tuple
and dict as ``{"$datetime": iso}``, ``{"$date": ..}``, ``{"$time": ..}``, ``{"$decimal": ..}``,
``{"$tuple": [..]}``, ``{"$dict": {..}}`` (lists stay lists), so they come back as the same type.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest_platform.errors import IngestError

WATERMARK_TABLE = "_ingest_watermarks"
_ADVISORY_NAMESPACE = "ingest_platform.bulk_ingest.watermarks"


def encode(value: Any) -> Any:
    """`value` as JSON-compatible data; IngestError for a type that cannot be stored."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$dict": {k: encode(v) for k, v in value.items()}}
    raise IngestError(
        f"A high watermark of type {type(value).__name__} cannot be stored: use None, bool, int, "
        f"float, "
        "str, datetime, date, time, Decimal, or tuples, lists and str-keyed dicts of these."
    )


def decode(data: Any) -> Any:
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict) and len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == "$datetime":
            return dt.datetime.fromisoformat(inner)
        if tag == "$date":
            return dt.date.fromisoformat(inner)
        if tag == "$time":
            return dt.time.fromisoformat(inner)
        if tag == "$decimal":
            return Decimal(inner)
        if tag == "$tuple":
            return tuple(decode(v) for v in inner)
        if tag == "$dict":
            return {k: decode(v) for k, v in inner.items()}
    return data


def check_increases(previous: Any, new: Any, batch_number: int) -> None:
    """IngestError unless `new` is strictly after `previous` (None before anything; None after
    None)."""
    if previous is None:
        return
    where = f"Batch {batch_number}"
    if new is None:
        raise IngestError(
            f"{where} has the high watermark None after {previous!r}: a batch's watermark "
            "must increase. Return batches strictly after the watermark passed to batches()."
        )
    try:
        increases = new > previous
    except TypeError:
        raise IngestError(
            f"{where} has the high watermark {new!r} ({type(new).__name__}), which cannot be "
            f"compared with the previous one, {previous!r} ({type(previous).__name__}). "
            "Use one type of watermark throughout."
        ) from None
    if not increases:
        raise IngestError(
            f"{where} has the high watermark {new!r}, which does not increase on the previous "
            f"one, {previous!r}. Return batches strictly after the watermark passed to batches(), "
            "in increasing order."
        )


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(WATERMARK_TABLE))


def ensure_table(conn: psycopg.Connection, schema: str) -> None:
    """Create the schema and the watermark table if missing. Commits."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
            (_ADVISORY_NAMESPACE, schema),
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, watermark jsonb, tables "
                "text[] NOT NULL, "
                "mode text NOT NULL, batches bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT "
                "NULL DEFAULT now())"
            ).format(_table(schema))
        )


def read(conn: psycopg.Connection, schema: str, key: str) -> Any:
    """The stored watermark of `key`, or None. Runs in the caller's transaction if there is one."""
    row = conn.execute(
        sql.SQL("SELECT watermark FROM {} WHERE key = %s").format(_table(schema)), (key,)
    ).fetchone()
    return decode(row[0]) if row else None


def write(
    conn: psycopg.Connection, schema: str, key: str, value: Any, tables: list[str], mode: str
) -> None:
    """Store `value` for `key` in the caller's (open) transaction."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} AS w (key, watermark, tables, mode, batches, updated_at) VALUES (%s, "
            "%s, %s, %s, 1, now()) "
            "ON CONFLICT (key) DO UPDATE SET watermark = EXCLUDED.watermark, tables = "
            "EXCLUDED.tables, "
            "mode = EXCLUDED.mode, batches = w.batches + 1, updated_at = now()"
        ).format(_table(schema)),
        (key, Jsonb(encode(value), dumps=_dumps), tables, mode),
    )


def _dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=False)
