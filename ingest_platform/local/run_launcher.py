"""Dagster's default run launcher, plus the health check that run monitoring needs.

The default launcher starts each run worker as a child process of the code server but cannot say
whether it is still alive, so run monitoring (dagster.yaml `run_monitoring`) skips STARTED runs:
a worker killed by the OOM killer, `kill -9` or a crashed launcher leaves its run "Started"
forever. The worker's pid is on the run's RUN_START event (every Dagster event records the pid
of the process that emitted it); when that process is gone, monitoring marks the run failed.
A pid means something only on its machine: runs are tagged with the host that launched them
(HOST_TAG), and a run of another host sharing the storage is left to that host's monitoring. A
run without the tag (one executed in process) is taken to be local.
"""

from __future__ import annotations

import os
import socket

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

HOST_TAG = "ingest_platform/host"


class LocalRunLauncher(dg.DefaultRunLauncher):
    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(HOST_TAG)
        if host is not None and host != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"a run of {host}: not checked here")
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
