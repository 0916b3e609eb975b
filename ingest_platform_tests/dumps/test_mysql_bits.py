"""BIT columns: MySQL writes their bytes raw; records are split by the columns' widths."""

from __future__ import annotations

import io

import pytest

from ingest_platform.dumps import load_dialect, open_dump
from ingest_platform.dumps.mysql_bits import BitFieldStream, bit_field_stream
from ingest_platform.dumps.schema import Column
from ingest_platform.errors import FormatError
from ingest_platform_tests.conftest import make_zip

MYSQL = load_dialect("mysql").file_format


def columns(*specs: tuple[str, bool]) -> list[Column]:
    return [Column(f"c{i}", source, "x", nullable) for i, (source, nullable) in enumerate(specs)]


class Pieces:
    """A file object that returns `size`-byte pieces: records cut anywhere."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = io.BytesIO(data), size

    def read(self, _size: int = -1) -> bytes:
        return self.data.read(self.size)


def convert(data: bytes, specs, piece: int = 1 << 20) -> bytes:
    stream = bit_field_stream(Pieces(data, piece), MYSQL, columns(*specs), "t.txt")
    assert isinstance(stream, BitFieldStream)
    out = []
    while chunk := stream.read(4096):
        out.append(chunk)
    return b"".join(out)


SPECS = [("bit(8)", True), ("varchar(5)", True), ("bit(24)", True), ("bit(64)", True)]
# bit(8), varchar(5), bit(24), bit(64); each line below is one record.
FILE = (
    b"\t\ta\\\tb\t\\\n\t\t\\N\0\0\0\0\0\x01\n"  # TAB; 'a\<TAB>b'; 0x5C0A09; 0x5C4E..01
    + b"\\N\t\\N\t\\N\t\\N\n"  # NULL everywhere
    + b"\n\t\\\\\t\\N\t\t\0\0\0\0\0\0\0\t\n"  # LF; '\\'; 0x5C4E09 (NULL + TAB?); 9
)
EXPECTED = (
    b"9\ta\\\tb\t6031881\t6651253699672801281\n"
    + b"\\N\t\\N\t\\N\t\\N\n"
    + b"10\t\\\\\t6049289\t9\n"
)


def test_bit_values_holding_terminators_and_backslashes_become_numbers():
    assert convert(FILE, SPECS) == EXPECTED


def test_the_result_does_not_depend_on_where_reads_cut_the_file():
    for piece in range(1, len(FILE) + 1):
        assert convert(FILE, SPECS, piece) == EXPECTED, piece


def test_a_nullable_bit_16_holding_0x5c4e_reads_as_null_a_not_null_one_as_the_value():
    # 0x5C4E is written as \N, exactly like NULL: the file cannot tell; NOT NULL says it.
    record = b"\\N\t\\N\n"
    assert convert(record, [("bit(16)", True), ("bit(16)", False)]) == b"\\N\t23630\n"


def test_null_is_preferred_when_both_readings_split_the_record():
    # bit(24) then text: '\N' TAB 'x' TAB is NULL + 'x' + ..., or the value 0x5C4E09 + 'x'.
    specs = [("bit(24)", True), ("varchar(5)", True), ("varchar(5)", True)]
    assert convert(b"\\N\tx\ty\n", specs) == b"\\N\tx\ty\n"
    assert convert(b"\\N\t\tx\n", specs) == b"\\N\t\tx\n"
    assert convert(b"\\N\t\tx\ty\n", specs) == b"6049289\tx\ty\n"  # only the value splits


def test_a_cut_or_foreign_file_names_its_record():
    with pytest.raises(FormatError, match=r"^t\.txt, line 2: record 2: cannot be split into 2"):
        convert(b"\x01\tx\n\x01\txy", [("bit(8)", True), ("varchar(5)", True)])
    with pytest.raises(FormatError, match=r"line 1: record 1: cannot be split"):
        convert(b"1\tx\n", [("bit(16)", True), ("varchar(5)", True)])


def test_a_file_without_bit_columns_is_read_as_it_is():
    raw = io.BytesIO(b"x\n")
    assert bit_field_stream(raw, MYSQL, columns(("int", True)), "t.txt") is raw


def test_bit_columns_load_through_the_reader(tmp_path):
    ddl = "CREATE TABLE flags (id int, on_off bit(1), mask bit(12) NOT NULL, big bit(64));"
    data = b"1\t\x01\t\x0a\x09\t\xff\xff\xff\xff\xff\xff\xff\xff\n2\t\\N\t\x00\x5c\t\\N\n"
    dump = make_zip(tmp_path / "flags_1.zip", {"flags.sql": ddl, "flags.txt": data})
    with open_dump(dump, dialect="mysql") as opened:
        schema = opened.tables["flags"].schema
        assert [c.pg_type for c in schema.columns] == [
            "integer",
            "boolean",
            "bigint",
            "numeric(20,0)",
        ]
        text = b"".join(opened.iter_copy_chunks("flags"))
        assert text == b"1\t1\t2569\t18446744073709551615\n2\t\\N\t92\t\\N\n"
        assert opened.count_rows("flags") == 2
