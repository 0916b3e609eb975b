"""Credentials are never shown, decrypted dumps never outlive their run: real processes, a real role
with a password, what `ps -o args` shows while they run, the Dagster event log as stored.

On the embedded test server the role's password is required (a pg_hba line for it), so these runs
also prove that the password still reaches every connection that needs it. INGEST_TEST_PG_DSN's
server keeps its own rules (trust on 127.0.0.1:5432: the password is accepted but unused there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest_platform.errors import ConfigError, IngestError, ServiceUnavailableError
from ingest_platform.local.ports import free_port
from ingest_platform.local.services import RunningServices
from ingest_platform.postgres.connection import (
    connect,
    server_address,
    to_url,
    with_database,
    without_password,
)
from ingest_platform_tests.conftest import PROJECT_DIR, encrypt, make_zip, unique_name

TIMEOUT = 180  # generous: a bound, not a timing assertion


@dataclass
class Secret:
    dsn: str  # key=value, with the password
    password: str
    needle: str  # the password's unique part: text holding it (however quoted) is a leak
    database: str
    role: str

    def leaks(self, text: str) -> bool:
        return self.needle in text


def _require_password(admin: psycopg.Connection, role: str, dsn: str) -> tuple[Path, str] | None:
    """On the embedded test server, make `role` need its password; the hba file and what it
    held before."""
    if os.environ.get("INGEST_TEST_PG_DSN"):
        return None  # not our server: its rules stay
    hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n{original}")
    admin.execute("SELECT pg_reload_conf()")
    without = make_conninfo(dsn, password="")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            psycopg.connect(without, connect_timeout=5).close()
            time.sleep(0.1)  # the reload is not in effect yet
        except psycopg.OperationalError:
            return hba, original
    raise AssertionError("the test server does not require the role's password")


@pytest.fixture
def secret(pg_server_dsn) -> Iterator[Secret]:
    """A role with a password (with characters a DSN and a URL must quote) and a database it
    owns."""
    role, database, needle = unique_name("relsec"), unique_name("test"), uuid.uuid4().hex
    password = f"p@ss w0rd:{needle}'/%"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
        dsn = make_conninfo(with_database(pg_server_dsn, database), user=role, password=password)
        hba = None
        try:
            hba = _require_password(admin, role, dsn)
            yield Secret(dsn, password, needle, database, role)
        finally:
            if hba:
                hba[0].write_text(hba[1])
                admin.execute("SELECT pg_reload_conf()")
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """A user's environment without platform settings; state in tmp_path/.ingest; no emulator
    (an address that is never called: these commands do not use BigQuery)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGEST_", "DAGSTER_", "BQEMU_", "PG"))
    }
    env.update(
        INGEST_STATE_DIR=str(tmp_path / ".ingest"),
        INGEST_BQ_EMULATOR_HOST="127.0.0.1:9",
        INGEST_BQ_EMULATOR_GRPC_HOST="127.0.0.1:9",
        PYTHONPATH=str(PROJECT_DIR),
    )
    return env


@dataclass
class Cli:
    """`python -m ingest_platform.local.cli ARGS` in its own session; what it prints, and what
    `ps -o args` shows for it and every process below it, sampled while it runs."""

    args: list[str]
    env: dict[str, str]
    cwd: Path
    output: list[str] = field(default_factory=list)
    ps_args: set[tuple[int, str]] = field(default_factory=set)  # (pid, args) as `ps` showed

    def __post_init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest_platform.local.cli", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def _watch(self) -> None:
        while self.process.poll() is None:
            table = subprocess.run(
                ["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True
            ).stdout
            processes = [line.split(None, 2) for line in table.splitlines()]
            tree: set[int] = set()
            below = {self.process.pid}
            while below - tree:  # down the tree, a generation at a time
                tree |= below
                below = tree | {int(p[0]) for p in processes if int(p[1]) in tree}
            for p in processes:
                if int(p[0]) in tree and len(p) == 3:
                    self.ps_args.add((int(p[0]), p[2]))
            time.sleep(0.05)

    def wait_for(self, pattern: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(pattern in line for line in self.output):
            ended = self.process.poll() is not None or time.monotonic() > deadline
            assert not ended, f"no {pattern!r} in:\n{self.printed}"
            time.sleep(0.05)

    def workers_seen(self) -> list[str]:
        return [a for _, a in list(self.ps_args) if "spawn_main" in a]  # (a copy: it grows)

    @property
    def printed(self) -> str:
        return "".join(self.output)

    @property
    def spawned_args(self) -> str:
        """`ps -o args` of every process it started (its own are the user's command line)."""
        return "\n".join(a for pid, a in list(self.ps_args) if pid != self.process.pid)

    def finish(self, sig: int | None = None) -> int:
        if sig is not None:
            os.killpg(self.process.pid, sig)
        code = self.process.wait(TIMEOUT)
        self.reader.join(10)  # the rest of the output
        return code

    def session(self) -> list[str]:
        """The processes left in its session (it leads one)."""
        table = ["ps", "-ww", "-o", "args=", "-s", str(self.process.pid)]
        return subprocess.run(table, capture_output=True, text=True).stdout.splitlines()

    def kill_the_rest(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def text(self) -> str:
        """What it printed and what `ps -o args` showed of it and its children."""
        return self.printed + "\n".join(a for _, a in list(self.ps_args))


def one_table_dump(path: Path, rows: int) -> Path:
    """A CSV dump with one table; above 8 MB of data, so COPY workers load it."""
    schema = '{"columns": [{"name": "id", "type": "int"}, {"name": "note", "type": "text"}]}'
    data = "id,note\n" + "".join(f"{i},note number {i} of the secret test\n" for i in range(rows))
    return make_zip(path, {"t.json": schema, "t.csv": data})


def rows_holding(dsn: str, needle: str) -> dict[str, int]:
    """Rows of every table in the database whose text holds `needle`, by table."""
    found = {}
    with connect(dsn) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for (table,) in tables:
            query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text LIKE %s")
            count = conn.execute(query.format(sql.SQL(table)), (f"%{needle}%",)).fetchone()[0]
            if count:
                found[table] = count
    return found


def files_holding(directory: Path, needle: str) -> list[Path]:
    return [f for f in directory.rglob("*") if f.is_file() and needle.encode() in f.read_bytes()]


# --- what the platform prints, records and spawns ---


@pytest.mark.slow
def test_ingest_run_shows_the_password_nowhere(tmp_path, cli_env, secret):
    """`ingest-platform ingest` with a password in INGEST_PG_DSN and DAGSTER_PG_URL: a real Dagster
    run with COPY worker processes. The password is in none of its output, none of the processes'
    arguments, no row of Dagster's storage (event log, metadata, run config) and no file it
    wrote."""
    cli_env.update(INGEST_PG_DSN=secret.dsn, DAGSTER_PG_URL=to_url(secret.dsn))
    dump = one_table_dump(tmp_path / "big_1.0.zip", 350_000)
    cli = Cli(["ingest", "--dialect", "csv", str(dump)], cli_env, tmp_path)
    assert cli.finish() == 0, "".join(cli.output)
    assert "succeeded" in cli.text
    assert cli.workers_seen(), f"no COPY worker seen in ps: {cli.ps_args}"
    assert not secret.leaks(cli.text)
    assert rows_holding(secret.dsn, "dagster/uri"), "no materialization metadata stored"
    assert rows_holding(secret.dsn, secret.needle) == {}
    assert files_holding(tmp_path, secret.needle) == []
    with connect(secret.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM big.t").fetchone()[0] == 350_000


def test_services_prints_dsns_without_passwords(tmp_path, cli_env, secret):
    """The `export` lines carry no password, and say where it goes instead."""
    url = to_url(secret.dsn).replace("postgresql+psycopg2://", "postgresql://")
    cli_env.update(INGEST_PG_DSN=secret.dsn, DAGSTER_PG_URL=url)
    cli = Cli(["services"], cli_env, tmp_path)
    cli.wait_for("Press Ctrl-C")
    assert cli.finish(signal.SIGINT) == 0
    [printed] = [line for line in cli.output if line.startswith("export DAGSTER_PG_URL=")]
    assert "PGPASSWORD" in cli.text
    assert not secret.leaks(cli.text)
    printed_url = printed.split("=", 1)[1].strip().strip("'")
    expected = {k: v for k, v in conninfo_to_dict(secret.dsn).items() if k != "password"}
    assert conninfo_to_dict(printed_url.replace("+psycopg2", "")) == expected


def test_printed_environment_has_no_passwords(secret):
    """What `services` prints of the environment it made: the same DSNs, less the passwords."""
    services = RunningServices(
        env={
            "INGEST_PG_DSN": secret.dsn,
            "DAGSTER_PG_URL": to_url(with_database(secret.dsn, "dagster")),
            "DAGSTER_HOME": "/home/etl/.ingest/dagster_home",
        }
    )
    printable = services.printable_env()
    assert not any(secret.leaks(value) for value in printable.values())
    assert printable["DAGSTER_HOME"] == services.env["DAGSTER_HOME"]
    assert printable["DAGSTER_PG_URL"].startswith(f"postgresql+psycopg2://{secret.role}@")
    assert "password" not in conninfo_to_dict(printable["INGEST_PG_DSN"])
    assert secret.leaks(services.env["DAGSTER_PG_URL"])  # what Dagster's processes get


def test_demo_app_names_the_database_not_the_dsn(tmp_path, cli_env, secret):
    args = ["demo-app", "--dsn", secret.dsn, "--duration", "1", "--rate", "5"]
    cli = Cli([*args, "--seed-projects", "2"], cli_env, tmp_path)
    assert cli.finish() == 0, cli.printed
    assert f"Demo source: database {secret.database} on " in cli.printed
    # The user typed the password into a command line, which `ps` shows: said, not repeated.
    assert "PGPASSWORD" in cli.printed
    assert not secret.leaks(cli.printed + cli.spawned_args)


@pytest.mark.parametrize("command", ["services", "ingest", "demo-app"])
def test_a_refused_connection_is_named_without_the_password(tmp_path, cli_env, secret, command):
    wrong = with_database(secret.dsn, "no_such_database")
    cli_env.update(INGEST_PG_DSN=wrong, DAGSTER_PG_URL=to_url(wrong))
    args = {
        "services": ["services"],
        "ingest": ["ingest", str(one_table_dump(tmp_path / "a_1.zip", 1))],
        "demo-app": ["demo-app", "--dsn", wrong, "--duration", "1"],
    }[command]
    cli = Cli(args, cli_env, tmp_path)
    assert cli.finish() == 1
    assert 'database "no_such_database" does not exist' in cli.printed
    assert server_address(secret.dsn) in cli.printed
    assert not secret.leaks(cli.printed + cli.spawned_args)


# --- messages about DSNs ---

NEEDLE = "9f8e7d6c5b4a"


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=db.internal user=etl password=my {NEEDLE} dbname=w",  # unquoted space
        f"host=db.internal user=etl password='{NEEDLE} dbname=w",  # unterminated quote
        f"postgresql://etl:%zz{NEEDLE}@db.internal/w",  # bad percent-encoding
        f"postgresql://etl:{NEEDLE}@[db.internal/w",  # unterminated IPv6 address
        f"postgresql://etl:p@{NEEDLE}@db.internal/w",  # an unencoded "@"
        f"postgresql://etl:{NEEDLE}@db.internal/w?{NEEDLE}=1",  # unknown parameter
    ],
)
def test_a_dsn_that_does_not_parse_is_not_quoted(dsn):
    """libpq's own parse errors quote the text at fault, which can be the password."""
    for use in (connect, server_address, without_password, to_url):
        with pytest.raises(ConfigError) as error:
            use(dsn)
        assert NEEDLE not in str(error.value)
        assert "INGEST_PG_DSN" in str(error.value)


def test_connection_errors_never_quote_the_password(secret):
    refused = make_conninfo(secret.dsn, host="127.0.0.1", port=str(free_port()))
    with pytest.raises(ServiceUnavailableError, match="does not answer") as error:
        connect(refused)
    assert not secret.leaks(str(error.value))
    with pytest.raises(ServiceUnavailableError, match="does not exist") as error:
        connect(with_database(secret.dsn, "no_such_database"))
    assert not secret.leaks(str(error.value))
    # libpq quotes a value it cannot use; here the password is that value.
    bad_port = make_conninfo(secret.dsn, port=secret.password)
    with pytest.raises(IngestError) as error:
        connect(bad_port)
    assert not secret.leaks(str(error.value))
    assert without_password(secret.dsn) == make_conninfo(
        "", **{k: v for k, v in conninfo_to_dict(secret.dsn).items() if k != "password"}
    )


# --- decrypted dumps ---


@pytest.mark.slow
def test_a_load_killed_mid_copy_leaves_plaintext_that_the_next_start_removes(
    tmp_path, cli_env, pg_dsn, new_keyring
):
    """kill -9 of `ingest-platform ingest` while its COPY workers load a .zip.gpg: its workers
    stop, the decrypted archive stays (nothing can run in a killed process), and the next start
    removes it. The key's passphrase shows in `ps` at no point."""
    passphrase = f"pass-{uuid.uuid4().hex}"
    gpg, fingerprint = new_keyring(tmp_path / "gnupg", "ops@example.com", passphrase)
    plain = one_table_dump(tmp_path / "big_2.0.zip", 350_000)
    encrypted = encrypt(gpg, fingerprint, plain, tmp_path / "big_2.0.zip.gpg")
    decrypted = tmp_path / "decrypted"
    cli_env.update(
        INGEST_PG_DSN=pg_dsn,
        DAGSTER_PG_URL=to_url(pg_dsn),
        INGEST_GPG_HOME=str(tmp_path / "gnupg"),
        INGEST_GPG_PASSPHRASE=passphrase,
        INGEST_DECRYPT_DIR=str(decrypted),
    )
    args = ["ingest", "--dialect", "csv", str(encrypted)]
    killed = Cli(args, cli_env, tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not killed.workers_seen():
            assert killed.process.poll() is None, "".join(killed.output)
            assert time.monotonic() < deadline, "no COPY worker started"
            time.sleep(0.05)
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.wait(TIMEOUT)
        # Its workers notice and stop (else they would hold the plaintext and a COPY forever).
        while killed.session():
            assert time.monotonic() < deadline, f"left running: {killed.session()}"
            time.sleep(0.2)
    finally:
        killed.kill_the_rest()
    [left] = decrypted.iterdir()
    assert (left / "big_2.0.zip").read_bytes() == plain.read_bytes()
    assert passphrase not in killed.text

    again = Cli(args, cli_env, tmp_path)
    assert again.finish() == 0, "".join(again.output)
    assert "Removed 1 decrypted dump(s) left by killed processes" in again.text
    assert list(decrypted.iterdir()) == []
    assert passphrase not in again.text
    with connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM big.t").fetchone()[0] == 350_000
