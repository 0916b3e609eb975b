"""The daily backup asset in a real Dagster run: backup, retention, the `restorable` check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingest_platform.backup.manifest import MANIFEST
from ingest_platform.backup.retention import apply_retention, to_keep
from ingest_platform.defs.backup import BackupSettings, build_backup_definitions


def test_retention_keeps_newest_dailies_and_one_per_week(tmp_path):
    days = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(28)]
    kept = to_keep(days, keep_daily=3, keep_weekly=2)
    assert kept == {
        dt.date(2026, 11, 28),
        dt.date(2026, 11, 27),
        dt.date(2026, 11, 26),
        dt.date(2026, 11, 22),
    }  # fmt: skip  (Sunday of the week before)
    for day in days[-5:]:
        (tmp_path / day.isoformat()).mkdir()
        (tmp_path / day.isoformat() / MANIFEST).write_text("{}")
    (tmp_path / "2026-11-20").mkdir()  # interrupted: no manifest, older than the newest
    deleted = apply_retention(tmp_path, keep_daily=2, keep_weekly=1)
    assert [p.name for p in deleted] == ["2026-11-20", "2026-11-24", "2026-11-25", "2026-11-26"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-27", "2026-11-28"]


@pytest.mark.postgres
def test_backup_asset_materializes_a_partition_and_the_check_restores_it(
    pg_dsn, tmp_path, monkeypatch
):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2))")
        conn.execute("INSERT INTO orders SELECT g, g * 1.25 FROM generate_series(1, 300) g")
    monkeypatch.setenv("TEST_BACKUP_SOURCE_DSN", pg_dsn)
    defs = build_backup_definitions(
        BackupSettings("shop", str(tmp_path), keep_daily=1, keep_weekly=0), "TEST_BACKUP_SOURCE_DSN"
    )
    schedule = defs.get_schedule_def("backup_shop_nightly")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # off by default
    job = defs.resolve_job_def("backup_shop")
    first = job.execute_in_process(partition_key="2026-11-20")
    assert first.success
    second = job.execute_in_process(partition_key="2026-11-21")
    assert second.success
    checks = second.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("restorable", True)]
    materialization = second.asset_materializations_for_node(job.nodes[0].name)[0]
    assert materialization.metadata["dagster/row_count"].value == 300
    shown = json.dumps({k: str(v.value) for k, v in materialization.metadata.items()})
    assert "password" not in shown and "user=" not in shown
    assert materialization.metadata["previous_backup"].value == str(
        tmp_path / "shop" / "2026-11-20"
    )
    # Retention (keep 1 daily) deleted the older day's backup.
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == ["2026-11-21"]


# What the components export while loading (defs/components/settings.py): monkeypatch restores them.
EXPORTED = ("INGEST_DUMP_DIALECT", "INGEST_DUMP_SCHEMA_PREFIX", "INGEST_LOAD_PROCESSES")


def load_project_components(monkeypatch, **env: str) -> dg.Definitions:
    """The project's component tree (ingest_platform/defs_yaml/, backup/defs.yaml among them)."""
    from ingest_platform import defs_yaml
    from ingest_platform.defs.resources import resources_from_env

    for name in (*EXPORTED, "INGEST_BACKUP_SCHEDULE", "INGEST_CDC_CONFIG", "INGEST_CDC_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tree = dg.ComponentTree.from_module(
        defs_module=defs_yaml, project_root=Path(defs_yaml.__file__).parent.parent.parent
    )
    return dg.Definitions.merge(tree.build_defs(), dg.Definitions(resources=resources_from_env()))


@pytest.mark.postgres
def test_the_backup_yaml_backs_up_the_warehouse_daily_behind_one_switch(
    pg_dsn, tmp_path, monkeypatch
):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text)")
        conn.execute("INSERT INTO events SELECT g, 'k' || g FROM generate_series(1, 50) g")
    (tmp_path / "dumps").mkdir()
    env = {
        "INGEST_PG_DSN": pg_dsn,
        "INGEST_DUMP_DIR": str(tmp_path / "dumps"),
        "INGEST_BACKUP_DIR": str(tmp_path / "backups"),
    }
    defs = load_project_components(monkeypatch, **env)
    schedule = defs.get_schedule_def("backup_warehouse_nightly")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # off by default
    assert schedule.cron_schedule == "0 2 * * *"
    on = load_project_components(monkeypatch, **env, INGEST_BACKUP_SCHEDULE="on")
    switched = on.get_schedule_def("backup_warehouse_nightly")
    assert switched.default_status == dg.DefaultScheduleStatus.RUNNING

    job = defs.resolve_job_def("backup_warehouse")
    result = job.execute_in_process(partition_key="2026-11-27")
    assert result.success
    assert [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()] == [
        ("restorable", True)
    ]
    day = tmp_path / "backups" / "warehouse" / "2026-11-27"
    manifest = json.loads((day / MANIFEST).read_text())
    assert {(t["schema"], t["name"], t["rows"]) for t in manifest["tables"]} >= {
        ("public", "events", 50)
    }
