"""Real services for the tests: a PostgreSQL server and a BigQuery emulator per session.

PostgreSQL is the embedded server unless INGEST_TEST_PG_DSN names an existing one (for example
host=127.0.0.1 port=5432 user=postgres dbname=postgres). Each test gets its own database and
its own BigQuery dataset, so tests cannot see each other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest_platform.bigquery.clients import (
    EMULATOR_PROJECT,
    EmulatorEndpoints,
    emulator_bigquery_client,
)
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.local.ports import free_port
from ingest_platform.postgres.connection import connect, ensure_database, with_database

PROJECT_DIR = Path(__file__).resolve().parent.parent


# The real exports live in ../shared/realdata beside the clone (as in CI).
REALDATA = PROJECT_DIR.parent / "shared" / "realdata"
MSSQL_DIR = REALDATA / "adventureworks_2025_mssql_bcp"
MYSQL_DIR = REALDATA / "ecoli_core_mysql_tab"

warnings.filterwarnings("ignore", message=".*unsupported syntax.*")


def zip_directory(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(source.iterdir()):
            archive.write(file, file.name)
    return target


def make_zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="session")
def mssql_zip(tmp_path_factory) -> Path:
    if not MSSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    return zip_directory(MSSQL_DIR, tmp_path_factory.mktemp("dumps") / "adventureworks_2025.zip")


@pytest.fixture(scope="session")
def mysql_zip(tmp_path_factory) -> Path:
    if not MYSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    return zip_directory(MYSQL_DIR, tmp_path_factory.mktemp("dumps") / "ecoli_core_1.0.zip")


def pytest_collection_modifyitems(items):
    # `pytest -m postgres` re-runs exactly the tests that talk to PostgreSQL (CI does, on 5432).
    for item in items:
        if "pg_server_dsn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of the server's maintenance database."""
    dsn = os.environ.get("INGEST_TEST_PG_DSN")
    if dsn:
        connect(dsn).close()
        yield dsn
        return
    # Not under pytest's basetemp: another pytest session's cleanup of old basetemps could
    # delete it.
    data_dir = Path(tempfile.mkdtemp(prefix="ingest_test_pg_")) / "data"
    embedded = start_embedded_postgres(data_dir, delete_on_stop=True)
    yield embedded.dsn
    embedded.stop()
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server_dsn) -> Iterator[str]:
    """A fresh database for this test, dropped afterwards."""
    database = unique_name("test")
    ensure_database(pg_server_dsn, database)
    yield with_database(pg_server_dsn, database)
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory) -> Iterator[EmulatorEndpoints]:
    log = tmp_path_factory.mktemp("bigquery") / "emulator.log"
    emulator = start_emulator(free_port(), free_port(), None, log)
    yield EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)
    emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator) -> Iterator[str]:
    """A fresh dataset in the emulator's project, deleted afterwards."""
    dataset = unique_name("test")
    client = emulator_bigquery_client(bq_emulator)
    client.create_dataset(dataset)
    yield dataset
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.close()


@pytest.fixture
def bigquery_resource(bq_emulator):
    from ingest_platform.defs.resources import BigQueryResource

    return BigQueryResource(
        project=EMULATOR_PROJECT,
        emulator_rest_endpoint=bq_emulator.rest,
        emulator_grpc_endpoint=bq_emulator.grpc,
    )


@pytest.fixture
def new_keyring():
    """Makes GnuPG homes with one key each (passphrase "secret" unless given); stops their
    gpg-agents afterwards (they outlive gpg). Skips without the gpg binary."""
    if shutil.which("gpg") is None:
        pytest.skip("needs the gpg binary (apt-get install gnupg)")
    import gnupg

    homes = []

    def make(home, email, passphrase="secret"):
        home.mkdir()
        homes.append(home)
        gpg = gnupg.GPG(gnupghome=str(home))
        key = gpg.gen_key(
            gpg.gen_key_input(
                name_email=email, passphrase=passphrase, key_type="RSA", key_length=1024
            )
        )
        assert key.fingerprint
        return gpg, key.fingerprint

    yield make
    for home in homes:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )


def encrypt(gpg, fingerprint: str, plain: Path, target: Path) -> Path:
    """`plain` encrypted to `fingerprint` as `target` (binary, uncompressed: ZIPs are already)."""
    with open(plain, "rb") as source:
        result = gpg.encrypt_file(
            source,
            [fingerprint],
            output=str(target),
            always_trust=True,
            armor=False,
            extra_args=["--compress-algo", "none"],
        )
    assert result.ok, result.status
    return target


@pytest.fixture
def project(tmp_path):
    shutil.copyfile(PROJECT_DIR / "workspace.yaml", tmp_path / "workspace.yaml")
    return tmp_path


@pytest.fixture
def clean_env(project) -> dict[str, str]:
    """The user's environment without any platform settings, state kept in the test's project."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_", "BQEMU_"))
    }
    env["INGEST_STATE_DIR"] = str(project / ".ingest")
    return env
