"""`ingest-platform dev` and `services` as a user runs them: real processes, real servers."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import psycopg
import pytest

from ingest_platform.local.environment import MISSING
from ingest_platform.local.ports import free_port
from ingest_platform.local.services import INSTANCE_CONFIG
from ingest_platform.postgres.connection import to_url
from ingest_platform_tests.conftest import PROJECT_DIR

# Generous bounds so a slow machine does not fail the test; not timing assertions.
STARTUP_SECONDS = 120


class Launcher:
    """`python -m ingest_platform.local.cli ARGS` in its own session, output read line by line."""

    running: list[Launcher] = []  # stopped after each test, even a failed one

    def __init__(self, args: list[str], project, env: dict[str, str]):
        Launcher.running.append(self)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest_platform.local.cli", *args],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str) -> re.Match:
        while True:
            try:
                line = self.lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r}; output so far:\n{''.join(self.output)}"
                ) from None
            self.output.append(line)
            if match := re.search(pattern, line):
                return match

    def ctrl_c(self) -> int:
        """What a terminal's Ctrl-C does: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(STARTUP_SECONDS)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code


@pytest.fixture(autouse=True)
def stop_launchers():
    yield
    while Launcher.running:
        process = Launcher.running.pop().process
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def run_cli(args, project, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest_platform.local.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )


def exported(launcher: Launcher) -> dict[str, str]:
    env = {}
    launcher.wait_for(r"Export this environment")
    while True:
        line = launcher.wait_for(r"^export |Press Ctrl-C").string
        if not line.startswith("export "):
            return env
        key, value = line[len("export ") :].strip().split("=", 1)
        env[key] = value.strip("'")


def test_unreachable_dsn_is_named_and_fails_fast(project, clean_env):
    port = free_port()
    clean_env["INGEST_PG_DSN"] = (
        f"host=127.0.0.1 port={port} user=analyst password=s3cret dbname=warehouse"
    )
    result = run_cli(["services"], project, clean_env)
    assert result.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{port} does not answer" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_ingest_command_prints_a_summary_and_names_a_bad_dump(project, clean_env, pg_dsn):
    clean_env.update(INGEST_PG_DSN=pg_dsn, DAGSTER_PG_URL=to_url(pg_dsn))
    assert run_cli(["demo-dumps", "--rows", "150"], project, clean_env).returncode == 0
    result = run_cli(
        ["ingest", "dumps/shop_1.0-eu.zip", "dumps/shop_2.0-eu.zip"], project, clean_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"^order_item\s+150\s+.*shop\.order_item__v2\.0-eu.*rows_match_file ok", result.stdout, re.M
    )
    assert result.stdout.count("succeeded") == 2

    broken = project / "shop_3.0-eu.zip"
    broken.write_bytes((project / "dumps" / "shop_2.0-eu.zip").read_bytes()[:-100])
    result = run_cli(["ingest", str(broken)], project, clean_env)
    assert result.returncode == 1
    assert "shop_3.0-eu.zip" in result.stdout + result.stderr
    # A dump wrong in itself: one line before any run (was: Dagster's CheckError traceback).
    empty = project / "shop_4.0-eu.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    result = run_cli(["ingest", "--dialect", "mssql", str(empty)], project, clean_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ingest-platform: error: {empty}: holds no table schema (<table>.json, or the *.sql of "
        "dialect 'mssql'); is it a dump of this dialect?"
    ]
    assert "Loading" not in result.stdout
    with psycopg.connect(pg_dsn) as conn:
        assert dict(
            conn.execute("SELECT _version, count(*) FROM shop.orders GROUP BY 1").fetchall()
        ) == {"1.0-eu": 150, "2.0-eu": 150}


def test_ingest_runs_from_any_directory(tmp_path, clean_env, pg_dsn):
    """A pip-installed tool runs anywhere: no workspace.yaml or dagster.yaml in the cwd."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env.update(INGEST_PG_DSN=pg_dsn, DAGSTER_PG_URL=to_url(pg_dsn))
    clean_env["INGEST_STATE_DIR"] = str(elsewhere / ".ingest")
    assert run_cli(["demo-dumps", "--rows", "50"], elsewhere, clean_env).returncode == 0
    result = run_cli(["ingest", "dumps/shop_1.0-eu.zip"], elsewhere, clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert not (elsewhere / "workspace.yaml").exists()


def test_ingest_imports_no_bigquery_libraries(project, clean_env, pg_dsn):
    """`ingest` loads dumps only: dagster-gcp, the Google clients and pandas (over a second of
    imports) stay out of its process (defs/postgres_resources.py)."""
    clean_env.update(INGEST_PG_DSN=pg_dsn, DAGSTER_PG_URL=to_url(pg_dsn))
    assert run_cli(["demo-dumps", "--rows", "10"], project, clean_env).returncode == 0
    probe = (
        "import sys\n"
        "from ingest_platform.local.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(sorted(m for m in ('dagster_gcp', 'google.cloud.bigquery', 'pandas')"
        " if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, "ingest", "dumps/shop_2.0-eu.zip"],
        cwd=project,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_taken_ui_port_is_named(project, clean_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["dev", "--port", str(port)], project, clean_env)
    assert result.returncode == 1
    assert f"Port {port} for the Dagster UI is already taken" in result.stderr


def test_taken_emulator_port_is_named_when_configured(project, clean_env, pg_dsn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clean_env.update(INGEST_PG_DSN=pg_dsn, INGEST_BQ_EMULATOR_REST_PORT=str(port))
        result = run_cli(["services"], project, clean_env)
    assert result.returncode == 1
    assert f"Port {port} for the BigQuery emulator (REST) is already taken" in result.stderr


def test_embedded_services_start_persist_refuse_a_second_launcher_and_stop(project, clean_env):
    first = Launcher(["services"], project, clean_env)
    env = exported(first)
    assert set(env) == {
        "INGEST_PG_DSN",
        "DAGSTER_PG_URL",
        "INGEST_BQ_EMULATOR_HOST",
        "INGEST_BQ_EMULATOR_GRPC_HOST",
        "DAGSTER_HOME",
        "INGEST_DUMP_DIR",
        "INGEST_BACKUP_DIR",
    }
    assert env["INGEST_DUMP_DIR"] == str(project / "dumps")
    with psycopg.connect(env["INGEST_PG_DSN"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("warehouse",)
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('survives a restart')")
    with urllib.request.urlopen(
        f"http://{env['INGEST_BQ_EMULATOR_HOST']}/healthz", timeout=5
    ) as response:
        assert response.status == 200

    second = run_cli(["services"], project, clean_env)
    assert second.returncode == 1
    assert f"already running for this project (pid {first.process.pid}" in second.stderr

    assert first.ctrl_c() == 0
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(env["INGEST_PG_DSN"], connect_timeout=3)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{env['INGEST_BQ_EMULATOR_HOST']}/healthz", timeout=3)

    again = Launcher(["services"], project, clean_env)
    env = exported(again)
    with psycopg.connect(env["INGEST_PG_DSN"]) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("survives a restart",)]
    assert again.ctrl_c() == 0


def test_dev_serves_the_code_location_and_the_sensor_loads_dropped_dumps(
    project, clean_env, pg_dsn, bq_emulator
):
    clean_env.update(
        INGEST_PG_DSN=pg_dsn,
        DAGSTER_PG_URL=to_url(pg_dsn),
        INGEST_BQ_EMULATOR_HOST=bq_emulator.rest,
        INGEST_BQ_EMULATOR_GRPC_HOST=bq_emulator.grpc,
    )
    assert run_cli(["demo-dumps", "--rows", "100"], project, clean_env).returncode == 0
    dev = Launcher(["dev", "--port", str(free_port())], project, clean_env)
    try:
        ui = dev.wait_for(r"Dagster UI: (http://\S+)").group(1)
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }"
            " instance { info } }"
        )
        request = urllib.request.Request(
            f"{ui}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        while True:  # the code location loads a moment after the UI answers
            with urllib.request.urlopen(request, timeout=10) as response:
                data = json.load(response)["data"]
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["loadStatus"] == "LOADED":
                break
        assert entries[0]["name"] == "ingest_platform"
        assert "run_storage: PostgresRunStorage" in data["instance"]["info"]
        assert "event_log_storage: PostgresEventLogStorage" in data["instance"]["info"]
        # The sensor sees the demo dumps (complete: unchanged over two ticks) and runs one job per
        # version.
        deadline = time.monotonic() + 240
        loaded = {}
        while (
            loaded != {"1.0-eu": 100, "2.0-eu": 100, "1.0-us": 100, "2.0-us": 100}
            and time.monotonic() < deadline
        ):
            time.sleep(2)
            with psycopg.connect(pg_dsn) as conn:
                if conn.execute("SELECT to_regclass('shop.orders')").fetchone()[0]:
                    loaded = dict(
                        conn.execute(
                            "SELECT _version, count(*) FROM shop.orders GROUP BY 1"
                        ).fetchall()
                    )
        assert loaded == {"1.0-eu": 100, "2.0-eu": 100, "1.0-us": 100, "2.0-us": 100}
    finally:
        code = dev.ctrl_c()
    assert code == 0, "".join(dev.output)
    assert_each_record_once(dev.output)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{ui}/server_info", timeout=3)
    with psycopg.connect(pg_dsn) as conn:  # Dagster created its storage in the configured database
        assert conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone() == (True,)


def assert_each_record_once(output: list[str]) -> None:
    """No Dagster log record (timestamp aside) twice in the launcher's console."""
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output]
    records = [line.split(" - ", 1)[1] for line in plain if re.match(r"^\d{4}-\d\d-\d\d ", line)]
    assert len(records) > 5, "".join(output)
    repeated = {record for record in records if records.count(record) > 1}
    assert not repeated, repeated


SLEEPY_JOB = """
import time

import dagster as dg


@dg.op
def sleep_through_the_stop():
    time.sleep(600)


@dg.job
def sleepy():
    sleep_through_the_stop()


@dg.sensor(job=sleepy, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def never_ready():
    return dg.SkipReason("the source does not exist")  # the same reason at every tick


defs = dg.Definitions(jobs=[sleepy], sensors=[never_ready])
"""


def graphql(ui: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{ui}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


def processes_below(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of `root` (any session), from /proc."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            with open(f"/proc/{stat}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat))
        started[int(stat)] = fields[19]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def still_alive(processes: dict[int, str]) -> list[int]:
    alive = []
    for pid, start in processes.items():
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.append(pid)
    return alive


def test_ctrl_c_during_a_run_cancels_it_and_stops_every_process(project, clean_env, pg_dsn):
    (project / "sleepy.py").write_text(SLEEPY_JOB)
    (project / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: sleepy.py\n"
        "      location_name: sleepy\n"
    )
    clean_env.update(INGEST_PG_DSN=pg_dsn, DAGSTER_PG_URL=to_url(pg_dsn))
    dev = Launcher(["dev", "--port", str(free_port())], project, clean_env)
    ui = dev.wait_for(r"Dagster UI: (http://\S+)").group(1)
    launch = """
      mutation { launchRun(executionParams: {
          selector: {repositoryLocationName: "sleepy", repositoryName: "__repository__",
                     jobName: "sleepy"}}) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
    """
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:  # the code location loads a moment after the UI answers
        launched = graphql(ui, launch)["launchRun"]
        if launched["__typename"] == "LaunchRunSuccess" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = "{ runOrError(runId: $id) { ... on Run { status } } }"
    while graphql(ui, "query($id: ID!) " + status, {"id": run_id})["runOrError"][
        "status"
    ] != "STARTED" and (time.monotonic() < deadline):
        time.sleep(1)
    time.sleep(3)  # the op is sleeping in its run worker
    processes = processes_below(dev.process.pid)
    assert len(processes) >= 5, processes  # emulator, dagster dev, webserver, daemon, code server

    assert dev.ctrl_c() == 0, "".join(dev.output)
    output = "".join(dev.output)
    assert still_alive(processes) == [], output
    with psycopg.connect(pg_dsn) as conn:
        (final,) = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        (skips,) = conn.execute(
            "SELECT count(*) FROM job_ticks WHERE status = 'SKIPPED'"
        ).fetchone()
    assert skips >= 2  # Dagster logged the same skip reason several times: the launcher showed one
    assert final in ("CANCELED", "FAILED"), output
    # The console says what matters once: no Dagster log record twice, no `dg dev` advert, and
    # no storage retries after the services stopped.
    assert_each_record_once(dev.output)
    assert "Sensor never_ready skipped: the source does not exist" in output
    assert "dg dev" not in output
    assert "Retrying failed database connection" not in output


def dagster_command(args, project, env) -> subprocess.CompletedProcess:
    """The venv's `dagster` console script, as a user types it in the project directory."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )


def without_dagsters_own_advert(stderr: str) -> list[str]:
    """Dagster's CLI warns that `dg launch` supersedes it and, on its first run in a home
    directory, prints its telemetry notice (both before any of our code runs)."""
    lines = stderr.splitlines()
    if "Welcome to Dagster!" in stderr:  # the notice ends with its Slack link
        lines = lines[max(i for i, line in enumerate(lines) if "https://bit.ly/" in line) + 1 :]
    return [
        line
        for line in lines
        if line.strip() and "SupersessionWarning" not in line and "return callback(" not in line
    ]


def test_plain_dagster_without_the_platform_environment_stops_in_one_line(project, clean_env):
    result = dagster_command(
        ["asset", "materialize", "-m", "ingest_platform.definitions", "--select", "cdc/*"],
        project,
        clean_env,
    )
    assert result.returncode == 1
    assert without_dagsters_own_advert(result.stderr) == [MISSING], result.stderr
    assert "ingest-platform dev" in MISSING and "ingest-platform services" in MISSING


@pytest.mark.parametrize("command", [["dev", "--port", "0"], ["launch", "--assets", "cdc/*"]])
def test_dg_without_the_platform_environment_stops_in_one_line(project, clean_env, command):
    """`dg dev` / `dg launch` stop before Dagster starts: no code server, no traceback."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), *command],
        cwd=PROJECT_DIR,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [MISSING], result.stderr
    assert "Launching Dagster services" not in result.stdout


def test_plain_dagster_with_the_platform_environment_materializes(
    project, clean_env, pg_dsn, monkeypatch
):
    """`dagster asset materialize` in the project directory, with the environment that
    `ingest-platform services` exports: a dump version loads."""
    import dagster as dg

    assert run_cli(["demo-dumps", "--rows", "30"], project, clean_env).returncode == 0
    home = project / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    clean_env.update(
        INGEST_PG_DSN=pg_dsn,
        DAGSTER_PG_URL=to_url(pg_dsn),
        DAGSTER_HOME=str(home),
        INGEST_DUMP_DIR=str(project / "dumps"),
    )
    monkeypatch.setenv("DAGSTER_PG_URL", clean_env["DAGSTER_PG_URL"])
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what the sensor does first
        instance.add_dynamic_partitions("shop_versions", ["1.0-eu"])
    result = dagster_command(
        [
            "asset",
            "materialize",
            "-m",
            "ingest_platform.definitions",
            "--select",
            # Every table of the version: a version becomes visible whole.
            "dumps/shop/customer,dumps/shop/orders",
            "--partition",
            "1.0-eu",
        ],
        project,
        clean_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM shop.customer").fetchone() == (30,)
