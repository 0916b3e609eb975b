"""Waiting for a lock without waiting forever: backends that block ours are terminated after a
delay.

``terminating_blockers(conn, after_seconds, logger)`` is a context manager around a statement that
needs a strong lock (ALTER TABLE, LOCK TABLE .. ACCESS EXCLUSIVE). A watcher thread, on its own
connection, waits `after_seconds`; from then on, while the block runs, it terminates every backend
in ``pg_blocking_pids(<our backend>)`` (``pg_terminate_backend``: a transaction that merely holds a
lock runs no query to cancel) and logs each one at WARNING: pid, user, application, state, query.
``after_seconds=None`` never terminates anything (the statement waits as long as it takes).

Shared by every pipeline that takes such a lock: ``ingest()`` migrations (bulk_ingest.migration),
the dump attach (versioned_tables.attach_version) and CDC schema evolution (cdc.warehouse). A lock
request that waits also queues every later reader behind it, so waiting forever is rarely kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

_CHECK_INTERVAL = 0.2  # seconds between checks once the delay has passed
DEFAULT_AFTER_SECONDS = 60.0


@contextmanager
def terminating_blockers(
    conn: psycopg.Connection,
    after_seconds: float | None,
    logger: logging.Logger | logging.LoggerAdapter,
) -> Iterator[None]:
    if after_seconds is None:
        yield
        return
    pid = conn.info.backend_pid
    dsn, password = conn.info.dsn, conn.info.password
    done = threading.Event()
    failure: list[BaseException] = []

    def watch() -> None:
        if done.wait(after_seconds):
            return
        try:
            with psycopg.connect(
                dsn,
                password=password,
                autocommit=True,
                application_name="ingest_platform lock watcher",
            ) as watcher:
                while not done.is_set():
                    for blocker in watcher.execute(
                        "SELECT a.pid, a.usename, a.application_name, a.state, left(a.query, 200), "
                        "       pg_terminate_backend(a.pid) "
                        "FROM unnest(pg_blocking_pids(%s)) AS b(pid) JOIN pg_stat_activity a ON "
                        "a.pid = b.pid",
                        (pid,),
                    ).fetchall():
                        logger.warning(
                            "Terminated backend %s (user %s, application %r, %s, query %r): it "
                            "held a lock that "
                            "backend %s waited for longer than %s s",
                            *blocker[:5],
                            pid,
                            after_seconds,
                        )
                    done.wait(_CHECK_INTERVAL)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=watch, name=f"lock-watcher-{pid}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
        if failure:
            logger.warning("The lock watcher failed: %s", failure[0])
