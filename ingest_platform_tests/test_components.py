"""The components in ingest_platform/defs_yaml: the same definitions as the builders, and `dg`."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ingest_platform import defs_yaml
from ingest_platform.api.config import api_config_from_env
from ingest_platform.cdc.config import cdc_config_from_env
from ingest_platform.defs.api import build_api_definitions
from ingest_platform.defs.backup import BackupSettings, build_backup_definitions
from ingest_platform.defs.bigquery_mirror import build_mirror_definitions
from ingest_platform.defs.cdc import build_cdc_definitions
from ingest_platform.defs.dumps import build_dump_definitions
from ingest_platform.demo.dumps import write_demo_dumps
from ingest_platform.dumps.directory import scan_dump_dir
from ingest_platform.local.services import INSTANCE_CONFIG
from ingest_platform.postgres.connection import to_url

PROJECT_DIR = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).with_name("dg")
# What the components export (defs/components/settings.py): monkeypatch restores them.
EXPORTED = (
    "INGEST_DUMP_DIR",
    "INGEST_DUMP_DIALECT",
    "INGEST_DUMP_SCHEMA_PREFIX",
    "INGEST_LOAD_PROCESSES",
    "INGEST_BQ_DATASET_PREFIX",
)


@pytest.fixture(scope="module")
def demo_dumps(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dumps")
    write_demo_dumps(directory, rows=5)
    return directory


@pytest.fixture
def dump_env(monkeypatch, demo_dumps):
    for name in EXPORTED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INGEST_DUMP_DIR", str(demo_dumps))
    for name in ("INGEST_CDC_CONFIG", "INGEST_CDC_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    yield
    for name in EXPORTED:  # set by the components during the test
        monkeypatch.delenv(name, raising=False)


def _names(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    return {
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(str(key) for key in graph.asset_check_keys),
        "jobs": sorted(job.name for job in repo.get_all_jobs() if not job.name.startswith("__")),
        "sensors": sorted(sensor.name for sensor in repo.sensor_defs),
    }


def test_the_default_yaml_makes_what_the_builders_make_for_the_demo_dumps(dump_env, demo_dumps):
    from ingest_platform.defs.resources import resources_from_env

    loaded = dg.ComponentTree.from_module(
        defs_module=defs_yaml, project_root=PROJECT_DIR
    ).build_defs()
    catalog, cdc = scan_dump_dir(demo_dumps), cdc_config_from_env()
    built = dg.Definitions.merge(
        build_api_definitions(api_config_from_env({})),
        build_dump_definitions(catalog),
        build_cdc_definitions(cdc),
        build_mirror_definitions(
            catalog,
            cdc_tables=cdc.tables,
            cdc_schema=cdc.warehouse_schema,
            cdc_histories=True,
        ),
        build_backup_definitions(BackupSettings("warehouse", "backups"), "INGEST_PG_DSN"),
    )
    resources = dg.Definitions(resources=resources_from_env())
    expected = _names(dg.Definitions.merge(built, resources))
    assert _names(dg.Definitions.merge(loaded, resources)) == expected
    assert "dumps/shop/order_item" in expected["assets"]
    assert "bigquery/cdc/pm_plan" in expected["assets"]
    assert "bigquery/cdc/pm_plan__changes" in expected["assets"]


def test_a_logical_cdc_config_mirrors_its_change_histories(dump_env, monkeypatch, tmp_path):
    config = tmp_path / "cdc.toml"
    config.write_text(
        'kind = "logical"\n[logical]\nslot = "s"\npublication = "p"\n'
        '[[tables]]\nsource_table = "doc"\n'
    )
    monkeypatch.setenv("INGEST_CDC_CONFIG", str(config))
    from ingest_platform.defs.resources import resources_from_env

    loaded = dg.ComponentTree.from_module(
        defs_module=defs_yaml, project_root=PROJECT_DIR
    ).build_defs()
    names = _names(dg.Definitions.merge(loaded, dg.Definitions(resources=resources_from_env())))
    assert {"bigquery/cdc/doc", "bigquery/cdc/doc__changes"} <= set(names["assets"])


def _project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "workspace.yaml"):
        shutil.copyfile(PROJECT_DIR / name, project / name)
    shutil.copytree(
        PROJECT_DIR / "ingest_platform",
        project / "ingest_platform",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return project


@pytest.fixture
def dg_project(tmp_path, pg_dsn, demo_dumps):
    """A copy of the project and the environment the launcher sets (plain `dg` in a shell)."""
    project = _project_copy(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    env.update(
        PYTHONPATH=str(project),
        PATH=f"{DG.parent}{os.pathsep}{env.get('PATH', '')}",
        INGEST_PG_DSN=pg_dsn,
        DAGSTER_PG_URL=to_url(pg_dsn),
        DAGSTER_HOME=str(home),
        INGEST_DUMP_DIR=str(demo_dumps),
    )
    return project, env


def _dg(args: list[str], project: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(DG), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_dg_check_list_and_scaffold_defs(dg_project):
    project, env = dg_project
    assert "All definitions loaded successfully" in _dg(["check", "defs"], project, env).stdout
    listed = json.loads(_dg(["list", "defs", "--json"], project, env).stdout)
    keys = {asset["asset_key"] for asset in listed["assets"]}
    assert {"dumps/shop/orders", "cdc/project", "bigquery/shop/orders"} <= keys
    assert "dump_directory_sensor" in {sensor["name"] for sensor in listed["sensors"]}

    # A new dump directory component: scaffolded in place of the shipped one, then configured.
    shutil.rmtree(project / "ingest_platform/defs_yaml/dumps")
    _dg(
        ["scaffold", "defs", "ingest_platform.defs.components.DumpDirectoryComponent", "dumps"],
        project,
        env,
    )
    scaffolded = project / "ingest_platform/defs_yaml/dumps/defs.yaml"
    assert "type: ingest_platform.defs.components.DumpDirectoryComponent" in scaffolded.read_text()
    scaffolded.write_text(
        "type: ingest_platform.defs.components.DumpDirectoryComponent\n"
        f"attributes:\n  directory: {env['INGEST_DUMP_DIR']}\n  schema_prefix: raw_\n"
    )
    _dg(["check", "defs"], project, env)
    listed = json.loads(_dg(["list", "defs", "--json"], project, env).stdout)
    orders = next(a for a in listed["assets"] if a["asset_key"] == "dumps/shop/orders")
    assert "raw_shop.orders" in orders["description"]

    # A wrong attribute is named by `dg check defs`.
    scaffolded.write_text(
        "type: ingest_platform.defs.components.DumpDirectoryComponent\n"
        "attributes:\n  directry: dumps\n"
    )
    bad = subprocess.run(
        [str(DG), "check", "defs"], cwd=project, env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "directry" in bad.stdout + bad.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rows(pg_dsn: str, table: str) -> dict:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        if not conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:
            return {}
        return dict(conn.execute(f"SELECT _version, count(*) FROM {table} GROUP BY 1").fetchall())


def _wait_for_rows(pg_dsn: str, table: str, expected: dict, dev, seconds: float = 300) -> None:
    import time

    deadline = time.monotonic() + seconds
    while _rows(pg_dsn, table) != expected:
        assert dev.poll() is None, "dagster dev exited"
        assert time.monotonic() < deadline, f"{table}: {_rows(pg_dsn, table)} != {expected}"
        time.sleep(2)


def test_a_dump_with_a_new_table_loads_without_a_reload_click(tmp_path, pg_dsn, bq_emulator):
    """Real `dagster dev`: version 1.0 (no order_item) loads; then 2.0 arrives with the new table
    order_item, and the sensor reloads the code location itself and loads it."""
    import signal

    written = tmp_path / "written"
    write_demo_dumps(written, rows=5)
    watched = tmp_path / "dumps"
    watched.mkdir()
    shutil.copyfile(written / "shop_1.0-eu.zip", watched / "shop_1.0-eu.zip")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("workspace.yaml",):
        shutil.copyfile(PROJECT_DIR / name, project / name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    env.update(
        PYTHONPATH=str(PROJECT_DIR),
        INGEST_PG_DSN=pg_dsn,
        DAGSTER_PG_URL=to_url(pg_dsn),
        DAGSTER_HOME=str(home),
        INGEST_DUMP_DIR=str(watched),
        INGEST_DAGSTER_URL=f"http://127.0.0.1:{port}",
        INGEST_BQ_EMULATOR_HOST=bq_emulator.rest,
        INGEST_BQ_EMULATOR_GRPC_HOST=bq_emulator.grpc,
    )
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_rows(pg_dsn, "shop.orders", {"1.0-eu": 5}, dev)
        assert _rows(pg_dsn, "shop.order_item") == {}
        shutil.copyfile(written / "shop_2.0-eu.zip", watched / "shop_2.0-eu.zip")
        _wait_for_rows(pg_dsn, "shop.order_item", {"2.0-eu": 5}, dev)
        # The same run loads the version's other tables; its steps run one after another.
        _wait_for_rows(pg_dsn, "shop.orders", {"1.0-eu": 5, "2.0-eu": 5}, dev)
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            pass
        # Plain `dagster dev` leaves the gRPC servers of replaced code locations behind (they
        # ignore SIGTERM): end the whole session's group, as `ingest-platform dev` does.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
        dev.wait()
        log.close()
    assert "Reloading code location ingest_platform" in (tmp_path / "dev.log").read_text()
