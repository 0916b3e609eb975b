"""`ingest-platform cdc sync [--config FILE] [--table NAME] [--dsn DSN]`: one CDC run of every
tracked table (both kinds: the change log, or a logical replication slot decoded once for all
tables and confirmed after their merges) and a table of what was merged.

The config is --config, else INGEST_CDC_CONFIG (else the demo app's tables); the source is
INGEST_CDC_SOURCE_DSN (else database cdc_demo on the warehouse server); the warehouse is --dsn,
else INGEST_PG_DSN. No DSN is ever printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from ingest_platform.local.text_table import text_table


def register(subparsers, say) -> None:
    parser = subparsers.add_parser("cdc", help="change data capture from the CDC config's source")
    commands = parser.add_subparsers(dest="cdc_command", required=True)
    sync = commands.add_parser(
        "sync", help="stage and merge every tracked table's changes once, then print a table"
    )
    sync.add_argument(
        "--config", type=Path, help="the CDC TOML file (default INGEST_CDC_CONFIG, else the demo)"
    )
    sync.add_argument("--table", action="append", help="only this tracked table (repeatable)")
    sync.add_argument("--dsn", help="the warehouse (default INGEST_PG_DSN)")
    sync.set_defaults(run=lambda options: run_cdc_sync(options, say))


def run_cdc_sync(options, say, environ=None) -> int:
    from dataclasses import replace

    from ingest_platform.cdc.config import cdc_config_from_env, source_dsn_from_env
    from ingest_platform.cdc.logical import slot_health
    from ingest_platform.cdc.pipeline import run_all
    from ingest_platform.errors import ConfigError

    environ = dict(os.environ if environ is None else environ)
    warehouse = options.dsn or environ.get("INGEST_PG_DSN")
    if not warehouse:
        raise ConfigError(
            "No warehouse: pass --dsn or set INGEST_PG_DSN (`ingest-platform services` prints it)."
        )
    if options.config is not None:
        environ["INGEST_CDC_CONFIG"] = str(options.config)
    environ.setdefault("INGEST_PG_DSN", warehouse)
    config = cdc_config_from_env(environ)
    if options.table:
        config = replace(config, tables=tuple(config.table(name) for name in options.table))
    source = source_dsn_from_env(environ)
    kind = "logical" if config.logical is not None else "change log"
    say(f"CDC sync ({kind}) of {len(config.tables)} table(s) ...")
    results = run_all(source, warehouse, config)
    print(summary_table(results), flush=True)
    if config.logical is not None:
        health = slot_health(source, config.logical)
        say(health.describe())
        if not health.passed:
            return 1
    return 0


def summary_table(results) -> str:
    rows = [
        ("table", "added", "changed", "deleted", "inserted", "updated", "soft-deleted",
         "watermark", "seconds", "schema changes"),
    ]  # fmt: skip
    for name, (staged, merged) in results.items():
        changes, counts = staged.changes, merged.counts
        rows.append(
            (
                name,
                str(changes.get("added", 0)),
                str(changes.get("changed", 0)),
                str(changes.get("deleted", 0)),
                str(counts.inserted),
                str(counts.updated),
                str(counts.soft_deleted),
                str(merged.watermark),
                f"{staged.seconds + merged.seconds:.2f}",
                ", ".join(staged.schema_changes) or "-",
            )  # fmt: skip
        )
    return text_table(rows)
