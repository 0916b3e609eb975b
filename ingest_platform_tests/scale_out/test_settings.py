"""Wrong Celery settings stop with one line saying what to set, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ingest_platform.defs.executor import celery_app_args, executor_kind
from ingest_platform.errors import ConfigError


def test_an_unknown_executor_is_named_with_the_choices():
    with pytest.raises(ConfigError, match=r"INGEST_EXECUTOR='k8s': use 'celery', 'multiprocess'"):
        executor_kind({"INGEST_EXECUTOR": "k8s"})
    assert executor_kind({}) == "in_process"


def test_celery_without_a_broker_says_which_variable_and_gives_examples():
    with pytest.raises(ConfigError, match=r"needs INGEST_CELERY_BROKER, e\.g\. pyamqp://"):
        celery_app_args({"INGEST_EXECUTOR": "celery"})


def test_a_redis_broker_keeps_results_in_redis_and_a_visibility_timeout():
    args = celery_app_args({"INGEST_CELERY_BROKER": "redis://127.0.0.1:6379/0"})
    assert args["backend"] == "redis://127.0.0.1:6379/0"
    assert args["config_source"].broker_transport_options["visibility_timeout"] == 3600
    assert celery_app_args({"INGEST_CELERY_BROKER": "pyamqp://x//"})["backend"] == "rpc://"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INGEST_PG_DSN": "host=127.0.0.1"}, "INGEST_EXECUTOR=celery needs INGEST_CELERY_BROKER"),
        ({"INGEST_CELERY_BROKER": "pyamqp://guest:s3cret@h//"}, "INGEST_PG_DSN is not set"),
    ],
)
def test_the_worker_command_refuses_to_start_without_the_project_environment(env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "ingest_platform.local.cli", "worker"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"ingest-platform: error: {message.split()[0]}")
    assert message in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
