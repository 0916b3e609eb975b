"""`ingest-platform fetch --config FILE [--source NAME] [--incremental] [--dsn DSN]`: pull source
databases into the warehouse's versioned tables (``ingest_platform.fetch``) and print a table.

The warehouse is --dsn, else INGEST_PG_DSN. Source URLs come from the variables the config's
dsn_env names; neither is ever printed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ingest_platform.local.text_table import text_table


def register(subparsers, say) -> None:
    parser = subparsers.add_parser(
        "fetch", help="pull tables straight from PostgreSQL/MySQL sources into versioned tables"
    )
    parser.add_argument("--config", type=Path, required=True, help="the sources' TOML file")
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="pull rows past each table's watermark (tables with a cursor in the config)",
    )
    parser.add_argument("--dsn", help="the warehouse (default INGEST_PG_DSN)")
    parser.set_defaults(run=lambda options: run_fetch(options, say))


def run_fetch(options, say, environ=None) -> int:
    from ingest_platform.errors import ConfigError, IngestError
    from ingest_platform.fetch.config import load_config
    from ingest_platform.fetch.pull import fetch

    environ = os.environ if environ is None else environ
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    warehouse = options.dsn or environ.get("INGEST_PG_DSN")
    if not warehouse:
        raise ConfigError(
            "No warehouse: pass --dsn or set INGEST_PG_DSN (`ingest-platform services` prints it)."
        )
    sources = load_config(options.config)
    chosen = options.source or list(sources)
    unknown = [s for s in chosen if s not in sources]
    if unknown:
        raise ConfigError(
            f"{options.config} has no source {unknown[0]!r}; it has {', '.join(sorted(sources))}."
        )
    reports, failed = [], 0
    for name in chosen:
        say(f"Fetching {name} ({'incremental' if options.incremental else 'snapshot'}) ...")
        try:
            reports += fetch(warehouse, sources[name], options.incremental, environ=environ)
        except IngestError as error:
            failed += 1
            say(f"FAILED {name}: {error}")
    if reports:
        print(summary_table(reports), flush=True)
    return 1 if failed else 0


def summary_table(reports) -> str:
    rows = [
        ("source", "table", "version", "mode", "rows", "seconds", "rows/s", "child table",
         "deleted", "schema changes", "checks"),
    ]  # fmt: skip
    for r in reports:
        rows.append(
            (
                r.source,
                r.table,
                r.version,
                r.mode,
                str(r.rows),
                f"{r.seconds:.2f}",
                f"{r.rows_per_second:,.0f}",
                r.child_table,
                str(r.deleted),
                str(len(r.schema_changes)),
                ", ".join(r.checks) or "-",
            )  # fmt: skip
        )
    return text_table(rows)
