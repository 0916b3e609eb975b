"""Broken archives and data files fail with errors that say where and what."""

from __future__ import annotations

import json
import random
import time
import zipfile

import pytest

from ingest_platform.dumps import FileFormat, iter_copy_chunks, load_dialect, open_dump
from ingest_platform.dumps.copy_text import fast_block
from ingest_platform.dumps.zip_member import MemberReader
from ingest_platform.errors import DumpError, FormatError, IngestError, SchemaError
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
    raw = bytearray(
        make_zip(tmp_path / "app_5.zip", {"t.json": SCHEMA, "t.dat": rows}).read_bytes()
    )
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


# -- dumps that are wrong by themselves: one line naming the file and table, at open ------------


def manifest_dump(tmp_path, manifest: dict, members: dict | None = None, name="app_1.zip"):
    """A dump with manifest.json (app, version and dialect filled in unless given) and table t."""
    manifest = {"app": "app", "version": "1", "dialect": "mssql", **manifest}
    members = {"t.json": SCHEMA, "t.dat": "1\ta\t2020-01-01\n", **(members or {})}
    members = {k: v for k, v in members.items() if v is not None}  # None: leave the member out
    return make_zip(tmp_path / name, {"manifest.json": json.dumps(manifest), **members})


def assert_one_line(error: Exception, *parts: str) -> None:
    text = str(error)
    assert "\n" not in text.strip(), text
    for part in parts:
        assert part in text, (part, text)


ONE_TABLE = {"columns": [{"name": "id", "type": "int"}]}


@pytest.mark.parametrize(
    ("manifest", "members", "expected"),
    [
        # issue 12: raw LookupError, TypeError, DagsterInvariantViolationError before
        ({"tables": {"t": {"encoding": "cp99999"}}}, {}, ["'t'", "unknown encoding 'cp99999'"]),
        ({"tables": {"t": {"header_rows": "1"}}}, {}, ["'t'", "header_rows", "whole number"]),
        ({"tables": {"t": {"header_rows": -1}}}, {}, ["'t'", "header_rows"]),
        ({"tables": {"t": {"field_terminator": 5}}}, {}, ["'t'", "field_terminator"]),
        ({"tables": {"t": {"quote": "ab"}}}, {}, ["'t'", "quote"]),
        ({"tables": {"t": {"bogus": 1}}}, {}, ["'t'", "bogus"]),
        ({"version": ""}, {}, ["'version'", "non-empty string"]),
        ({"version": 2.1}, {}, ["'version'", '"version": "2.1"']),
        ({"app": "a\tb"}, {}, ["app 'a\\tb'", "control characters"]),
        ({"version": "1...2"}, {}, ["version '1...2'"]),
        ({"tables": {"t": None}}, {}, ["'tables'"]),
        ({"tables": {"t": {"data": 5}}}, {}, ["'tables'"]),
        ({"dialect": 5}, {}, ["'dialect'"]),
        # the table's own schema
        ({}, {"t.json": json.dumps({"name": 5, **ONE_TABLE})}, ["t.json", "'name'"]),
        ({}, {"t.json": json.dumps({"source_schema": 5, **ONE_TABLE})}, ["t.json"]),
        (
            {},
            {"t.json": json.dumps({"columns": [{"name": "id", "type": "int", "pg_type": 5}]})},
            ["t.json", "column 1", "pg_type"],
        ),
        (
            {},
            {"t.json": json.dumps({"columns": [{"name": "", "type": "int"}]})},
            ["column ''", "give the column a name"],
        ),
        (
            {},
            {"t.json": json.dumps({"columns": [{"name": "c" * 64, "type": "int"}]})},
            ["longer than 63 bytes", "rename the column"],
        ),
        (
            {},
            {"t.json": json.dumps({"columns": [{"name": "id", "type": "frob"}]})},
            ["t.json", "column 'id'", "frob"],
        ),
        (
            {},
            {
                "t.json": json.dumps(
                    {"columns": [{"name": f"c{i}", "type": "int"} for i in range(1700)]}
                )
            },
            ["t.json", "1700 columns", "at most 1599"],
        ),
        (
            {},
            {"t.json": json.dumps({"columns": [{"name": "_version", "type": "int"}]})},
            ["column '_version'", "reserved"],
        ),
        (
            {},
            {"t.json": json.dumps({"name": "_ingest_versions", **ONE_TABLE})},
            ["'_ingest_versions'", "registry"],
        ),
        (
            {},
            {"t.json": json.dumps({"format": {"encoding": 5}, **ONE_TABLE})},
            ["fix it in t.json"],
        ),
        (
            {},
            {
                "t.json": None,
                "t.sql": "CREATE TABLE t (id int)\nGO\nBULK INSERT t FROM 't.dat' WITH "
                "(CODEPAGE = '65001', ROWTERMINATOR = '0xzz')\nGO\n",
            },
            ["t.sql", "hex terminator"],
        ),
        (
            {},
            {
                "t.json": None,
                "t.sql": "CREATE TABLE t (id int)\nGO\nBULK INSERT t FROM 't.dat' WITH "
                "(CODEPAGE = '99999')\nGO\n",
            },
            ["'t'", "unknown encoding 'cp99999'", "fix it in t.sql"],
        ),
    ],
)
def test_a_wrong_manifest_or_schema_is_one_line_naming_the_dump_and_table(
    tmp_path, manifest, members, expected
):
    path = manifest_dump(tmp_path, manifest, members)
    with pytest.raises(IngestError) as error:
        open_dump(path)
    assert_one_line(error.value, path.name, *expected)


def test_utf16_without_a_byte_order_mark_is_named_with_its_likely_byte_order(tmp_path):
    rows = "".join(f"{i}\tname {i}\t2020-01-0{i}\n" for i in range(1, 6))
    # 'utf-16' reads the byte order from a BOM (was: a raw UnicodeError in the middle of a load)
    declared_utf16 = manifest_dump(
        tmp_path, {"tables": {"t": {"encoding": "utf-16"}}}, {"t.dat": rows.encode("utf-16-be")}
    )
    with pytest.raises(DumpError) as error:
        open_dump(declared_utf16)
    assert_one_line(error.value, "'t.dat'", "byte-order mark", "UTF-16-BE", "'utf-16-be'")
    # UTF-16 declared as UTF-8 (was: "NUL character in a text value", record 1, column id)
    as_utf8 = manifest_dump(tmp_path, {}, {"t.dat": rows.encode("utf-16-le")}, "app_2.zip")
    with pytest.raises(DumpError) as error:
        open_dump(as_utf8)
    assert_one_line(error.value, "'t.dat'", "looks like UTF-16-LE", "declare encoding 'utf-16-le'")
    # As declared, both load.
    fixed = manifest_dump(
        tmp_path,
        {"tables": {"t": {"encoding": "utf-16-le"}}},
        {"t.dat": rows.encode("utf-16-le")},
        "app_3.zip",
    )
    assert chunks(open_dump(fixed)).count(b"\n") == 5
    # bcp's empty strings (a NUL field) in UTF-8 are not mistaken for UTF-16.
    nul_fields = "".join(f"{i}\t\0\t\0\n" for i in range(1, 40)).encode()
    assert chunks(open_dump(manifest_dump(tmp_path, {}, {"t.dat": nul_fields}, "app_4.zip")))


def test_two_members_of_one_name_are_refused(tmp_path):
    path = tmp_path / "app_1.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("t.json", SCHEMA)
        archive.writestr("t.dat", "1\ta\t2020-01-01\n")
        archive.writestr("t.dat", "2\tb\t2020-01-02\n")  # was: this one loaded, silently
    with pytest.raises(DumpError) as error:
        open_dump(path, dialect="mssql")
    assert_one_line(error.value, "app_1.zip", "two members named 't.dat'", "re-create")


def test_manifest_names_a_member_the_dump_lacks_or_a_table_without_schema(tmp_path):
    missing = manifest_dump(
        tmp_path,
        {"tables": {"customer": {"data": "nope/customer.dat"}}},
        {"t.json": None, "t.dat": None, "customer.json": SCHEMA, "customer.dat": "1\ta\t\n"},
    )
    with pytest.raises(SchemaError) as error:  # was: "data files without a schema: customer.dat"
        open_dump(missing)
    assert_one_line(error.value, "'customer'", "'nope/customer.dat'", "customer.dat")
    typo = manifest_dump(tmp_path, {"tables": {"T": {"null": "NULL"}}}, {}, "app_2.zip")
    with pytest.raises(SchemaError) as error:
        open_dump(typo)
    assert_one_line(error.value, "describes table 'T'", "no schema", "tables: t")


def test_two_data_files_for_one_table_must_be_named(tmp_path):
    path = manifest_dump(
        tmp_path, {}, {"a/t.dat": "1\ta\t\n", "b/t.dat": "2\tb\t\n", "t.dat": None}
    )
    with pytest.raises(SchemaError) as error:
        open_dump(path)
    assert_one_line(error.value, "'t'", "a/t.dat", "b/t.dat", '"data"')
    chosen = manifest_dump(
        tmp_path,
        {"tables": {"t": {"data": "b/t.dat"}}},
        {"a/t.dat": "1\ta\t\n", "b/t.dat": "2\tb\t\n", "t.dat": None},
        "app_2.zip",
    )
    with pytest.raises(SchemaError, match="a/t.dat"):  # the other one has no table now
        open_dump(chosen)


def test_a_zip_without_tables_is_refused(tmp_path):
    empty = make_zip(tmp_path / "app_1.zip", {})
    with pytest.raises(DumpError) as error:  # was: a Dagster CheckError in `ingest --dialect mssql`
        open_dump(empty, dialect="mssql")
    assert_one_line(error.value, "app_1.zip", "no table schema", "'mssql'")


def test_a_manifest_names_dialects_never_files_elsewhere(tmp_path, monkeypatch):
    outside = tmp_path / "pipes.toml"
    outside.write_text(
        'name = "pipes"\n[format]\nfield_terminator = "|"\n[types]\nint = "integer"\n'
    )
    for name in (str(outside), "../pipes.toml", "x/../../pipes.toml", "pipes.toml"):
        with pytest.raises(DumpError) as error:
            open_dump(manifest_dump(tmp_path, {"dialect": name}))
        assert_one_line(error.value, repr(name), "not a member of the dump", "INGEST_DIALECT_DIR")
    with pytest.raises(DumpError) as error:
        open_dump(manifest_dump(tmp_path, {"dialect": "pipes"}))
    assert_one_line(error.value, "unknown dialect 'pipes'", "mssql")
    # ... the operator's directory, by name
    monkeypatch.setenv("INGEST_DIALECT_DIR", str(tmp_path))
    piped = manifest_dump(
        tmp_path, {"dialect": "pipes"}, {"t.json": ONE_TABLE_JSON, "t.dat": "7\n"}
    )
    assert open_dump(piped).dialect.name == "pipes"
    # ... or a member of the dump itself
    monkeypatch.delenv("INGEST_DIALECT_DIR")
    own = manifest_dump(
        tmp_path,
        {"dialect": "dialects/semi.toml"},
        {
            "dialects/semi.toml": 'name = "semi"\n[format]\nfield_terminator = ";"\n'
            '[types]\nint = "integer"\n',
            "t.json": ONE_TABLE_JSON,
            "t.dat": "7\n",
        },
        "app_2.zip",
    )
    dump = open_dump(own)
    assert (dump.dialect.name, dump.dialect.file_format.field_terminator) == ("semi", ";")
    bad = manifest_dump(
        tmp_path,
        {"dialect": "semi.toml"},
        {"semi.toml": "[types]\nint = 5\n", "t.json": ONE_TABLE_JSON},
        "app_3.zip",
    )
    with pytest.raises(DumpError) as error:
        open_dump(bad)
    assert_one_line(error.value, "app_3.zip: semi.toml", "'int'")


ONE_TABLE_JSON = json.dumps(ONE_TABLE)


@pytest.mark.parametrize("dialect, member", [("mssql", "t.dat"), ("csv", "t.csv")])
def test_a_member_of_nul_bytes_without_a_row_end_is_refused_quickly(
    tmp_path, monkeypatch, dialect, member
):
    # Gigabytes of NUL bytes ran for more than ten minutes: the reader held the ever-longer
    # record and searched all of it for each new piece. Now a record is bounded (MAX_RECORD,
    # made small here so the test stays small) and the search does not repeat per piece.
    from ingest_platform.dumps import byte_blocks, text_stream

    monkeypatch.setattr(text_stream, "MAX_RECORD", 8 << 20)
    monkeypatch.setattr(byte_blocks, "MAX_RECORD", 8 << 20)
    path = tmp_path / "app_1.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("t.json", ONE_TABLE_JSON)
        with archive.open(member, "w", force_zip64=True) as data:
            data.write(b"1\n" * 50_000)  # a good start: opening the dump reads the first 64 KiB
            for _ in range(64):
                data.write(bytes(4 << 20))  # 256 MiB in all
    dump = open_dump(path, dialect=dialect)
    started = time.perf_counter()
    with pytest.raises(FormatError) as error:
        chunks(dump)
    assert time.perf_counter() - started < 10
    assert_one_line(error.value, member, "no record ends within 8 MiB", "NUL")
    assert error.value.file == member
    with pytest.raises(DumpError) as error:  # NUL bytes from the start: refused at open
        open_dump(
            make_zip(tmp_path / "app_2.zip", {"t.json": SCHEMA, "t.dat": bytes(1 << 16)}),
            dialect="mssql",
        )
    assert_one_line(error.value, "'t.dat'", "starts with NUL bytes")


def test_malformed_csv_names_its_record(tmp_path):
    schema = json.dumps({"columns": [{"name": "id", "type": "int"}, {"name": "n", "type": "text"}]})
    for data, record in (('id,n\n1,a\n2,"b"x\n3,c\n', 3), ('id,n\n1,a\n2,b\n3,"c\n4,d\n', 4)):
        dump = open_dump(
            make_zip(tmp_path / "app_1.zip", {"t.json": schema, "t.csv": data}), dialect="csv"
        )
        with pytest.raises(FormatError) as error:
            chunks(dump)
        assert (error.value.file, error.value.line) == ("t.csv", record)
        assert_one_line(error.value, f"record {record}", "malformed CSV", "quote")
