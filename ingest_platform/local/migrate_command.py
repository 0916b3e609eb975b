"""`ingest-platform migrate plan|schema|data|verify`, `import-csv` and `demo-hr`.

DSNs come from options or, by default, environment variables (`--source` defaults to
INGEST_MIGRATE_SOURCE_DSN, `--target` to INGEST_MIGRATE_TARGET_DSN, the CSV target to the
warehouse's INGEST_PG_DSN). Messages name servers as host:port, never with a password.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from ingest_platform.errors import ConfigError
from ingest_platform.local.proto_command import split_table

SOURCE_VARIABLE = "INGEST_MIGRATE_SOURCE_DSN"
TARGET_VARIABLE = "INGEST_MIGRATE_TARGET_DSN"


def register(subparsers, say) -> None:
    migrate = subparsers.add_parser("migrate", help="move a PostgreSQL database to another server")
    actions = migrate.add_subparsers(dest="action", required=True)
    for action, text in (
        ("plan", "print what would be created, in dependency order, and the diff (no changes)"),
        ("schema", "recreate schemas, types, tables, keys, functions, views, grants"),
        ("data", "copy every table under one snapshot; keys and indexes after the data"),
        ("verify", "schema diff and row comparison of every table"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--source", help=f"source DSN (default ${SOURCE_VARIABLE})")
        parser.add_argument("--target", help=f"target DSN (default ${TARGET_VARIABLE})")
        parser.add_argument(
            "--schema", action="append", default=[], dest="schemas", help="repeatable; default all"
        )
        parser.add_argument(
            "--skip-grants", action="store_true", help="leave privileges out (missing roles)"
        )
        if action in ("schema", "data"):
            parser.add_argument(
                "--replace",
                action="store_true",
                help="drop and recreate the selected schemas on a target that differs",
            )
        if action == "data":
            parser.add_argument("--jobs", type=int, default=2, help="tables copied at once")
            parser.add_argument("--no-verify", action="store_true", help="skip the comparison")
        parser.set_defaults(run=lambda options: run_migrate(options, say))

    csv_parser = subparsers.add_parser(
        "import-csv", help="import CSV files into a table, checking types, keys, foreign keys"
    )
    csv_parser.add_argument("table", metavar="SCHEMA.TABLE")
    csv_parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    csv_parser.add_argument("--target", help="DSN (default $INGEST_PG_DSN, the warehouse)")
    csv_parser.add_argument("--encoding", default="utf-8")
    csv_parser.add_argument("--delimiter", default=",")
    csv_parser.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the first line names the columns",
    )
    csv_parser.add_argument("--on-reject", choices=("fail", "quarantine"), default="fail")
    csv_parser.add_argument("--max-rejects", type=int, default=None)
    csv_parser.set_defaults(run=lambda options: run_import_csv(options, say))

    demo = subparsers.add_parser(
        "demo-hr", help="create the HR demo source (schema hr) and its historical CSV files"
    )
    demo.add_argument("--target", help="DSN of the source to create (default $INGEST_PG_DSN)")
    demo.add_argument("--rows", type=int, default=1000, help="hires in the database")
    demo.add_argument("--csv-rows", type=int, default=None, help="hires in the CSVs (default rows)")
    demo.add_argument("--csv-dir", type=Path, default=Path("hr_csv"))
    demo.add_argument("--seed", type=int, default=14)
    demo.add_argument("--replace", action="store_true", help="drop schema hr first")
    demo.set_defaults(run=lambda options: run_demo_hr(options, say))


def _dsn(given: str | None, variable: str, what: str, environ=os.environ) -> str:
    dsn = given or environ.get(variable)
    if not dsn:
        raise ConfigError(f"No {what}: pass it with its option or set {variable}.")
    return dsn


def run_migrate(options, say) -> int:
    from ingest_platform.migration import data, plan, schema, verify

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("ingest_platform.migration").setLevel(logging.INFO)
    source = _dsn(options.source, SOURCE_VARIABLE, "source DSN")
    target = _dsn(options.target, TARGET_VARIABLE, "target DSN")
    grants = not options.skip_grants
    if options.action == "verify":
        result = verify.verify(source, target, options.schemas, grants)
        print(result.text())
        return 0 if result.passed else 1
    with tempfile.TemporaryDirectory(prefix="ingest_migrate_") as workdir:
        made = plan.make_plan(source, target, options.schemas, Path(workdir), grants)
        if options.action == "plan":
            print(made.text())
            return 0
        if options.action == "schema":
            say(schema.migrate_schema(made, replace=options.replace))
            return 0
        copies = data.migrate_data(
            made, jobs=options.jobs, replace=options.replace, on_table=lambda c: say(c.line)
        )
        say(f"Copied {len(copies)} tables, {sum(c.rows for c in copies):,} rows.")
    if options.no_verify:
        return 0
    result = verify.verify(source, target, made.schemas, grants)
    print(result.text())
    return 0 if result.passed else 1


def run_import_csv(options, say) -> int:
    from ingest_platform.migration.csv_import import CsvOptions, import_csv

    target = _dsn(options.target, "INGEST_PG_DSN", "target DSN")
    schema, table = split_table(options.table)
    result = import_csv(
        target,
        schema,
        table,
        options.files,
        CsvOptions(
            options.encoding,
            options.delimiter,
            options.header,
            options.on_reject,
            options.max_rejects,
        ),  # fmt: skip
    )
    for skipped in result.skipped_files:
        say(f"{skipped}: imported before (same bytes), skipped")
    for reject in result.rejects:
        say(f"rejected: {reject}")
    say(
        f"{result.table}: {result.loaded:,} rows loaded from {len(result.files)} file(s), "
        f"{len(result.rejects):,} rejected"
        + (" (in ingest_import.rejects)" if result.rejects else "")
    )
    return 0


def run_demo_hr(options, say) -> int:
    from ingest_platform.migration.demo_hr import create_hr_source, write_hr_csvs

    target = _dsn(options.target, "INGEST_PG_DSN", "DSN for the demo source")
    create_hr_source(target, options.rows, options.seed, options.replace)
    say(f"Created schema hr with {options.rows:,} hires.")
    csv_rows = options.rows if options.csv_rows is None else options.csv_rows
    for path in write_hr_csvs(options.csv_dir, csv_rows, options.rows + 1, options.seed + 27):
        say(f"wrote {path}")
    return 0
