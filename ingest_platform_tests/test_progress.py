"""Progress lines during long loads and mirrors: rows, rows/s and percent, from real work.

The interval is a parameter (`progress_seconds`); 0 here, so every chunk or request reports.
"""

from __future__ import annotations

import re

import psycopg

from ingest_platform.dumps import open_dump
from ingest_platform.loading.dump_versions import load_table_version, plan_for
from ingest_platform_tests.bigquery.helpers import make_dump_table, target
from ingest_platform_tests.test_dump_loading import SMALL_BLOCKS, good_rows, small_dump

PROGRESS_LINE = re.compile(r": ([\d,]+) rows, [\d,]+ rows/s, (\d+)%$")


def progress_lines(caplog, logger: str) -> list[re.Match]:
    return [
        match
        for record in caplog.records
        if record.name == logger and (match := PROGRESS_LINE.search(record.getMessage()))
    ]


def test_a_load_logs_rows_rate_and_percent_of_the_file_read(pg_dsn, tmp_path, caplog):
    path = small_dump(tmp_path, "1.0", good_rows(5_000))
    with open_dump(path) as dump, caplog.at_level("INFO", logger="ingest_platform"):
        report = load_table_version(
            pg_dsn,
            plan_for(dump, "orders", "shop"),
            processes=1,
            chunk_bytes=SMALL_BLOCKS,
            progress_seconds=0,
        )
    lines = progress_lines(caplog, "ingest_platform.loading.dump_versions")
    assert len(lines) > 3
    rows = [int(m.group(1).replace(",", "")) for m in lines]
    percents = [int(m.group(2)) for m in lines]
    assert rows == sorted(rows) and 0 < rows[0] and rows[-1] == report.rows == 5_000
    assert percents == sorted(percents) and percents[-1] >= 90
    assert all(m.string.startswith("orders 1.0: ") for m in lines)


def test_a_mirror_logs_rows_rate_and_percent_of_the_rows_counted(
    pg_dsn, bigquery_resource, bq_dataset, caplog
):
    from ingest_platform.bigquery.mirror import dump_source, ensure_mirror_table, write_source
    from ingest_platform.bigquery.source import ProtoRowEncoder
    from ingest_platform.bigquery.writer import PendingStreamWriter

    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(
            conn, "app", "w", [("id", "integer"), ("pad", "text")],
            {"1": [(i, "x" * 200) for i in range(3000)]}, ["id"],
        )  # fmt: skip
        mirror = target(bq_dataset, "w")
        with (
            bigquery_resource.get_client() as client,
            bigquery_resource.get_write_client() as write_client,
            caplog.at_level("INFO", logger="ingest_platform"),
        ):
            source = dump_source(conn, "app", "w", "1")
            ensure_mirror_table(client, mirror, source.columns)
            encoder = ProtoRowEncoder(source)
            writer = PendingStreamWriter(
                write_client,
                mirror.path,
                encoder.descriptor,
                max_request_bytes=100_000,
                expected_rows=3000,
                progress_seconds=0,
            )
            write_source(conn, source, writer, encoder, chunk_rows=700)
            writer.commit()
    lines = progress_lines(caplog, "ingest_platform.bigquery.writer")
    assert len(lines) >= 5
    assert (lines[-1].group(1), lines[-1].group(2)) == ("3,000", "100")
