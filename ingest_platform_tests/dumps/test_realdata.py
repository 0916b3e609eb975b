"""Every table of both real dumps: record counts, field counts, both paths equal, spot values."""

from __future__ import annotations

import pytest

from ingest_platform_tests.conftest import MSSQL_DIR, MYSQL_DIR
from ingest_platform_tests.dumps.paths import (
    byte_path_copy_text,
    fast_paths_copy_text,
    per_row_copy_text,
    text_path_copy_text,
)


def copy_rows(dump, table: str, chunk_bytes: int = 1 << 16, read=None) -> list[list[bytes]]:
    """The table's COPY text split into fields: by the reader, or by one path alone (`read`)."""
    if read is None:
        data = b"".join(dump.iter_copy_chunks(table, chunk_bytes))
    else:
        data = read(dump, table, chunk_bytes)
    assert data == b"" or data.endswith(b"\n")
    return [line.split(b"\t") for line in data.split(b"\n")[:-1]]


def true_bcp_count(dump, table: str) -> int:
    # Independent of the reader: every record has exactly n-1 field terminators.
    entry = dump.tables[table]
    data = (MSSQL_DIR / entry.data_member).read_bytes()
    separators = data.count(entry.file_format.field_terminator.encode())
    assert separators % (len(entry.schema.columns) - 1) == 0
    return separators // (len(entry.schema.columns) - 1)


def true_mysql_count(member: str) -> int:
    data = (MYSQL_DIR / member).read_bytes().replace(b"\\\\", b"")
    return data.count(b"\n") - data.count(b"\\\n")


def test_mssql_dump_is_discovered(mssql_dump):
    assert (mssql_dump.app, mssql_dump.version) == ("adventureworks", "2025")
    with_data = {n for n, e in mssql_dump.tables.items() if e.data_member}
    assert len(with_data) == 62
    # Schemas whose data the publisher left out are empty versions, not errors.
    for table in (
        "Person",
        "SalesOrderHeader",
        "SalesOrderDetail",
        "TransactionHistory",
        "WorkOrder",
    ):
        assert mssql_dump.tables[table].data_member is None
        assert list(mssql_dump.iter_copy_chunks(table)) == []


def test_mssql_every_table_counts_and_fields(mssql_dump):
    total = 0
    for table, entry in mssql_dump.tables.items():
        if entry.data_member is None:
            continue
        rows = copy_rows(mssql_dump, table)
        expected = true_bcp_count(mssql_dump, table)
        assert len(rows) == expected, table
        assert mssql_dump.count_rows(table) == expected, table
        assert all(len(r) == len(entry.schema.columns) for r in rows), table
        total += expected
    assert total > 240_000


def test_mysql_every_table_counts_and_fields(mysql_dump):
    assert (mysql_dump.app, mysql_dump.version) == ("ecoli_core", "1.0")
    assert mysql_dump.tables["dna"].data_member is None  # dna.txt is absent
    for table, entry in mysql_dump.tables.items():
        if entry.data_member is None:
            continue
        rows = copy_rows(mysql_dump, table)
        assert len(rows) == true_mysql_count(entry.data_member) == mysql_dump.count_rows(table), (
            table
        )
        assert all(len(r) == len(entry.schema.columns) for r in rows), table


@pytest.mark.parametrize("dump_name", ["mssql_dump", "mysql_dump"])
def test_fast_and_per_row_paths_are_identical(request, dump_name):
    dump = request.getfixturevalue(dump_name)
    fast_blocks_used = byte_path_used = 0
    for table, entry in dump.tables.items():
        if entry.data_member is None:
            continue
        for chunk_bytes in (1 << 14, 1 << 20):  # different block boundaries, same bytes
            auto = copy_rows(dump, table, chunk_bytes)  # byte path where the file allows it
            assert auto == copy_rows(dump, table, chunk_bytes, per_row_copy_text), table
            # str blocks, str fast path
            assert auto == copy_rows(dump, table, chunk_bytes, text_path_copy_text), table
        try:
            copy_rows(dump, table, read=fast_paths_copy_text)
            fast_blocks_used += 1
        except Exception:
            pass
        try:
            copy_rows(dump, table, read=byte_path_copy_text)  # every block on bytes, no decode
            byte_path_used += 1
        except Exception:
            pass
    assert fast_blocks_used > 10  # the fast path really applies to most real files
    assert byte_path_used > (
        60 if dump_name == "mysql_dump" else 40
    )  # 71 of 73 and 45 of 62 tables


@pytest.mark.parametrize("dump_name", ["mssql_dump", "mysql_dump"])
def test_byte_path_blocks_are_identical_to_per_row_blocks(request, dump_name):
    # Block by block on the real files: the byte path's bytes == the per-row path's on the same
    # block.
    from ingest_platform.dumps.reader import BlockEncoder, open_record_blocks
    from ingest_platform.dumps.text_stream import BAD_BYTE_ERRORS

    dump = request.getfixturevalue(dump_name)
    converted = 0
    for table, entry in dump.tables.items():
        if entry.data_member is None:
            continue
        args = (entry.data_member, entry.file_format, entry.schema.columns)
        encoder = BlockEncoder(*args)
        encoding = encoder.byte_path.encoding or entry.file_format.encoding
        with open_record_blocks(dump.archive_path, *args, chunk_bytes=1 << 15) as blocks:
            record = 1
            for block, terminator, records in blocks:
                text = (
                    block.decode(encoding, BAD_BYTE_ERRORS) if isinstance(block, bytes) else block
                )
                expected = encoder.per_row.encode_block(text, terminator, record)
                if isinstance(block, bytes) and encoder.byte_path.convert(block, records):
                    assert encoder.encode(block, terminator, record, records=records) == expected, (
                        table,
                        record,
                    )
                    converted += 1
                record += expected[1]
    assert converted > 20


def column(dump, table, name):
    return [c.name for c in dump.tables[table].schema.columns].index(name)


def test_mssql_spot_values(mssql_dump):
    document = copy_rows(mssql_dump, "Document")
    first = document[0]
    assert (
        first[column(mssql_dump, "Document", "DocumentNode")] == b"\\\\x"
    )  # root: NUL -> empty bytea
    assert first[column(mssql_dump, "Document", "FileExtension")] == b""  # NUL byte -> ''
    assert first[column(mssql_dump, "Document", "DocumentSummary")] == b"\\N"  # empty field -> NULL
    assert first[column(mssql_dump, "Document", "ModifiedDate")] == b"2017-12-13 13:58:03.943"
    assert document[2][column(mssql_dump, "Document", "Document")].startswith(
        b"\\\\xD0CF11E0A1B11AE1"
    )
    # Document.csv rows end in &|CRLF and its text holds CRLF: kept as escaped \r\n
    assert any(b"\\r\\n" in f for row in document for f in row)
    product = copy_rows(mssql_dump, "Product")[0]
    assert product[column(mssql_dump, "Product", "StandardCost")] == b".0000"  # money
    assert product[column(mssql_dump, "Product", "Color")] == b"\\N"
    # ProductReview: LF inside a non-last field (bcp reads n-1 field terminators first)
    review = copy_rows(mssql_dump, "ProductReview")[0]
    assert b"grueling\\n3-day ride" in review[column(mssql_dump, "ProductReview", "Comments")]
    # ProductModel (+| terminators): tabs and newlines inside XML text
    models = copy_rows(mssql_dump, "ProductModel")
    assert any(b"\\n \\t\\t\\t\\tPerformance" in f for row in models for f in row)
    address = copy_rows(mssql_dump, "Address")[0]
    assert address[column(mssql_dump, "Address", "SpatialLocation")].startswith(b"\\\\xE6100000")
    employee = copy_rows(mssql_dump, "Employee")[0]
    assert employee[column(mssql_dump, "Employee", "SalariedFlag")] in (b"0", b"1")


def test_mysql_spot_values(mysql_dump):
    web_data = copy_rows(mysql_dump, "analysis_description")
    index = column(mysql_dump, "analysis_description", "web_data")
    assert any(f.startswith(b"'{\\\\'caption\\\\' => ") for row in web_data for f in [row[index]])
    external = {row[0]: row for row in copy_rows(mysql_dump, "external_db")}
    description = external[b"50684"][column(mysql_dump, "external_db", "description")]
    assert description.startswith(
        b"Plant environmental conditions ontology terms.\\r\\nMore information"
    )
    assert external[b"50683"][column(mysql_dump, "external_db", "description")] == b"\\N"
    operon = copy_rows(mysql_dump, "operon")[0]
    assert operon[column(mysql_dump, "operon", "created_date")] == b"\\N"  # 0000-00-00 00:00:00
    assert (
        mysql_dump.tables["operon"]
        .schema.columns[column(mysql_dump, "operon", "created_date")]
        .nullable
    )
