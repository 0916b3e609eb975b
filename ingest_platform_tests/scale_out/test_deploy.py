"""deploy/docker-compose.yaml is valid for Docker Compose and has the services the README names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def test_the_compose_file_validates_and_every_step_runner_shares_the_dumps():
    done = subprocess.run(
        [*compose_command(), "-f", str(DEPLOY / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "not-a-real-one"},
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {
        "postgres",
        "rabbitmq",
        "code",
        "webserver",
        "daemon",
        "worker-1",
        "worker-2",
    }
    for name in ("code", "daemon", "worker-1", "worker-2"):
        environment = services[name]["environment"]
        assert environment["INGEST_EXECUTOR"] == "celery"
        assert any("/data/dumps" in str(volume) for volume in services[name]["volumes"])
    assert "not-a-real-one" not in (DEPLOY / "docker-compose.yaml").read_text()


def test_without_the_password_compose_refuses_to_start():
    done = subprocess.run(
        [*compose_command(), "-f", str(DEPLOY / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD" in done.stderr
