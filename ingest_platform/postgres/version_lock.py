"""One load of a dump version at a time: a PostgreSQL advisory lock per schema and version.

Two runs of one version (the sensor's and a manual one, or a file dropped twice) would otherwise
interleave their begins and attaches: each begin drops the other's load tables. The lock is a
session lock on a connection of its own, held for the whole load of the dump (every table, the
attach): the second run waits, logging who holds the lock, and then loads and replaces the version.
PostgreSQL releases it when the holder's connection ends, so a killed run (kill -9, a lost server)
never makes the next one wait: a re-run waits only for a live one.
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
) -> Iterator[None]:
    """Hold the lock of (schema, version) while the block runs; wait while another run has it."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SET application_name = 'ingest_platform version lock'")
        keys = (f"{_NAMESPACE}:{schema}", version)
        acquired = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", keys
        ).fetchone()
        if not (acquired and acquired[0]):
            logger.warning(
                f'Another run is loading version {version} into schema "{schema}" '
                f"({_holder(conn, keys)}): waiting for it to finish; this run then loads the "
                "version again and replaces it."
            )
            conn.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", keys)
            logger.info(f'Version {version} of "{schema}": the other run finished; loading.')
        yield


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
