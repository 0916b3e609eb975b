"""The platform's definitions: they load, and their asset graph matches a committed snapshot.

`test_asset_graph_matches_the_snapshot` loads the real `ingest_platform.definitions` module (the
component tree of `ingest_platform/defs_yaml/`) with the demo dumps in a temporary
INGEST_DUMP_DIR and compares, for every asset, its group, kinds, deps, owners, tags, automation
condition, freshness policy and partitions; for every check its blocking flag and partitions;
and the jobs, schedules and sensors, with `ingest_platform_tests/snapshots/asset_graph.json`.

A deliberate change to the graph: refresh the snapshot with one command, then review its diff:

    UPDATE_SNAPSHOTS=1 PYTHONPATH=$PWD .venv/bin/python -m pytest ingest_platform_tests/test_defs.py
"""

import importlib.util
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from ingest_platform import definitions
from ingest_platform.demo.dumps import write_demo_dumps
from ingest_platform.errors import ConfigError

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
# Settings that change the graph's names or contents: unset, so the snapshot is the defaults'.
SETTINGS = (
    "INGEST_DUMP_DIALECT",
    "INGEST_DUMP_SCHEMA_PREFIX",
    "INGEST_LOAD_PROCESSES",
    "INGEST_BQ_DATASET_PREFIX",
    "INGEST_CDC_CONFIG",
    "INGEST_CDC_SCHEMA",
    "INGEST_CDC_SOURCE_DSN",
    "INGEST_API_CONFIG",
    "INGEST_BACKUP_SCHEDULE",
    "INGEST_CDC_SCHEDULE",
    "INGEST_REVERIFY_SCHEDULE",
    "INGEST_EXECUTOR",
)


def test_definitions_load_and_validate():
    assert isinstance(definitions.defs, dg.Definitions)
    dg.Definitions.validate_loadable(definitions.defs)


def test_resources_come_from_the_environment(monkeypatch):
    from ingest_platform.defs.resources import resources_from_env

    resources = resources_from_env(
        {
            "INGEST_BQ_EMULATOR_HOST": "127.0.0.1:9050",
            "INGEST_BQ_EMULATOR_GRPC_HOST": "127.0.0.1:9060",
        }
    )
    assert resources["bigquery"].emulator_rest_endpoint == "http://127.0.0.1:9050"
    assert resources["bigquery"].project == "ingest-local"
    real = resources_from_env({"INGEST_BQ_PROJECT": "acme-analytics", "INGEST_BQ_LOCATION": "EU"})
    assert (
        real["bigquery"].project,
        real["bigquery"].location,
        real["bigquery"].emulator_rest_endpoint,
        real["bigquery"].row_format,
    ) == ("acme-analytics", "EU", None, "arrow")
    assert resources_from_env({"INGEST_BQ_ROW_FORMAT": "proto"})["bigquery"].row_format == "proto"
    with pytest.raises(
        ConfigError, match="INGEST_BQ_ROW_FORMAT is 'avro'; set it to arrow or proto"
    ):
        resources_from_env({"INGEST_BQ_ROW_FORMAT": "avro"})


def load_definitions_module(dump_dir: Path, monkeypatch, **settings: str) -> dg.Definitions:
    """A fresh execution of `ingest_platform/definitions.py` (not the imported module, which keeps
    the environment it was first loaded with), with only `settings` of SETTINGS set."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INGEST_DUMP_DIR", str(dump_dir))
    spec = importlib.util.find_spec("ingest_platform.definitions")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


def describe_condition(condition) -> str | None:
    """An automation condition as its label, or its operator over its operands' descriptions."""
    if condition is None:
        return None
    label = condition.get_label()
    if label:
        return label
    children = [describe_condition(child) for child in condition.children]
    return (
        f"{condition.name}({', '.join(c or '?' for c in children)})"
        if children
        else str(condition.name)
    )


def describe_freshness(policy) -> dict | None:
    if policy is None:
        return None
    described: dict = {"type": type(policy).__name__}
    for name in ("fail_window", "warn_window"):
        window = getattr(policy, name, None)
        if window is not None:
            described[name] = str(window.to_timedelta())
    return described


def asset_graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "owners": sorted(node.owners),
            "tags": {
                k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")
            },
            "automation_condition": describe_condition(node.automation_condition),
            "freshness_policy": describe_freshness(node.freshness_policy),
            "partitions": getattr(node.partitions_def, "name", None)
            or (type(node.partitions_def).__name__ if node.partitions_def else None),
            "external": not node.is_materializable,
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        check = graph.get_check_spec(check_key)
        checks[check_key.to_user_string()] = {
            "blocking": check.blocking,
            "partitions": getattr(check.partitions_def, "name", None),
        }
    repository = defs.get_repository_def()
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        for job in sorted(repository.get_all_jobs(), key=lambda job: job.name)
        if not job.name.startswith("__")
    }
    sensors = {
        sensor.name: {
            "default_status": sensor.default_status.value,
            "jobs": sorted(target.job_name for target in sensor.targets),
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
        }
        for sensor in sorted(repository.sensor_defs, key=lambda sensor: sensor.name)
    }
    schedules = {
        schedule.name: {"cron": schedule.cron_schedule, "job": schedule.job_name}
        for schedule in sorted(repository.schedule_defs, key=lambda schedule: schedule.name)
    }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "sensors": sensors,
        "schedules": schedules,
    }


@pytest.fixture(scope="module")
def demo_dump_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dumps")
    write_demo_dumps(directory, rows=5)
    return directory


def test_asset_graph_matches_the_snapshot(demo_dump_dir, monkeypatch):
    defs = load_definitions_module(demo_dump_dir, monkeypatch)
    text = json.dumps(asset_graph_snapshot(defs), indent=2, sort_keys=True) + "\n"
    assert str(demo_dump_dir) not in text  # no paths: the snapshot is the same on every machine
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.exists(), f"No snapshot yet: run with UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}."
    assert text == SNAPSHOT.read_text(encoding="utf-8"), (
        "The asset graph changed. If deliberately, refresh the snapshot (see this module's "
        "docstring) and review its diff."
    )


def test_every_schedule_is_off_until_its_switch_is_on(demo_dump_dir, monkeypatch):
    schedules = load_definitions_module(demo_dump_dir, monkeypatch).schedules or []
    assert {s.name for s in schedules} >= {"backup_warehouse_nightly", "cdc_sync_schedule"}
    assert {s.default_status for s in schedules} == {dg.DefaultScheduleStatus.STOPPED}
    switches = ("INGEST_BACKUP_SCHEDULE", "INGEST_CDC_SCHEDULE", "INGEST_REVERIFY_SCHEDULE")
    on = load_definitions_module(demo_dump_dir, monkeypatch, **dict.fromkeys(switches, "on"))
    assert {s.default_status for s in on.schedules or []} == {dg.DefaultScheduleStatus.RUNNING}


def test_with_the_celery_executor_every_job_runs_its_steps_on_workers(demo_dump_dir, monkeypatch):
    local = load_definitions_module(demo_dump_dir, monkeypatch).get_repository_def()
    assert "ingest_celery_executor" not in {job.executor_def.name for job in local.get_all_jobs()}
    celery = load_definitions_module(demo_dump_dir, monkeypatch, INGEST_EXECUTOR="celery")
    jobs = celery.get_repository_def().get_all_jobs()
    assert {job.name for job in jobs} >= {"ingest_shop_dump", "cdc_sync", "backup_warehouse"}
    assert {job.executor_def.name for job in jobs} == {"ingest_celery_executor"}


def test_a_process_without_google_credentials_is_told_what_to_set(monkeypatch, tmp_path):
    from ingest_platform.defs.resources import resources_from_env

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata server to ask
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login to find
    resource = resources_from_env({"INGEST_BQ_PROJECT": "acme-analytics"})["bigquery"]
    with pytest.raises(ConfigError, match="BigQuery: no Google credentials on host .*: set "):
        with resource.get_client():
            pass
