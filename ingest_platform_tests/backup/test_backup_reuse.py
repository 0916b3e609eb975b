"""Backups reuse the files of unchanged dump versions from the previous backup (hard links)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ingest_platform.backup import backup, restore
from ingest_platform.postgres.connection import connect
from ingest_platform_tests.postgres.test_versioned_tables import V1, load

pytestmark = pytest.mark.postgres

ROWS = {
    "1": [(i, f"name {i}", f"{i}.25") for i in range(1, 301)],
    "2": [(i, f"second {i}", f"{i}.50") for i in range(1, 201)],
    "3": [(i, f"third {i}", None) for i in range(1, 51)],
}


def _load(dsn: str, version: str) -> None:
    with connect(dsn) as conn:
        load(conn, V1, version, ROWS[version])


def _rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            'SELECT t::text FROM crm."Orders" t ORDER BY "_version", "Id"'
        ).fetchall()


def _tables(manifest: dict) -> dict[str, dict]:
    return {t["name"]: t for t in manifest["tables"]}


def _inode(directory: Path, name: str) -> int:
    return (directory / name).stat().st_ino


def test_unchanged_versions_are_reused_and_each_backup_restores_alone(pg_dsn, target_dsn, tmp_path):
    _load(pg_dsn, "1")
    _load(pg_dsn, "2")
    first = backup(pg_dsn, tmp_path / "b1", schemas=["crm"])
    assert not any("reused_from" in t for t in first["tables"])
    assert {"Orders__v1", "Orders__v2"} <= {
        t["name"] for t in first["tables"] if "version_identity" in t
    }

    second = backup(pg_dsn, tmp_path / "b2", schemas=["crm"], previous=tmp_path / "b1")
    tables = _tables(second)
    for name in ("Orders__v1", "Orders__v2"):
        assert tables[name]["reused_from"] == first["backup_id"]
        assert tables[name]["rows"] == len(ROWS[name[-1]])
        before = _tables(first)[name]
        for old, new in zip(before["files"], tables[name]["files"], strict=True):
            assert second["files"][new]["sha256"] == first["files"][old]["sha256"]
            assert _inode(tmp_path / "b2", new) == _inode(tmp_path / "b1", old)  # a hard link
    # Not version tables: written again.
    assert "reused_from" not in tables["Orders"]
    assert "reused_from" not in tables["_ingest_versions"]

    as_of_second = _rows(pg_dsn)
    _load(pg_dsn, "3")
    third = backup(pg_dsn, tmp_path / "b3", schemas=["crm"], previous=tmp_path / "b2")
    tables = _tables(third)
    assert tables["Orders__v1"]["reused_from"] == second["backup_id"]
    assert tables["Orders__v2"]["reused_from"] == second["backup_id"]
    assert "reused_from" not in tables["Orders__v3"]  # only the new version is written
    assert tables["Orders__v3"]["rows"] == 50

    # Retention deletes the first backup: the second (whose files were links) still restores.
    shutil.rmtree(tmp_path / "b1")
    result = restore(tmp_path / "b2", target_dsn)
    assert result.passed and result.against_backup, result.text()
    assert _rows(target_dsn) == as_of_second
    result = restore(tmp_path / "b3", target_dsn, replace=True)
    assert result.passed, result.text()
    assert _rows(target_dsn) == _rows(pg_dsn)


def test_a_reloaded_or_changed_version_is_written_again(pg_dsn, tmp_path):
    _load(pg_dsn, "1")
    _load(pg_dsn, "2")
    backup(pg_dsn, tmp_path / "b1", schemas=["crm"])
    _load(pg_dsn, "2")  # a reload replaces the version's table
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a row written into a child by hand
        conn.execute("""INSERT INTO crm."Orders__v1" ("Id", "Name") VALUES (9999, 'by hand')""")
    second = backup(pg_dsn, tmp_path / "b2", schemas=["crm"], previous=tmp_path / "b1")
    assert not any("reused_from" in t for t in second["tables"])
    assert _tables(second)["Orders__v1"]["rows"] == 301


def test_a_damaged_previous_file_is_not_reused(pg_dsn, target_dsn, tmp_path):
    _load(pg_dsn, "1")
    first = backup(pg_dsn, tmp_path / "b1", schemas=["crm"])
    damaged = _tables(first)["Orders__v1"]["files"][0]
    with open(tmp_path / "b1" / damaged, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe")
    second = backup(pg_dsn, tmp_path / "b2", schemas=["crm"], previous=tmp_path / "b1")
    assert "reused_from" not in _tables(second)["Orders__v1"]
    result = restore(tmp_path / "b2", target_dsn)
    assert result.passed, result.text()
    assert _rows(target_dsn) == _rows(pg_dsn)


def test_the_cli_reuses_with_previous_and_names_a_previous_that_is_no_backup(pg_dsn, tmp_path):
    from ingest_platform_tests.backup.test_backup_cli import _cli

    _load(pg_dsn, "1")
    env = {"INGEST_BACKUP_SOURCE_DSN": pg_dsn}
    first = _cli("backup", "--to", str(tmp_path / "b1"), "--schema", "crm", env=env)
    assert first.returncode == 0, first.stderr
    second = _cli("backup", "--to", str(tmp_path / "b2"), "--schema", "crm",
                  "--previous", str(tmp_path / "b1"), env=env)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "crm.Orders__v1: 300 rows" in second.stdout
    assert "files reused from the previous backup" in second.stdout
    (tmp_path / "other").mkdir()
    refused = _cli("backup", "--to", str(tmp_path / "b3"), "--schema", "crm",
                   "--previous", str(tmp_path / "other"), env=env)  # fmt: skip
    assert refused.returncode != 0
    assert f"{tmp_path / 'other'} is not a backup (no manifest.json)" in refused.stderr
    assert not (tmp_path / "b3" / "manifest.json").exists()
