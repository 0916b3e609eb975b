"""Failed logins per (user name, client address) over a sliding window, counted in PostgreSQL.

After ``login_failures`` failures within ``login_window_seconds`` the next attempts get 429 until
the window has passed, without a password check (no argon2 work for an attacker's requests).
The count lives in the API's table ``login_failures``, not in memory, so that every worker
process of the API (``ingest-platform api --workers N``) and every API server on the warehouse
counts the same attempts, and a restart forgets nothing. Times are the database's clock, the one
clock every process shares. Rows older than the window are deleted with each new failure.
"""

from __future__ import annotations

from psycopg import sql
from psycopg_pool import ConnectionPool

from ingest_platform.postgres.catalog import qualified

from .store import no_nul

Key = tuple[str, str]  # (user name, client address)


class LoginLimiter:
    def __init__(self, pool: ConnectionPool, schema: str, failures: int, window_seconds: float):
        self.pool = pool
        self.failures = failures
        self.window = window_seconds
        self.table = qualified(schema, "login_failures")

    def retry_after(self, key: Key) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT CASE WHEN count(*) < %(failures)s THEN 0 ELSE greatest(0,"
                    " extract(epoch FROM min(at) + make_interval(secs => %(window)s)"
                    " - clock_timestamp())) END"
                    " FROM (SELECT at FROM {} WHERE username = %(name)s AND address = %(address)s"
                    "  AND at > clock_timestamp() - make_interval(secs => %(window)s)"
                    "  ORDER BY at DESC LIMIT %(failures)s) recent"
                ).format(self.table),
                self._params(key),
            ).fetchone()
        return float(row[0]) if row else 0.0

    def failed(self, key: Key) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {}"
                    " WHERE at < clock_timestamp() - make_interval(secs => %(window)s)"
                ).format(self.table),
                self._params(key),
            )
            conn.execute(
                sql.SQL("INSERT INTO {} (username, address) VALUES (%(name)s, %(address)s)").format(
                    self.table
                ),
                self._params(key),
            )

    def succeeded(self, key: Key) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE username = %(name)s AND address = %(address)s"
                ).format(self.table),
                self._params(key),
            )

    def _params(self, key: Key) -> dict:
        name, address = key
        return {
            "name": no_nul(name),
            "address": address,
            "failures": self.failures,
            "window": float(self.window),
        }
