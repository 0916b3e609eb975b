"""`ingest-platform backup` / `restore` as a user runs them, and a disk that fills up."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ingest_platform.backup import BackupError, backup, restore
from ingest_platform.backup.manifest import INCOMPLETE, MANIFEST
from ingest_platform.postgres.connection import parse_dsn

pytestmark = pytest.mark.postgres
PASSWORD = "pw-never-shown-42"


def _cli(*args: str, env: dict | None = None, limit_bytes: int | None = None):
    def limit() -> None:
        if limit_bytes is not None:  # a full disk: writes past this size fail
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "ingest_platform.local.cli", *args],
        capture_output=True,
        text=True,
        env={
            # Without XDG_RUNTIME_DIR (root in a container, cron), as in CI: no library warning
            # about it may reach the user.
            **{k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"},
            "PYTHONPATH": str(Path(__file__).parents[2]),
            **(env or {}),
        },
        preexec_fn=limit,
        timeout=300,
    )


def _with_password(dsn: str) -> str:
    return " ".join(f"{k}={v}" for k, v in parse_dsn(dsn).items()) + f" password={PASSWORD}"


@pytest.fixture
def source(pg_dsn) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE sales (id int PRIMARY KEY, amount numeric(10,2), note text);"
            "INSERT INTO sales SELECT g, g / 100.0, md5(g::text) FROM generate_series(1, 5000) g"
        )
    return pg_dsn


def test_backup_and_restore_commands_never_print_the_password(source, target_dsn, tmp_path):
    done = _cli("backup", "--to", str(tmp_path / "b"), "--format", "avro",
                env={"INGEST_BACKUP_SOURCE_DSN": _with_password(source)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "public.sales: 5,000 rows" in done.stdout and "1 tables, 5,000 rows" in done.stdout
    assert "Warning" not in done.stderr, done.stderr
    restored = _cli("restore", str(tmp_path / "b"), "--target", _with_password(target_dsn),
                    "--source", _with_password(source))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert "public.sales: same rows as the backup (backup 5,000 rows" in restored.stdout
    assert "public.sales: same rows as the source" in restored.stdout
    again = _cli("restore", str(tmp_path / "b"), "--target", _with_password(target_dsn))
    assert again.returncode == 1 and "is not empty (it holds public.sales" in again.stderr
    manifest = (tmp_path / "b" / MANIFEST).read_text()
    for text in (done.stdout, done.stderr, restored.stdout, again.stderr, manifest):
        assert PASSWORD not in text


def test_a_full_disk_leaves_an_incomplete_backup_that_is_never_restored(
    source, target_dsn, tmp_path
):
    directory = tmp_path / "b"
    done = _cli("backup", "--source", source, "--to", str(directory), limit_bytes=60_000)
    assert done.returncode == 1
    assert "public.sales: writing" in done.stderr and "the backup is incomplete" in done.stderr
    assert (directory / INCOMPLETE).exists() and not (directory / MANIFEST).exists()
    with pytest.raises(BackupError, match="incomplete backup"):
        restore(directory, target_dsn)
    assert backup(source, directory)["tables"][0]["rows"] == 5000  # with room, it succeeds
