"""Where a job's steps run: in the run's own process (the default), or on Celery workers.

`INGEST_EXECUTOR=celery` puts every step of the platform's jobs on `dagster-celery` workers
(`ingest-platform worker`), through the broker named by `INGEST_CELERY_BROKER`
(`pyamqp://guest@host//` for RabbitMQ, `redis://host:6379/0` for Redis). The URL is read from the
environment when a run starts, on the launching side, and when a worker starts: it holds a
password, so it never enters run config, the job's snapshot or the UI.

Why these Celery settings: a step's task is acknowledged only when it has finished
(`task_acks_late`), and a worker process that dies mid-step hands the task back to the broker
(`task_reject_on_worker_lost`), which gives it to another worker; each worker takes one task at a
time (`worker_prefetch_multiplier`), so a busy worker does not sit on queued steps. A re-run step
converges because every write it makes is atomic (a version attach, a CDC merge, a BigQuery
commit): the step that died left nothing visible.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import dagster as dg

from ingest_platform.errors import ConfigError

EXECUTOR_ENV = "INGEST_EXECUTOR"
BROKER_ENV = "INGEST_CELERY_BROKER"
BACKEND_ENV = "INGEST_CELERY_BACKEND"
# Redis hands an unacknowledged task to another worker only after this many seconds: longer
# than the longest step, or a slow step runs twice (RabbitMQ notices a dead worker at once).
VISIBILITY_ENV = "INGEST_CELERY_VISIBILITY_TIMEOUT"
# The queue steps go to (dagster-celery's `dagster` unless set; a step's `dagster-celery/queue` tag
# picks another); a worker listens on it, or on the comma-separated queues it names.
QUEUE_ENV = "INGEST_CELERY_QUEUE"
DEFAULT_QUEUE = "dagster"


def executor_kind(environ: Mapping[str, str] = os.environ) -> str:
    """`INGEST_EXECUTOR`: unset (each job's own: one process, or Dagster's default),
    `multiprocess` (a process per step on this machine) or `celery` (steps on workers)."""
    value = (environ.get(EXECUTOR_ENV) or "").strip().lower()
    if value in ("", "in_process", "multiprocess", "celery"):
        return value or "in_process"
    raise ConfigError(
        f"{EXECUTOR_ENV}={value!r}: use 'celery', 'multiprocess' or leave it unset (in-process)."
    )


def celery_app_args(environ: Mapping[str, str] = os.environ) -> dict:
    """`celery.Celery(...)` arguments, the same on the launching side and on the workers."""
    from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper

    broker = environ.get(BROKER_ENV)
    if not broker:
        raise ConfigError(
            f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, e.g. pyamqp://guest@127.0.0.1// "
            "(RabbitMQ) or redis://127.0.0.1:6379/0."
        )
    # RabbitMQ returns results over the broker itself; Redis keeps them in Redis.
    backend = environ.get(BACKEND_ENV) or (broker if broker.startswith("redis") else "rpc://")
    transport: dict = {**DEFAULT_CONFIG["broker_transport_options"]}  # type: ignore[dict-item]
    if broker.startswith("redis"):
        transport["visibility_timeout"] = int(environ.get(VISIBILITY_ENV) or 3600)
    settings = {
        **DEFAULT_CONFIG,
        "broker_transport_options": transport,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_extended": True,
        "task_default_queue": (environ.get(QUEUE_ENV) or DEFAULT_QUEUE).split(",")[0],
    }
    return {
        "broker": broker,
        "backend": backend,
        "include": [],
        "config_source": dict_wrapper(settings),
    }


@dg.executor(
    name="ingest_celery_executor", requirements=dg.multiple_process_executor_requirements()
)
def ingest_celery_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Steps on dagster-celery workers; the broker from INGEST_CELERY_BROKER at run start."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor

    # dagster-celery registers its task again for each step it submits; Celery warns each time.
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    args = celery_app_args()
    # Dagster's own retries (a step's RetryPolicy) stay on; a worker's death is Celery's to
    # redeliver (see the module's docstring).
    return CeleryExecutor(
        retries=RetryMode.ENABLED,
        broker=args["broker"],
        backend=args["backend"],
        config_source=vars(args["config_source"]),
    )


def platform_executor(
    default: dg.ExecutorDefinition | None = dg.in_process_executor,
    environ: Mapping[str, str] = os.environ,
) -> dg.ExecutorDefinition | None:
    """The executor of a platform job: as `INGEST_EXECUTOR` says, else `default`."""
    kind = executor_kind(environ)
    if kind == "celery":
        return ingest_celery_executor
    return dg.multiprocess_executor if kind == "multiprocess" else default


# Dagster concurrency pools (limits in the instance: `concurrency.pools` in dagster.yaml, or
# `dagster instance concurrency set POOL N`): steps that write to the warehouse's PostgreSQL server,
# and steps that write to BigQuery, whichever process or worker runs them.
POSTGRES_WRITERS = "ingest_postgres_writers"
BIGQUERY_WRITERS = "ingest_bigquery_writers"
RETRIES_ENV = "INGEST_STEP_RETRIES"


def step_retry_policy(environ: Mapping[str, str] = os.environ) -> dg.RetryPolicy | None:
    """Retries of a failed writing step (`INGEST_STEP_RETRIES`, default 0): a connection lost to
    a restarting server, say. Safe because each write is atomic; a bad dump fails every try."""
    retries = int(environ.get(RETRIES_ENV) or 0)
    return dg.RetryPolicy(max_retries=retries, delay=5) if retries > 0 else None
