"""The daily backup asset in a real Dagster run: backup, retention, the `restorable` check."""

from __future__ import annotations

import datetime as dt
import json

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
    # Retention (keep 1 daily) deleted the older day's backup.
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == ["2026-11-21"]
