"""`ingest-platform demo-app`: create the CDC demo source and drive a workload against it.

  ingest-platform demo-app [--rate N] [--duration S] [--reset] [--dsn DSN] [--seed-projects N]

Creates (if missing) database `cdc_demo` on the warehouse server (INGEST_PG_DSN, else the embedded
server in .ingest/postgres), or uses INGEST_CDC_SOURCE_DSN / --dsn; creates the demo tables, the
Django content types and the change log; seeds them when empty; then writes about --rate changes a
second (60% changed, 30% added, 10% deleted) for --duration seconds (0: until Ctrl-C).
"""

from __future__ import annotations

import os
import random

from ingest_platform.cdc.config import DEMO_DATABASE


def register(subparsers, say) -> None:
    parser = subparsers.add_parser(
        "demo-app", help="create the CDC demo source (cdc_demo) and write changes to it"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="transactions a second (default 5)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of workload (default 60; 0: until Ctrl-C)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="drop and recreate the demo tables first"
    )
    parser.add_argument(
        "--seed-projects",
        type=int,
        default=20,
        help="projects (with children) seeded into empty tables",
    )
    parser.add_argument(
        "--dsn",
        help=(
            "source database (default INGEST_CDC_SOURCE_DSN, else cdc_demo on the warehouse server)"
        ),
    )
    parser.add_argument("--random-seed", type=int, help="for a reproducible workload")
    parser.set_defaults(run=lambda options: run_demo_app(options, say))


def run_demo_app(options, say) -> int:
    from ingest_platform.demo import cdc_app
    from ingest_platform.errors import ConfigError
    from ingest_platform.postgres.connection import (
        connect,
        ensure_database,
        libpq_dsn,
        parse_dsn,
        scalar,
        server_address,
        with_database,
    )

    if options.rate <= 0:
        raise ConfigError("--rate must be positive.")
    if options.dsn and parse_dsn(options.dsn).get("password"):
        say(
            "--dsn holds a password, which `ps` shows to anyone on this machine: give it in "
            "PGPASSWORD, PGPASSFILE or ~/.pgpass instead, or the DSN in INGEST_CDC_SOURCE_DSN."
        )
    embedded = None
    dsn = options.dsn or os.environ.get("INGEST_CDC_SOURCE_DSN")
    try:
        if not dsn:
            warehouse = os.environ.get("INGEST_PG_DSN")
            if not warehouse:
                from ingest_platform.local.embedded_postgres import start_embedded_postgres
                from ingest_platform.local.services import state_dir

                say(
                    f"PostgreSQL: starting (or joining) the embedded server in "
                    f"{state_dir() / 'postgres'} ..."
                )
                embedded = start_embedded_postgres(state_dir() / "postgres", ("warehouse",))
                warehouse = embedded.dsn
            dsn = with_database(libpq_dsn(warehouse), DEMO_DATABASE)
            ensure_database(warehouse, DEMO_DATABASE)
        database = parse_dsn(dsn).get("dbname") or "(libpq's default, the user name)"
        say(f"Demo source: database {database} on {server_address(dsn)}")
        cdc_app.create_demo_source(dsn, reset=options.reset)
        with connect(dsn) as conn:
            empty = scalar(conn, "SELECT NOT EXISTS (SELECT 1 FROM project)")
        rng = random.Random(options.random_seed)
        if empty and options.seed_projects > 0:
            cdc_app.seed(dsn, options.seed_projects, rng)
            say(f"Seeded {options.seed_projects} projects with inventory, plans and items.")
        say(
            f"Writing ~{options.rate:g} transactions/s for "
            f"{'ever (Ctrl-C stops)' if options.duration <= 0 else f'{options.duration:g} s'}; "
            "the sensor cdc_change_log_sensor picks the changes up."
        )
        counts = cdc_app.run_workload(dsn, options.rate, options.duration, say, rng)
        say(f"Done: {counts}")
        return 0
    finally:
        if embedded is not None:
            embedded.stop()
