"""Start what is not configured (embedded PostgreSQL, BigQuery emulator); describe the environment.

Decisions, also in the README:
- `INGEST_PG_DSN` set: that server is the warehouse; else the embedded server in
  `<state dir>/postgres` with databases `warehouse` and `dagster`, reused on the next start.
- `DAGSTER_PG_URL` set: Dagster's storage lives there; else in database `dagster` on the
  warehouse server (created if missing).
- `INGEST_BQ_PROJECT` plus credentials: real BigQuery; else the emulator, persistent in
  `<state dir>/bigquery`, on ports 9050 (REST) and 9060 (gRPC) or free ones when those are taken.
- `DAGSTER_HOME` unset: `<state dir>/dagster_home`, holding a copy of the packaged instance config
  (local/dagster.yaml), or of the project directory's dagster.yaml when it has one.
- `INGEST_DUMP_DIR` (default `./dumps`) is exported as an absolute path and created.
- Nothing printed holds a password: the DSNs in the `export` lines go without theirs (libpq finds
  it in PGPASSWORD, PGPASSFILE or ~/.pgpass); the processes this one starts get them whole in
  their environment, never in their arguments.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.bigquery.clients import has_credentials
from ingest_platform.dumps.decrypted import remove_stale_decrypted
from ingest_platform.dumps.directory import dump_dir
from ingest_platform.errors import ConfigError
from ingest_platform.local.bigquery_emulator import start_emulator
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.local.ports import choose_port
from ingest_platform.postgres.connection import (
    connect,
    ensure_database,
    server_address,
    to_url,
    with_database,
    without_password,
)

WAREHOUSE_DATABASE = "warehouse"
DAGSTER_DATABASE = "dagster"
DSN_VARIABLES = ("INGEST_PG_DSN", "DAGSTER_PG_URL")


def state_dir(environ=os.environ) -> Path:
    """Where the platform keeps local state: `INGEST_STATE_DIR`, default `./.ingest`."""
    return Path(environ.get("INGEST_STATE_DIR") or ".ingest").resolve()


@dataclass
class RunningServices:
    env: dict[str, str] = field(default_factory=dict)  # variables to export to Dagster
    started: list = field(default_factory=list)  # what we started, stopped in reverse order

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()

    def printable_env(self) -> dict[str, str]:
        """`env` as it may be printed: DSNs without their passwords."""
        return {
            key: without_password(value) if key in DSN_VARIABLES else value
            for key, value in self.env.items()
        }


INSTANCE_CONFIG = Path(__file__).with_name("dagster.yaml")


def start_services(
    project_dir: Path | None, environ=os.environ, say=print, bigquery: bool = True
) -> RunningServices:
    """Start the services that are not configured; on failure, stop what was started."""
    services = RunningServices()
    # Decrypted dumps left by processes that were killed (kill -9, out of memory) go first.
    if stale := remove_stale_decrypted(environ):
        say(f"Removed {len(stale)} decrypted dump(s) left by killed processes in {stale[0].parent}")
    try:
        _start_postgres(services, state_dir(environ), environ, say)
        if bigquery:
            _start_bigquery(services, state_dir(environ), environ, say)
        _prepare_dagster_home(services, project_dir, state_dir(environ), environ)
        # Dagster's processes run elsewhere (DAGSTER_HOME): relative paths must not follow them.
        services.env["INGEST_DUMP_DIR"] = str(dump_dir(environ))
        dump_dir(environ).mkdir(parents=True, exist_ok=True)
        # Where the backup component writes (defs_yaml/backup), absolute for the same reason.
        services.env["INGEST_BACKUP_DIR"] = str(
            Path(environ.get("INGEST_BACKUP_DIR") or state_dir(environ) / "backups").resolve()
        )
    except BaseException:
        services.stop()
        raise
    return services


def _start_postgres(services: RunningServices, state: Path, environ, say) -> None:
    dsn = environ.get("INGEST_PG_DSN")
    if dsn:
        say(f"PostgreSQL: using {server_address(dsn)} (INGEST_PG_DSN)")
        connect(dsn).close()
    else:
        say(f"PostgreSQL: starting the embedded server in {state / 'postgres'} ...")
        embedded = start_embedded_postgres(
            state / "postgres", (WAREHOUSE_DATABASE, DAGSTER_DATABASE)
        )
        services.started.append(embedded)
        dsn = with_database(embedded.dsn, WAREHOUSE_DATABASE)
        services.env["INGEST_PG_DSN"] = dsn
        say(f"PostgreSQL: ready; warehouse DSN {without_password(dsn)}")
    dagster_url = environ.get("DAGSTER_PG_URL")
    if dagster_url:
        say(f"Dagster storage: using {server_address(dagster_url)} (DAGSTER_PG_URL)")
        connect(dagster_url).close()
        # Exported as given: the storage picks its driver (local/instance_storage.py).
        services.env["DAGSTER_PG_URL"] = dagster_url
    else:
        try:
            ensure_database(dsn, DAGSTER_DATABASE)
        except Exception as exc:
            raise ConfigError(
                f"Could not create database '{DAGSTER_DATABASE}' for Dagster's storage on "
                f"{server_address(dsn)}: {exc}. "
                "Create it, or set DAGSTER_PG_URL to a database Dagster may use."
            ) from None
        services.env["DAGSTER_PG_URL"] = to_url(with_database(dsn, DAGSTER_DATABASE))


def _start_bigquery(services: RunningServices, state: Path, environ, say) -> None:
    if environ.get("INGEST_BQ_EMULATOR_HOST"):
        say(
            f"BigQuery: using the emulator at {environ['INGEST_BQ_EMULATOR_HOST']} "
            "(INGEST_BQ_EMULATOR_HOST)"
        )
        return
    project = environ.get("INGEST_BQ_PROJECT")
    if project:
        if not has_credentials(environ):
            raise ConfigError(
                f"INGEST_BQ_PROJECT={project} is set but no credentials were found: set "
                "INGEST_BQ_CREDENTIALS (base64 of a service-account key) or "
                "GOOGLE_APPLICATION_CREDENTIALS, or unset INGEST_BQ_PROJECT to use the local "
                "emulator."
            )
        say(f"BigQuery: using project {project} (INGEST_BQ_PROJECT)")
        return
    rest_port = choose_port(
        int(environ.get("INGEST_BQ_EMULATOR_REST_PORT") or 9050),
        "the BigQuery emulator (REST)",
        explicit="INGEST_BQ_EMULATOR_REST_PORT" in environ,
        say=say,
    )
    grpc_port = choose_port(
        int(environ.get("INGEST_BQ_EMULATOR_GRPC_PORT") or 9060),
        "the BigQuery emulator (gRPC)",
        explicit="INGEST_BQ_EMULATOR_GRPC_PORT" in environ,
        say=say,
    )
    say(
        f"BigQuery: starting the local emulator in {state / 'bigquery'} "
        "(GEOGRAPHY unsupported locally) ..."
    )
    emulator = start_emulator(rest_port, grpc_port, state / "bigquery", state / "bigquery.log")
    services.started.append(emulator)
    services.env["INGEST_BQ_EMULATOR_HOST"] = f"127.0.0.1:{rest_port}"
    services.env["INGEST_BQ_EMULATOR_GRPC_HOST"] = emulator.grpc_endpoint
    say(f"BigQuery: emulator ready; REST {emulator.rest_endpoint}, gRPC {emulator.grpc_endpoint}")


def _prepare_dagster_home(
    services: RunningServices, project_dir: Path | None, state: Path, environ
) -> None:
    if environ.get("DAGSTER_HOME"):
        return
    home = state / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    own = project_dir / "dagster.yaml" if project_dir else None
    shutil.copyfile(own if own and own.exists() else INSTANCE_CONFIG, home / "dagster.yaml")
    services.env["DAGSTER_HOME"] = str(home)
