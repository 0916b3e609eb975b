"""A real `ingest-platform api` process on loopback in front of a real PostgreSQL database with the
HR example, and users to call it with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from ingest_platform.local.ports import free_port
from ingest_platform.migration.demo_hr import create_hr_source
from ingest_platform.postgres.connection import ensure_database, with_database
from ingest_platform_tests.conftest import unique_name

REPO = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "s" * 60  # 64+ bytes: HS512 (refused) warns below that
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-333"}
CONFIG = """
max_records = 1000
max_body_mb = 2
token_minutes = 5
login_failures = 3
login_window_seconds = 60
admin_exact_count = 1000  # admin list totals above this are estimates (test_admin.py)

[[tables]]
table = "hr.departments"

[[tables]]
table = "hr.jobs"

[[tables]]
table = "hr.hired_employees"
[tables.defaults]
datetime = "now()"
"""


@dataclass
class Api:
    url: str
    dsn: str
    log: Path
    env: dict[str, str]

    def client(self, user: str | None = "alice") -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        if user:
            response = client.post("/token", data={"username": user, "password": PASSWORDS[user]})
            response.raise_for_status()
            client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return client

    def query(self, text: str, params=None) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(text, params)
            return cursor.fetchall() if cursor.description else []


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest_platform.local.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def api(pg_server_dsn, tmp_path_factory) -> Iterator[Api]:
    database = unique_name("test_api")
    ensure_database(pg_server_dsn, database)
    dsn = with_database(pg_server_dsn, database)
    create_hr_source(dsn, 200)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A row with an id past the sequence (as a migration or CSV import leaves it): the API
        # must number new hires after it.
        conn.execute("INSERT INTO hr.hired_employees (id, name) VALUES (5000, 'imported')")
    workdir = tmp_path_factory.mktemp("api")
    config = workdir / "api.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "INGEST_PG_DSN": dsn,
        "INGEST_API_CONFIG": str(config),
        "INGEST_API_SECRET": SECRET,
    }
    for user, tables in (("alice", ["*"]), ("bob", ["departments"]), ("carol", ["jobs"])):
        done = cli(
            env,
            "api", "user", "add", user, *[f"--table={t}" for t in tables], "--password-stdin",
            stdin=PASSWORDS[user] + "\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    port = free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "ingest_platform.local.cli", "api", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the API did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield Api(url, dsn, log, env)
    finally:
        server.terminate()
        server.wait(10)
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
