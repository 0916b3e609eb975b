"""Dagster's default run launcher, plus the health check that run monitoring needs.

The default launcher starts each run worker as a child process of the code server but cannot say
whether it is still alive, so run monitoring (dagster.yaml `run_monitoring`) skips STARTED runs:
a worker killed by the OOM killer, `kill -9` or a crashed launcher leaves its run "Started"
forever. The worker's pid is on the run's RUN_START event (every Dagster event records the pid
of the process that emitted it); when that process is gone, monitoring marks the run failed.
All of Dagster's processes run on this machine under `ingest-platform dev`, so a pid is local.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus


class LocalRunLauncher(dg.DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = _worker_pid(self._instance, run.run_id)
        if pid is None:  # launched, the worker has not reported yet: start_timeout covers it
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not reported yet")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"Run worker process {pid} is gone (killed or crashed).",
            run_worker_id=str(pid),
        )


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:  # a zombie has exited; its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
