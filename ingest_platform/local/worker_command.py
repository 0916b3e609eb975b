"""`ingest-platform worker [--queue Q] [--concurrency N]`: a Celery worker that runs the steps of
runs launched with `INGEST_EXECUTOR=celery` (``defs/executor.py``).

It runs in the environment it is started in, which must be the project's: the same
`INGEST_CELERY_BROKER`, `DAGSTER_HOME` (an instance whose storage the launching side shares:
PostgreSQL, as `ingest-platform dev` configures it), `INGEST_PG_DSN` and the other settings
`ingest-platform services` prints, and the dump directory at the same path (shared storage). A
step checks what it reads at its start and names what is missing on which host.
"""

from __future__ import annotations

import os
import socket

from ingest_platform.defs.executor import BROKER_ENV, DEFAULT_QUEUE, QUEUE_ENV, celery_app_args
from ingest_platform.errors import ConfigError
from ingest_platform.local.environment import MISSING


def register(subparsers, say) -> None:
    worker = subparsers.add_parser(
        "worker", help="run a Celery worker for steps of runs with INGEST_EXECUTOR=celery"
    )
    worker.add_argument(
        "--queue", help=f"queue(s), comma-separated (default ${QUEUE_ENV} or {DEFAULT_QUEUE})"
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="steps at once (default 1: one per worker)"
    )
    worker.add_argument("--name", help=f"worker name (default ingest-<pid>@{socket.gethostname()})")
    worker.set_defaults(run=lambda options: run_worker(options, say))


def run_worker(options, say) -> int:
    if not os.environ.get("INGEST_PG_DSN"):
        raise ConfigError(MISSING.removeprefix("ingest-platform: "))  # main() adds the prefix
    celery_app_args()  # a missing broker is named before Celery starts
    if options.concurrency < 1:
        raise ConfigError(f"--concurrency {options.concurrency}: give 1 or more.")
    queue = options.queue or os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE
    os.environ[QUEUE_ENV] = queue
    from ingest_platform.defs.celery_app import app  # reads QUEUE_ENV

    name = options.name or f"ingest-{os.getpid()}@{socket.gethostname()}"
    say(f"worker {name}: queue {queue}, {options.concurrency} at once, broker from {BROKER_ENV}")
    app.worker_main(
        [
            "worker",
            f"--hostname={name}",
            f"--concurrency={options.concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
