"""`ingest-platform`: run the platform locally.

ingest-platform dev [dagster dev options]   services + `dagster dev -w workspace.yaml`
ingest-platform services                    services only; prints the environment to export
ingest-platform ingest PATH...              load dumps through Dagster and print a summary
ingest-platform demo-dumps [DIR]            write sample dumps (default DIR: INGEST_DUMP_DIR)
ingest-platform demo-app                    create the CDC demo source and write changes to it
ingest-platform cdc sync [--config FILE]    one CDC run of every tracked table; prints a table
ingest-platform proto SCHEMA.TABLE          write the .proto of a table's BigQuery mirror rows
ingest-platform migrate plan|schema|data|verify --source DSN --target DSN   move a database
ingest-platform import-csv SCHEMA.TABLE FILE...   import CSV files with type/key/FK checks
ingest-platform demo-hr                     create the HR demo source and its historical CSVs
ingest-platform backup --source DSN --to DIR [--format parquet|avro]   back up to files
ingest-platform restore DIR --target DSN [--replace]   restore a backup and prove it
ingest-platform fetch --config FILE [--source NAME] [--incremental]   pull source databases
ingest-platform api [--host --port]         REST intake API; api user add|grant|remove|list
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ingest_platform.defs.executor import executor_kind
from ingest_platform.dumps.directory import dump_dir
from ingest_platform.errors import IngestError
from ingest_platform.local.api_command import register as register_api
from ingest_platform.local.api_command import start_api_beside_dagster
from ingest_platform.local.backup_command import register as register_backup
from ingest_platform.local.cdc_command import register as register_cdc
from ingest_platform.local.cdc_sync_command import register as register_cdc_sync
from ingest_platform.local.dagster_dev import relay_console, start_dagster_dev, stop_dagster
from ingest_platform.local.fetch_command import register as register_fetch
from ingest_platform.local.migrate_command import register as register_migrate
from ingest_platform.local.ports import choose_port
from ingest_platform.local.project_lock import ProjectLock
from ingest_platform.local.proto_command import register as register_proto
from ingest_platform.local.services import RunningServices, start_services, state_dir
from ingest_platform.local.worker_command import register as register_worker

# Further commands: each `register(subparsers, say)` adds one with
# `set_defaults(run=function(options) -> int)`.
COMMANDS = [
    register_fetch,
    register_cdc,
    register_cdc_sync,
    register_proto,
    register_migrate,
    register_backup,
    register_api,
    register_worker,
]


class StopRequested(KeyboardInterrupt):
    """SIGTERM: stop as cleanly as on Ctrl-C. Unlike Ctrl-C it reached only this process."""


def _on_sigterm(signum, frame) -> None:
    raise StopRequested()


def say(message: str) -> None:
    print(f"[ingest-platform] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    # When the process ends, the interpreter's final garbage collections walk every object Dagster
    # created (seconds on a busy machine); the memory goes back to the OS whole anyway.
    atexit.register(gc.freeze)
    parser = argparse.ArgumentParser(
        prog="ingest-platform",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser(
        "dev",
        help="start services and the Dagster UI; other options go to `dagster dev`",
        add_help=False,
    )
    dev.set_defaults(run=None)  # takes the unparsed rest
    commands.add_parser(
        "services", help="start services only and print the environment to export"
    ).set_defaults(run=lambda options: run_services())
    ingest = commands.add_parser(
        "ingest", help="load dump files through Dagster (the sensor's job) and print a summary"
    )
    ingest.set_defaults(run=run_ingest)
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument(
        "--dialect", help="mssql, mysql, csv or a dialect .toml (overrides the manifest)"
    )
    ingest.add_argument("--app", help="application name (overrides the manifest and the file name)")
    ingest.add_argument("--version", help="version (overrides the manifest and the file name)")
    demo = commands.add_parser(
        "demo-dumps", help="write sample dumps of one application at two versions, two dialects"
    )
    demo.add_argument("directory", nargs="?", type=Path, help="default: INGEST_DUMP_DIR (./dumps)")
    demo.add_argument(
        "--rows", type=int, default=10_000, help="rows per main table (default 10000)"
    )
    demo.set_defaults(
        run=lambda options: run_demo_dumps(options.directory or dump_dir(), options.rows)
    )
    for register in COMMANDS:
        register(commands, say)
    options, passthrough = parser.parse_known_args(argv)
    if passthrough and options.command != "dev":
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A shell that starts us in the background ignores SIGINT, and children inherit that: Dagster's
    # processes would then ignore the SIGINT its own shutdown sends them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if options.command == "dev":
            return run_dev(passthrough)
        return options.run(options)
    except IngestError as exc:
        print(f"ingest-platform: error: {exc}", file=sys.stderr)
        return 1


def _project_dir() -> Path:
    """`dev` serves the project's workspace.yaml: it runs in the project directory."""
    project = Path.cwd()
    if not (project / "workspace.yaml").exists():
        raise IngestError(
            f"workspace.yaml not found in {project}: run `ingest-platform dev` from the "
            "project directory."
        )
    return project


def _project_dir_if_any() -> Path | None:
    return Path.cwd() if (Path.cwd() / "workspace.yaml").exists() else None


def run_services() -> int:
    lock = ProjectLock(state_dir())
    lock.acquire("ingest-platform services")
    services = None
    try:
        services = start_services(_project_dir_if_any(), say=say)
        say("Services are up. Export this environment in the shell where you run `dagster dev`:")
        _print_environment(services)
        say("Press Ctrl-C to stop the services.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("Stopping ...")
    finally:
        if services:
            services.stop()
        lock.release()
    return 0


def run_ingest(options) -> int:
    missing = [str(p) for p in options.paths if not p.is_file()]
    if missing:
        raise IngestError(f"No such dump file: {', '.join(missing)}")
    # Anywhere: the instance config ships with the package; state goes to INGEST_STATE_DIR.
    services = start_services(_project_dir_if_any(), say=say, bigquery=False)
    try:
        os.environ.update(services.env)
        from ingest_platform.local.ingest_command import (
            ingest_dumps,
        )  # loads Dagster: only when needed

        return ingest_dumps(options.paths, options.dialect, options.app, options.version, say)
    finally:
        services.stop()


def run_demo_dumps(directory: Path, rows: int) -> int:
    from ingest_platform.demo.dumps import write_demo_dumps

    for path in write_demo_dumps(directory, rows):
        say(f"wrote {path}")
    say(
        f"Load them with `ingest-platform ingest {directory}/*.zip`, or let the sensor pick them "
        "up when they are in INGEST_DUMP_DIR."
    )
    return 0


def _print_environment(services: RunningServices) -> None:
    printable = services.printable_env()
    for key, value in printable.items():
        print(f"export {key}={shlex.quote(value)}", flush=True)
    if printable != services.env:
        say(
            "The DSNs above are printed without their passwords: in that shell, give the "
            "password in PGPASSWORD, PGPASSFILE or ~/.pgpass (libpq reads them)."
        )


def run_dev(dagster_args: list[str]) -> int:
    project = _project_dir()
    lock = ProjectLock(state_dir())
    lock.acquire("ingest-platform dev")
    services = None
    api: subprocess.Popen | None = None
    try:
        host, port, dagster_args = _ui_address(dagster_args)
        services = start_services(project, say=say)
        os.environ.update(services.env)  # the instance the stop cancels runs through
        if executor_kind() == "celery":
            say(
                "Steps run on Celery workers (INGEST_EXECUTOR=celery): start them with "
                "`ingest-platform worker` in shells with INGEST_CELERY_BROKER and this environment:"
            )
            _print_environment(services)
        # The dump sensor reloads the code location through the UI (defs/reload.py).
        env = {**os.environ, "INGEST_DAGSTER_URL": f"http://{host}:{port}"}
        workspace = project / "workspace.yaml"
        say(f"Starting Dagster: dagster dev -w {workspace} {' '.join(dagster_args)}")
        dagster = start_dagster_dev(workspace, dagster_args, env)
        api = start_api_beside_dagster(env, say)
        console = relay_console(dagster)
        ui = f"http://{host}:{port}"
        lock.update(ui=ui)
        threading.Thread(target=_announce_when_up, args=(ui, dagster), daemon=True).start()
        try:
            code = dagster.wait()
        except KeyboardInterrupt as stop:
            # A second Ctrl-C would cut the ordered stop short and leave processes behind; the
            # stop is bounded (runs 30 s, Dagster 30 s, leftovers 5 s) instead.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            say("Stopping Dagster (at most about a minute; Ctrl-C again is ignored) ...")
            code = stop_dagster(
                dagster, signal.SIGTERM if isinstance(stop, StopRequested) else signal.SIGINT, say
            )
        console.join(5)
        return code
    finally:
        if api is not None and api.poll() is None:  # before the services it writes to
            api.terminate()
            api.wait(10)
        if services:
            say("Stopping services ...")
            services.stop()
        lock.release()


def _ui_address(dagster_args: list[str]) -> tuple[str, int, list[str]]:
    """The UI's host and port; a free port is chosen (and passed on) unless the user gave one."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("-h", "--host", default="127.0.0.1")
    probe.add_argument("-p", "--port", type=int)
    known, _ = probe.parse_known_args(dagster_args)
    if known.port is not None:
        return (
            known.host,
            choose_port(known.port, "the Dagster UI", explicit=True, say=say),
            dagster_args,
        )
    port = choose_port(3000, "the Dagster UI", explicit=False, say=say)
    return known.host, port, [*dagster_args, "--port", str(port)]


def _announce_when_up(ui: str, dagster: subprocess.Popen) -> None:
    while dagster.poll() is None:
        try:
            with urllib.request.urlopen(f"{ui}/server_info", timeout=2):
                say(f"Dagster UI: {ui}")
                return
        except OSError:
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
