"""`ingest-platform proto TABLE`: write the .proto of a table's BigQuery mirror rows.

The mirror builds this descriptor at run time; the file is for people who want to compile it
(protoc) and write rows themselves. TABLE is `schema.table` in the warehouse (`INGEST_PG_DSN`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ingest_platform.errors import ConfigError


def register(subparsers, say) -> None:
    parser = subparsers.add_parser(
        "proto", help="write the .proto of a table's BigQuery mirror rows"
    )
    parser.add_argument(
        "table", metavar="TABLE", help="schema.table in the warehouse (INGEST_PG_DSN)"
    )
    parser.add_argument(
        "-o", "--output", help="file to write (default: <table>.proto; '-' for stdout)"
    )
    parser.add_argument(
        "--package", default="ingest_mirror", help="protobuf package (default ingest_mirror)"
    )
    parser.add_argument(
        "--native-cdc",
        action="store_true",
        help="add the _CHANGE_TYPE and _CHANGE_SEQUENCE_NUMBER fields of native CDC upserts",
    )
    parser.add_argument(
        "--no-bignumeric",
        action="store_true",
        help="as for the local emulator: BIGNUMERIC columns become STRING",
    )
    parser.set_defaults(run=lambda options: run_proto(options, say))


def split_table(text: str) -> tuple[str, str]:
    schema, dot, table = text.partition(".")
    if not dot or not schema or not table:
        raise ConfigError(f"TABLE must be schema.table (e.g. shop.orders), not {text!r}.")
    return schema.strip('"'), table.strip('"')


def run_proto(options, say, environ=os.environ) -> int:
    from ingest_platform.bigquery.proto import proto_file_text
    from ingest_platform.bigquery.source import source_for_table
    from ingest_platform.postgres.connection import connect

    dsn = environ.get("INGEST_PG_DSN")
    if not dsn:
        raise ConfigError(
            "INGEST_PG_DSN is not set: export it (`ingest-platform services` prints it)."
        )
    schema, table = split_table(options.table)
    with connect(dsn) as conn:
        source = source_for_table(conn, schema, table, key=(), bignumeric=not options.no_bignumeric)
    text = proto_file_text(
        table,
        source.columns,
        package=options.package,
        cdc_pseudo_columns=options.native_cdc,
        source_label=f"{schema}.{table}",
    )
    if options.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(options.output or f"{table}.proto")
    path.write_text(text, encoding="utf-8")
    say(f"wrote {path} ({len(source.columns)} fields)")
    return 0
