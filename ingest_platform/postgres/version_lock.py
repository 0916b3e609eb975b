"""One load of a dump version at a time: PostgreSQL advisory locks per schema and version.

Two runs of one version (the sensor's and a manual one, or a file dropped twice) would otherwise
interleave their begins and attaches: each begin drops the other's load tables. The lock is a
session lock on a connection of its own, held for the whole load (every table, the attach): the
second run waits, logging who holds the lock, and then loads and replaces the version.
PostgreSQL releases it when the holder's connection ends, so a killed run (kill -9, a lost server)
never makes the next one wait: a re-run waits only for a live one.

A load of ONE table (a dump job's step, which may run on its own Celery worker beside the other
tables' steps) holds the version's lock shared and its table's lock exclusive: the tables of one
version load at once, two loads of one table wait for each other, and a whole-version load waits
for them all (and they for it). A begin drops only its own table's load tables and the attach
takes a lock of its own, so that is all the serializing the steps need.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from ingest_platform.postgres.connection import connect

LOGGER = logging.getLogger(__name__)
_NAMESPACE = "ingest_platform.version_load"


@contextmanager
def version_lock(
    dsn: str,
    schema: str,
    version: str,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
    table: str | None = None,
) -> Iterator[None]:
    """Hold the lock of (schema, version), or of one `table` of it, while the block runs; wait
    while another run holds it."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SET application_name = 'ingest_platform version lock'")
        version_keys = (f"{_NAMESPACE}:{schema}", version)
        if table is None:
            _lock(conn, "", version_keys, f'version {version} into schema "{schema}"', logger)
        else:
            what = f'table {table!r} of version {version} into schema "{schema}"'
            _lock(conn, "_shared", version_keys, what, logger)
            _lock(conn, "", (f"{_NAMESPACE}:{schema}.{table}", version), what, logger)
        yield


def _lock(conn, mode: str, keys: tuple[str, str], what: str, logger) -> None:
    acquired = conn.execute(
        f"SELECT pg_try_advisory_lock{mode}(hashtext(%s), hashtext(%s))", keys
    ).fetchone()
    if acquired and acquired[0]:
        return
    logger.warning(
        f"Another run is loading {what} ({_holder(conn, keys)}): waiting for it to finish; this "
        "run then loads it again and replaces it."
    )
    conn.execute(f"SELECT pg_advisory_lock{mode}(hashtext(%s), hashtext(%s))", keys)
    logger.info(f"Loading {what}: the other run finished.")


def _holder(conn, keys: tuple[str, str]) -> str:
    """Who holds the lock: the PostgreSQL backend and its client, as pg_stat_activity says."""
    row = conn.execute(
        "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.classid::int = hashtext(%s) AND l.objid::int = hashtext(%s) LIMIT 1",
        keys,
    ).fetchone()
    if row is None:
        return "it has just finished"
    pid, client, started = row
    return (
        f"PostgreSQL backend {pid}{f' from {client}' if client else ''}, since {started:%H:%M:%S}"
    )
