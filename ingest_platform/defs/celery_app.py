"""The Celery app a worker runs (`ingest-platform worker`, or `celery -A
ingest_platform.defs.celery_app worker`): dagster-celery's step task, on the broker and with the
settings of `defs/executor.py`, listening on the queues named in `INGEST_CELERY_QUEUE`
(comma-separated; default `dagster`)."""

from __future__ import annotations

import multiprocessing
import os

from celery.signals import worker_process_init
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Queue

from ingest_platform.defs.executor import DEFAULT_QUEUE, QUEUE_ENV, celery_app_args

app = make_app(celery_app_args())
# dagster-celery routes a step of queue Q with routing key "Q.execute_plan" and declares only its
# own queue: a worker of another queue declares it the same way.
app.conf.task_queues = [
    Queue(name, routing_key=f"{name}.#", queue_arguments={"x-max-priority": 10})
    for name in (os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE).split(",")
]
execute_plan = create_task(app)


@worker_process_init.connect
def _allow_copy_workers(**_) -> None:
    """A step's COPY I/O manager starts worker processes (spawned) in Celery's pool process,
    which billiard made daemonic (a daemonic process may not start processes) and gave an
    authentication key of billiard's type (which `spawn` cannot pickle)."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    config["daemon"] = False
    config["authkey"] = multiprocessing.process.AuthenticationString(os.urandom(32))  # type: ignore[attr-defined]
