"""The migration as Dagster assets: real runs (dg.materialize) between two real servers."""

from __future__ import annotations

import dagster as dg
import pytest

from ingest_platform.defs.components.migration import MigrationComponent
from ingest_platform.defs.migration import MigrationSettings, build_migration_definitions
from ingest_platform.errors import ConfigError
from ingest_platform.migration import demo_hr
from ingest_platform.postgres.connection import connect

SECRET = "NotThisSecret-7731"  # trust authentication ignores it; it must show up nowhere
TABLES = ["hr.departments", "hr.jobs", "hr.hired_employees"]


@pytest.fixture
def migration(monkeypatch, pg_dsn, other_dsn):
    """(definitions, source, target): demo_hr with 1,000 hires on one server, an empty target."""
    demo_hr.create_hr_source(pg_dsn, 1000)
    demo_hr.ensure_reader_role(other_dsn)
    monkeypatch.setenv("TEST_MIGRATION_SOURCE", f"{pg_dsn} password={SECRET}")
    monkeypatch.setenv("TEST_MIGRATION_TARGET", f"{other_dsn} password={SECRET}")
    defs = build_migration_definitions(
        MigrationSettings(tables=TABLES, schemas=["hr"]),
        "TEST_MIGRATION_SOURCE",
        "TEST_MIGRATION_TARGET",
    )
    return defs, pg_dsn, other_dsn


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets or []), resources=defs.resources, raise_on_error=False, instance=instance
    )


def _materializations(result: dg.ExecuteInProcessResult) -> dict:
    return {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def _everything_shown(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Every log message (the assets' own included) and metadata value of the run, as text."""
    shown = []
    for entry in instance.all_logs(result.run_id):
        shown.append(entry.user_message)
        if not entry.dagster_event:
            continue
        data = entry.dagster_event.event_specific_data
        for attribute in ("materialization", "asset_check_evaluation"):
            item = getattr(data, attribute, None)
            if item is not None:
                shown += [str(v.value) for v in item.metadata.values()]
    return "\n".join(shown)


@pytest.mark.postgres
@pytest.mark.slow
def test_migration_assets_copy_check_and_hide_the_password(migration):
    defs, source, target = migration
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(defs, instance)
    assert result.success
    materialized = _materializations(result)
    schema_meta = materialized.pop("migration/schema")
    assert schema_meta["target_state_before"].value == "empty"
    assert schema_meta["target"].value.endswith("/" + target.split("dbname=")[1].split()[0])
    tables = materialized
    assert {k: v["dagster/row_count"].value for k, v in tables.items()} == {
        "migration/hr/departments": 12,
        "migration/hr/jobs": 35,
        "migration/hr/hired_employees": 1000,
    }
    employees = tables["migration/hr/hired_employees"]
    assert employees["dagster/table_name"].value == "hr.hired_employees"
    assert employees["mb"].value > 0 and employees["rows_per_second"].value > 0
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks == {
        ("migration/schema", "schema_matches_source"): True,
        ("migration/hr/departments", "rows_match_source"): True,
        ("migration/hr/jobs", "rows_match_source"): True,
        ("migration/hr/hired_employees", "rows_match_source"): True,
    }
    shown = _everything_shown(instance, result)
    assert "Created 20 objects in schema(s) hr" in shown  # the assets' own log lines are seen
    assert "password" not in shown and SECRET not in shown
    # Run again: nothing to do for the schema, the same rows, nothing duplicated.
    again = _materialize(defs, instance)
    assert again.success
    assert "Nothing to do" in _materializations(again)["migration/schema"]["result"].value
    with connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM hr.hired_employees").fetchone() == (1000,)


def test_component_without_source_builds_nothing_and_wants_tables():
    assert not list(MigrationComponent().build_defs(None).assets or [])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`schema.table` in `tables`"):
        MigrationComponent(source_dsn_env="X", tables=["hired_employees"]).build_defs(None)  # type: ignore[arg-type]
    defs = MigrationComponent(source_dsn_env="X", tables=TABLES).build_defs(None)  # type: ignore[arg-type]
    keys = defs.get_repository_def().asset_graph.get_all_asset_keys()
    assert sorted(k.to_user_string() for k in keys) == [
        "migration/hr/departments", "migration/hr/hired_employees", "migration/hr/jobs",
        "migration/schema",
    ]  # fmt: skip
