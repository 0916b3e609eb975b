"""Broken archives and data files fail with errors that say where and what."""

from __future__ import annotations

import json
import random
import zipfile

import pytest

from ingest_platform.dumps import FileFormat, iter_copy_chunks, load_dialect, open_dump
from ingest_platform.dumps.copy_text import fast_block
from ingest_platform.dumps.zip_member import MemberReader
from ingest_platform.errors import DumpError, FormatError, SchemaError
from ingest_platform_tests.conftest import make_zip
from ingest_platform_tests.dumps.paths import per_row_copy_text

SCHEMA = json.dumps(
    {
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "name", "type": "nvarchar(10)"},
            {"name": "at", "type": "datetime"},
        ],
        "primary_key": ["id"],
    }
)


def chunks(dump, table="t", **kwargs):
    entry = dump.tables[table]
    return b"".join(
        iter_copy_chunks(
            dump.archive_path, entry.data_member, entry.file_format, entry.schema.columns, **kwargs
        )
    )


@pytest.mark.parametrize("read", [chunks, per_row_copy_text])
def test_wrong_column_count_names_file_line_expected_found(tmp_path, read):
    data = "1\ta\t2020-01-01\n2\tb\n3\tc\t2020-01-03\n"
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": data}), dialect="mssql"
    )
    with pytest.raises(FormatError) as error:
        read(dump)
    assert (error.value.file, error.value.line) == ("t.dat", 2)
    assert "expected 3 fields, found 2" in str(error.value)


def test_extra_field_and_short_last_record(tmp_path):
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": "1\ta\tx\ty\n"}),
        dialect="mssql",
    )
    with pytest.raises(FormatError, match="expected 3 fields, found 4"):
        chunks(dump)
    dump = open_dump(
        make_zip(tmp_path / "app_2.zip", {"t.json": SCHEMA, "t.dat": "1\ta\tx\n2\tb"}),
        dialect="mssql",
    )
    with pytest.raises(FormatError, match="record 2: expected 3 fields, found 2"):
        chunks(dump)


def test_invalid_bytes_for_declared_encoding(tmp_path):
    data = b"1\tok\t2020-01-01\n" + b"2\tbad \xff here\t2020-01-02\n"
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": data}), dialect="mssql"
    )
    with pytest.raises(FormatError) as error:
        chunks(dump)
    assert (error.value.file, error.value.line, error.value.column) == ("t.dat", 2, "name")
    assert "0xff" in str(error.value) and "utf-8" in str(error.value)


def test_utf16_with_bom_is_detected(tmp_path):
    data = "\ufeff1\tgrüße\t2020-01-01\n2\t\x00\t\n".encode("utf-16-le")
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": data}), dialect="mssql"
    )
    assert chunks(dump) == "1\tgrüße\t2020-01-01\n2\t\t\\N\n".encode()


def test_truncated_and_corrupt_zip(tmp_path):
    good = make_zip(
        tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": "1\ta\t2020-01-01\n" * 1000}
    )
    truncated = tmp_path / "app_2.zip"
    truncated.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(DumpError, match="app_2.zip"):
        open_dump(truncated, dialect="mssql")
    garbage = tmp_path / "app_3.zip"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DumpError, match="app_3.zip"):
        open_dump(garbage, dialect="mssql")
    # A damaged member body: found when the dump is opened (it reads the start of each data
    # file), or, further in, while streaming.
    raw = bytearray(good.read_bytes())
    start = raw.find(b"t.dat") + 5
    raw[start + 10 : start + 40] = b"\x00" * 30
    damaged = tmp_path / "app_4.zip"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DumpError, match="t.dat"):
        open_dump(damaged, dialect="mssql")
    rows = "".join(f"{i}\t{random.getrandbits(32):08x}\t2020-01-01\n" for i in range(40_000))
    raw = bytearray(make_zip(tmp_path / "app_5.zip", {"t.json": SCHEMA, "t.dat": rows}).read_bytes())
    end = raw.find(b"PK\x01\x02")  # the central directory follows the member
    raw[end - 5000 : end - 4970] = b"\x00" * 30
    damaged = tmp_path / "app_6.zip"
    damaged.write_bytes(bytes(raw))
    dump = open_dump(damaged, dialect="mssql")
    with pytest.raises(DumpError, match="t.dat"):
        chunks(dump)


def test_stored_member_and_a_wrong_crc(tmp_path):
    # The ISA-L member reader (zip_member.py) reads stored members too and checks the CRC-32
    # at the end.
    data = ("1\ta\t2020-01-01\n" * 1000).encode()
    path = tmp_path / "app_1.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("t.json", SCHEMA)
        archive.writestr("t.dat", data)
    assert chunks(open_dump(path, dialect="mssql")).count(b"\n") == 1000
    raw = bytearray(path.read_bytes())
    at = raw.find(data)
    raw[at + 5000] ^= 0x01  # "a" -> "`": still valid data, but not what the CRC says
    damaged = tmp_path / "app_2.zip"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DumpError, match="t.dat.*CRC"):
        chunks(open_dump(damaged, dialect="mssql"))


def test_member_reader_returns_at_most_what_was_asked(tmp_path):
    # A highly compressible member must not inflate into memory at once (a ZIP bomb stays bounded).
    path = make_zip(tmp_path / "app_1.zip", {"t.dat": b"0" * 50_000_000})
    with zipfile.ZipFile(path) as archive:
        reader = MemberReader(str(path), archive.getinfo("t.dat"))
    sizes = []
    while block := reader.read(1 << 20):
        sizes.append(len(block))
    reader.close()
    assert max(sizes) == 1 << 20 and sum(sizes) == 50_000_000


@pytest.mark.parametrize("member", ["../evil.dat", "/etc/t.dat", "a/../../t.dat", "C:\\t.dat"])
def test_unsafe_member_names(tmp_path, member):
    archive = make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, member: "1\ta\t2020-01-01\n"})
    with pytest.raises(DumpError) as error:
        open_dump(archive, dialect="mssql")
    assert repr(member) in str(error.value)


def test_data_without_schema_is_an_error(tmp_path):
    archive = make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA, "t.dat": "", "orphan.dat": "1\n"})
    with pytest.raises(SchemaError, match="orphan.dat"):
        open_dump(archive, dialect="mssql")


def test_schema_without_data_is_an_empty_table(tmp_path):
    dump = open_dump(make_zip(tmp_path / "app_1.zip", {"t.json": SCHEMA}), dialect="mssql")
    assert dump.tables["t"].data_member is None
    assert list(dump.iter_copy_chunks("t")) == [] and dump.count_rows("t") == 0


def test_names_with_quotes_and_spaces_are_kept(tmp_path):
    name = "we\"ird ta'ble; DROP"
    schema = json.dumps(
        {
            "name": name,
            "columns": [{"name": 'col "1"', "type": "int"}, {"name": "sp ace]", "type": "text"}],
        }
    )
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"x.json": schema, f"{name}.dat": "1\tx\n"}),
        dialect="mssql",
    )
    assert list(dump.tables) == [name]
    assert dump.tables[name].schema.column_names == ['col "1"', "sp ace]"]
    assert chunks(dump, name) == b"1\tx\n"


def test_mysql_escapes_nul_and_zero_dates(tmp_path):
    schema = json.dumps(
        {
            "columns": [
                {"name": "a", "type": "text"},
                {"name": "d", "type": "datetime"},
                {"name": "b", "type": "blob"},
            ]
        }
    )
    data = (
        b"x\\\\y\\\ttab\\\nnl\\Z\t0000-00-00 00:00:00\tab\\0c\n"
        b"cr\r\\\nlf\t2020-00-01\t\\N\n"
        b"\\N\t2020-01-02 03:04:05\t\n"
    )
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": schema, "t.txt": data}), dialect="mysql"
    )
    expected = (
        b"x\\\\y\\ttab\\nnl\x1a\t\\N\t\\\\x61620063\n"
        b"cr\\r\\nlf\t\\N\t\\N\n"
        b"\\N\t2020-01-02 03:04:05\t\\\\x\n"
    )
    assert chunks(dump) == expected
    assert per_row_copy_text(dump) == expected
    nul = open_dump(
        make_zip(tmp_path / "app_2.zip", {"t.json": schema, "t.txt": b"a\\0b\t\\N\t\\N\n"}),
        dialect="mysql",
    )
    with pytest.raises(FormatError, match="NUL") as error:
        chunks(nul)
    assert (error.value.line, error.value.column) == (1, "a")


def test_fast_path_refuses_what_it_cannot_prove(tmp_path):
    fmt = load_dialect("mysql").file_format
    schema = json.dumps({"columns": [{"name": "a", "type": "text"}, {"name": "b", "type": "text"}]})
    # \N inside a field means "N" for both MySQL and COPY; the per-row path writes "N".
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": schema, "t.txt": b"a\\Nb\t\\N\n"}),
        dialect="mysql",
    )
    assert chunks(dump) == b"aNb\t\\N\n"
    assert fast_block("a\\Nb\t\\N\n", "\n", fmt, dump.tables["t"].schema.columns) is None
    assert isinstance(fmt, FileFormat)


def test_csv_dialect_with_quotes_and_header(tmp_path):
    schema = json.dumps(
        {"columns": [{"name": "id", "type": "int"}, {"name": "note", "type": "text"}]}
    )
    data = 'id,note\n1,"a, ""quoted""\nline"\n2,\n'
    dump = open_dump(
        make_zip(tmp_path / "app_1.zip", {"t.json": schema, "t.csv": data}), dialect="csv"
    )
    assert chunks(dump) == b'1\ta, "quoted"\\nline\n2\t\\N\n'
    assert dump.count_rows("t") == 2
