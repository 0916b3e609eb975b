"""`ingest-platform backup` and `ingest-platform restore`.

DSNs come from options or environment variables (`--source` defaults to INGEST_BACKUP_SOURCE_DSN,
`--target` to INGEST_BACKUP_TARGET_DSN; a variable keeps a password out of `ps`). Messages name
servers as host:port, never with a password.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ingest_platform.local.migrate_command import _dsn

SOURCE_VARIABLE = "INGEST_BACKUP_SOURCE_DSN"
TARGET_VARIABLE = "INGEST_BACKUP_TARGET_DSN"


def register(subparsers, say) -> None:
    backup = subparsers.add_parser(
        "backup", help="back up PostgreSQL tables to Parquet or Avro files (manifest last)"
    )
    backup.add_argument("--source", help=f"source DSN (default ${SOURCE_VARIABLE})")
    backup.add_argument("--to", required=True, type=Path, metavar="DIR", help="new directory")
    backup.add_argument("--format", choices=("parquet", "avro"), default="parquet")
    backup.add_argument(
        "--schema", action="append", default=[], dest="schemas", help="repeatable; default all"
    )
    backup.add_argument(
        "--tables", nargs="+", default=None, metavar="SCHEMA.TABLE", help="default: all"
    )
    backup.add_argument("--jobs", type=int, default=2, help="tables read at once")
    backup.add_argument(
        "--previous",
        type=Path,
        metavar="DIR",
        help="an earlier backup: unchanged dump-version tables reuse its files (hard links)",
    )
    backup.set_defaults(run=lambda options: run_backup(options, say))

    restore = subparsers.add_parser(
        "restore", help="restore a backup into a database and prove every table equal"
    )
    restore.add_argument("directory", type=Path, metavar="DIR")
    restore.add_argument("--target", help=f"target DSN (default ${TARGET_VARIABLE})")
    restore.add_argument(
        "--tables", nargs="+", default=None, metavar="SCHEMA.TABLE", help="default: all"
    )
    restore.add_argument(
        "--replace",
        action="store_true",
        help="drop and recreate the backup's schemas on a target that is not empty",
    )
    restore.add_argument("--jobs", type=int, default=2, help="tables loaded at once")
    restore.add_argument(
        "--source", help="also compare with this database (default $INGEST_BACKUP_SOURCE_DSN)"
    )
    restore.set_defaults(run=lambda options: run_restore(options, say))


def run_backup(options, say) -> int:
    from ingest_platform.backup import backup

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    source = _dsn(options.source, SOURCE_VARIABLE, "source DSN")
    manifest = backup(
        source,
        options.to,
        file_format=options.format,
        schemas=options.schemas,
        tables=options.tables,
        jobs=options.jobs,
        previous=options.previous,
        on_table=lambda done: say(done.line),
    )
    rows = sum(t["rows"] for t in manifest["tables"])
    size = sum(f["bytes"] for f in manifest["files"].values())
    say(
        f"Backup of {manifest['source']}/{manifest['database']} written to {options.to}: "
        f"{len(manifest['tables'])} tables, {rows:,} rows, {size / 1e6:,.1f} MB."
    )
    return 0


def run_restore(options, say, environ=None) -> int:
    import os

    from ingest_platform.backup import restore

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    target = _dsn(options.target, TARGET_VARIABLE, "target DSN")
    source = options.source or (environ or os.environ).get(SOURCE_VARIABLE)
    result = restore(
        options.directory,
        target,
        tables=options.tables,
        replace=options.replace,
        jobs=options.jobs,
        source_dsn=source,
        on_table=lambda done: say(done.line),
    )
    print(result.text(), flush=True)
    if not result.passed:
        say("The restored tables differ from the backup (listed above).")
        return 1
    if result.against_backup:
        say(f"Restored {len(result.tables)} tables; every one equals the backup.")
    else:
        say(f"Restored {len(result.tables)} tables (not compared: no fingerprints).")
    return 0
