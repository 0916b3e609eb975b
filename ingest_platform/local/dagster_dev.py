"""`dagster dev` under the launcher: its console de-duplicated, a stop that leaves nothing behind.

Stop order (Ctrl-C or SIGTERM on the launcher):
1. in-flight runs are cancelled through the instance (queued ones dequeued, started ones
   terminated by the run launcher) and given RUN_CANCEL_SECONDS to finish;
2. `dagster dev` gets SIGINT and DAGSTER_SHUTDOWN_SECONDS to stop the webserver and daemon;
3. whatever is left of Dagster's process group (code servers, their gRPC servers, run workers)
   gets SIGTERM, then SIGKILL after KILL_GRACE_SECONDS;
4. a run still not finished has lost its worker: it is marked canceled, not left "Started";
5. only then the caller stops the services (PostgreSQL, emulator) under them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

DAGSTER_SHUTDOWN_SECONDS = 30
RUN_CANCEL_SECONDS = 30
KILL_GRACE_SECONDS = 5

# Dagster's console lines: "2026-01-01 12:00:00 +0000 - dagster.daemon.SensorDaemon - INFO - ..."
# (the timestamp and level in ANSI colours when Dagster's console is coloured).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?[+-]\d\d:?\d\d)? - ")


def start_dagster_dev(workspace: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`dagster dev -w workspace` in its own session (a process group the launcher can stop)."""
    command = [
        sys.executable,
        # Only in this supervisor process: `dagster dev` warns at every start that `dg dev`
        # supersedes it; `dg dev` runs the same webserver and daemon, so the warning is noise.
        "-W",
        "ignore::FutureWarning",
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace),
        *args,
    ]
    # Run from DAGSTER_HOME: from the project directory Dagster warns that its dagster.yaml is
    # unused. Its own session: Ctrl-C reaches only the launcher, which stops Dagster in order.
    return subprocess.Popen(
        command,
        env=env,
        cwd=env["DAGSTER_HOME"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )


def copy_console_once(lines: Iterable[str], out: IO[str]) -> None:
    """Copy Dagster's console, each log record (and its continuation lines) only the first time.

    A record is compared without its timestamp: a sensor that skips every 15 s for the same
    reason says so once, not 240 times an hour. The full history stays in the run and tick logs.
    """
    seen: set[str] = set()
    showing = True
    for line in lines:
        plain = _ANSI.sub("", line)
        if match := _LOG_RECORD.match(plain):
            record = plain[match.end() :].rstrip()
            showing = record not in seen
            seen.add(record)
        if showing:
            out.write(line)
            out.flush()


def relay_console(dagster: subprocess.Popen, out: IO[str] = sys.stdout) -> threading.Thread:
    assert dagster.stdout is not None
    thread = threading.Thread(target=copy_console_once, args=(dagster.stdout, out), daemon=True)
    thread.start()
    return thread


def stop_dagster(dagster: subprocess.Popen, sig: int, say: Callable[[str], None]) -> int:
    """Cancel in-flight runs, stop `dagster dev`, then every process left in its group. 0 when
    Dagster stopped in time: its own exit status after a signal says only whether its children
    (terminated run workers, say) exited cleanly, which an ordered stop does not ask of them."""
    instance = _open_instance(say)
    try:
        if instance is not None:
            _cancel_runs(instance, say)
        dagster.send_signal(sig)
        try:
            dagster.wait(DAGSTER_SHUTDOWN_SECONDS)
            code = 0
        except subprocess.TimeoutExpired:
            say(f"Dagster did not stop within {DAGSTER_SHUTDOWN_SECONDS}s; stopping it.")
            code = 1
        _stop_group(dagster.pid, say)
        dagster.wait()
        if instance is not None:
            _mark_orphaned_runs(instance, say)
    finally:
        if instance is not None:
            instance.dispose()
    return code


def _open_instance(say):
    from dagster import DagsterInstance

    try:
        return DagsterInstance.get()
    except Exception as exc:  # stopping must go on without it
        say(f"Could not open the Dagster instance to cancel runs: {exc}")
        return None


def _in_flight(instance) -> list:
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
        DagsterRunStatus.CANCELING,
    ]
    return list(instance.get_runs(filters=RunsFilter(statuses=statuses)))


def _cancel_runs(instance, say) -> None:
    runs = _in_flight(instance)
    if not runs:
        return
    say(f"Cancelling {len(runs)} run(s) in flight (up to {RUN_CANCEL_SECONDS}s) ...")
    for run in runs:
        try:  # the coordinator dequeues a queued run and has the launcher terminate a started one
            instance.run_coordinator.cancel_run(run.run_id)
        except Exception as exc:  # a dead code server: the run is marked after the stop
            say(f"Run {run.run_id} could not be terminated ({exc}).")
    deadline = time.monotonic() + RUN_CANCEL_SECONDS
    while _in_flight(instance) and time.monotonic() < deadline:
        time.sleep(0.5)


def _mark_orphaned_runs(instance, say) -> None:
    for run in _in_flight(instance):
        say(f"Run {run.run_id} lost its process: marked canceled.")
        instance.report_run_canceled(
            run, "Canceled: its process was stopped with ingest-platform dev."
        )


def _stop_group(pgid: int, say) -> None:
    """SIGTERM to what is left of Dagster's process group, SIGKILL after a grace period."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        say("Dagster processes still running after SIGTERM; killing them.")
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _members_alive(pgid)


def _members_alive(pgid: int) -> bool:
    """Zombies (exited, not yet reaped by a dead parent) count as gone."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
