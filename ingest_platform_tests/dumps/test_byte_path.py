"""The byte path (no decode/re-encode) gives exactly the per-row path's COPY bytes, or steps
aside."""

from __future__ import annotations

import codecs
import json
import pickle
import random

import pytest

from ingest_platform.dumps import iter_copy_chunks, open_dump
from ingest_platform.dumps.byte_blocks import ByteFastPath
from ingest_platform.dumps.reader import BlockEncoder, open_record_blocks
from ingest_platform.errors import FormatError
from ingest_platform_tests.conftest import make_zip
from ingest_platform_tests.dumps.paths import (
    byte_path_copy_text,
    entry_of,
    per_row_copy_text,
    text_path_copy_text,
)

TEXT4 = json.dumps({"columns": [{"name": f"c{i}", "type": "nvarchar(max)"} for i in range(4)]})
DATES = json.dumps(
    {
        "columns": [
            {"name": "a", "type": "text"},
            {"name": "d", "type": "datetime"},
            {"name": "b", "type": "text"},
        ]
    }
)


def chunks(dump, chunk_bytes=1 << 20, table="t") -> bytes:
    return b"".join(iter_copy_chunks(*entry_of(dump, table), chunk_bytes=chunk_bytes))


def make_dump(
    tmp_path, data: bytes | str, dialect="mssql", schema=TEXT4, name="t.dat", tables=None
):
    members = {"t.json": schema, name: data}
    if tables:
        members["manifest.json"] = json.dumps(
            {"app": "app", "version": "1", "dialect": dialect, "tables": tables}
        )
    path = make_zip(tmp_path / f"app_{random.randrange(10**9)}.zip", members)
    return open_dump(path, dialect=dialect)


def blocks_of(dump, chunk_bytes):
    with open_record_blocks(*entry_of(dump), chunk_bytes=chunk_bytes) as blocks:
        return list(blocks)


def assert_paths_agree(dump, chunk_sizes=(16, 100, 1 << 20), expect_bytes=True) -> bytes:
    """The reader (byte path where it can), the old str path and the per-row path: the same
    bytes and counts."""
    expected = per_row_copy_text(dump)
    for chunk_bytes in chunk_sizes:
        assert chunks(dump, chunk_bytes) == expected, chunk_bytes
        assert per_row_copy_text(dump, chunk_bytes=chunk_bytes) == expected, chunk_bytes
        assert text_path_copy_text(dump, chunk_bytes=chunk_bytes) == expected, chunk_bytes
        if expect_bytes:
            assert byte_path_copy_text(dump, chunk_bytes=chunk_bytes) == expected, chunk_bytes
    assert dump.count_rows("t") == expected.count(b"\n")
    return expected


# -- bcp -----------------------------------------------------------------------------------------


def test_bcp_empty_nul_backslash_and_cr_fields(tmp_path):
    data = (
        b"\ta\t\t\n"  # empty first field, adjacent empties, empty last field
        b"\t\t\t\n"  # every field empty
        b"\0\tb\0\t\0\t\0\n"  # NUL fields (first, last, adjacent) -> ''; b\0 is not a NUL field...
    )
    dump = make_dump(tmp_path, data)
    with pytest.raises(FormatError, match="NUL") as error:  # ... so the per-row path names it
        chunks(dump)
    assert (error.value.line, error.value.column) == (3, "c1")

    data = (
        "\ta\t\t\n"
        "\t\t\t\n"
        "\0\t\0\t\0\t\0\n"
        "\0\t\t\0\t\n"
        "back\\slash\t\\\tc\\r\\\\\t\\N\n"
        "cr\rin\tfield\r\tx\t\r\n"  # raw CR is data here: the first record ends in LF
        "ünï\tcödé\t€\t𝄞\n"
    ).encode()
    dump = make_dump(tmp_path, data)
    expected = assert_paths_agree(dump)
    assert expected == (
        b"\\N\ta\t\\N\t\\N\n"
        b"\\N\t\\N\t\\N\t\\N\n"
        b"\t\t\t\n"
        b"\t\\N\t\t\\N\n"
        b"back\\\\slash\t\\\\\tc\\\\r\\\\\\\\\t\\\\N\n"
        b"cr\\rin\tfield\\r\tx\t\\r\n" + "ünï\tcödé\t€\t𝄞\n".encode()
    )


def test_bcp_lf_inside_a_field_falls_back_for_that_block_only(tmp_path):
    rows = [f"{i}\tname {i}\tnote {i}\t\n" for i in range(1, 301)]
    rows[150] = "151\tline one\nline two\tnote\t\n"  # LF in a non-last field: bcp's data
    dump = make_dump(tmp_path, "".join(rows).encode())
    expected = assert_paths_agree(dump, chunk_sizes=(64, 1000, 1 << 20), expect_bytes=False)
    assert expected.count(b"\n") == 300 and b"line one\\nline two" in expected
    with pytest.raises(AssertionError, match="byte path"):
        byte_path_copy_text(dump, chunk_bytes=1000)
    # Cut on bytes at real record ends only; just the block holding record 151 misses the byte path.
    blocks = blocks_of(dump, 1000)
    assert len(blocks) > 5 and all(isinstance(b, bytes) and t == "\n" for b, t, _ in blocks)
    fast = ByteFastPath(dump.tables["t"].file_format, dump.tables["t"].schema.columns)
    missed = [b for b, _, records in blocks if fast.convert(b, records) is None]
    assert len(missed) == 1 and b"line one\nline two" in missed[0]


def test_bcp_invalid_utf8_is_named_by_record_and_column(tmp_path):
    rows = [f"{i}\tok\tfine\t\n".encode() for i in range(1, 200)]
    rows[120] = b"121\tok\tbad \xff byte\t\n"
    dump = make_dump(tmp_path, b"".join(rows))
    for read in (chunks, per_row_copy_text, text_path_copy_text):
        with pytest.raises(FormatError, match="0xff") as error:
            read(dump, chunk_bytes=256)
        assert (error.value.file, error.value.line, error.value.column) == ("t.dat", 121, "c2")
    assert dump.count_rows("t") == 199
    # A truncated multi-byte sequence at a block end is invalid too (blocks end in LF).
    dump = make_dump(tmp_path, b"1\ta\tb\t\xe2\x82\n2\ta\tb\tc\n")
    with pytest.raises(FormatError, match="0xe2") as error:
        chunks(dump)
    assert (error.value.line, error.value.column) == (1, "c3")


def test_ascii_declared_rejects_other_bytes_like_the_per_row_path(tmp_path):
    dump = make_dump(
        tmp_path, "1\ta\tb\tc\n2\tx\tcödé\t\n".encode(), tables={"t": {"encoding": "ascii"}}
    )
    with pytest.raises(FormatError, match="ascii") as error:
        chunks(dump)
    assert (error.value.line, error.value.column) == (2, "c2")
    dump = make_dump(tmp_path, b"1\ta\t\\b\t\n", tables={"t": {"encoding": "ascii"}})
    assert assert_paths_agree(dump) == b"1\ta\t\\\\b\t\\N\n"


def test_bom_crlf_and_other_encodings(tmp_path):
    body = "1\tä\t\t\0\n2\t\tb\\\tc\n"
    expected = b"1\t\xc3\xa4\t\\N\t\n2\t\\N\tb\\\\\tc\n"
    utf8_bom = make_dump(tmp_path, codecs.BOM_UTF8 + body.encode())
    assert assert_paths_agree(utf8_bom) == expected
    # CRLF rows (the first record decides) and UTF-16: the str path, same output.
    crlf = make_dump(tmp_path, body.replace("\n", "\r\n").encode())
    assert all(isinstance(b, str) for b, _, _ in blocks_of(crlf, 16))
    assert assert_paths_agree(crlf, expect_bytes=False) == expected
    utf16 = make_dump(tmp_path, codecs.BOM_UTF16_LE + body.encode("utf-16-le"))
    assert assert_paths_agree(utf16, expect_bytes=False) == expected
    # latin-1: ASCII blocks take the byte path, the others decode.
    latin = make_dump(tmp_path, body.encode("latin-1"), tables={"t": {"encoding": "latin-1"}})
    assert assert_paths_agree(latin, expect_bytes=False) == expected


def test_header_rows_are_skipped_once(tmp_path):
    dump = make_dump(
        tmp_path,
        b"h1\th2\th3\th4\n" + b"".join(b"%d\t\ta\t\n" % i for i in range(50)),
        tables={"t": {"header_rows": 1}},
    )
    expected = assert_paths_agree(dump, expect_bytes=False)
    assert expected.startswith(b"0\t\\N\ta\t\\N\n") and expected.count(b"\n") == 50


# -- MySQL --tab -----------------------------------------------------------------------------------


def test_mysql_escapes_on_bytes(tmp_path):
    data = (
        b"x\\\\y\\\ttab\\\nnl\t2020-01-02 03:04:05\t\\N\n"
        b"cr\r\\\nlf\\r\\n\\t\t\\N\t\n"
        b"\\\\N\t2020-01-02 03:04:05\t\xc3\xa9\\\\\\\\\n"
    )
    dump = make_dump(tmp_path, data, dialect="mysql", schema=DATES, name="t.txt")
    expected = assert_paths_agree(dump)
    assert expected == (
        b"x\\\\y\\ttab\\nnl\t2020-01-02 03:04:05\t\\N\n"
        b"cr\\r\\nlf\\r\\n\\t\t\\N\t\n"
        b"\\\\N\t2020-01-02 03:04:05\t\xc3\xa9\\\\\\\\\n"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"a\\Nb\t2020-01-02\t\\N\n",  # \N inside a field: "N" for the per-row path
        b"a\\Zb\t2020-01-02\t\\N\n",  # \Z \b \0 and unknown escapes: per-row
        b"a\\qb\t2020-01-02\t\\N\n",
        b"a\t0000-00-00 00:00:00\tb\n",  # zero date -> NULL
    ],
)
def test_mysql_blocks_the_byte_path_refuses_still_agree(tmp_path, data):
    dump = make_dump(tmp_path, data, dialect="mysql", schema=DATES, name="t.txt")
    assert_paths_agree(dump, expect_bytes=False)
    with pytest.raises(AssertionError, match="byte path"):
        byte_path_copy_text(dump)


def test_mysql_nul_escape_is_named(tmp_path):
    dump = make_dump(
        tmp_path,
        b"ok\t2020-01-02\tb\na\\0b\t2020-01-02\tb\n",
        dialect="mysql",
        schema=DATES,
        name="t.txt",
    )
    with pytest.raises(FormatError, match="NUL") as error:
        chunks(dump, chunk_bytes=8)
    assert (error.value.line, error.value.column) == (2, "a")


# -- randomized: many block boundaries, many field shapes ------------------------------------------

BCP_PIECES = ["", "", "\0", "a", "xyz", "\\", "\\\\", "\r", "é", "€uro", "𝄞", "N", "\\N", " "]
MYSQL_PIECES = [
    "",
    "a",
    "xyz",
    "\\\\",
    "\\\t",
    "\\\n",
    "\\\r",
    "\r",
    "\\N",
    "\\n",
    "\\t",
    "\\r",
    "é",
    "€",
    "N",
]


def random_rows(rng: random.Random, pieces: list[str], rows: int, fields: int, mysql: bool) -> str:
    out = []
    for _ in range(rows):
        values = []
        for _ in range(fields):
            if mysql and rng.random() < 0.15:
                values.append("\\N")
            elif not mysql and rng.random() < 0.1:
                values.append(rng.choice(["", "\0"]))
            else:
                values.append(
                    "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 4))).replace(
                        "\0", ""
                    )
                    or "v"
                )
        out.append("\t".join(values) + "\n")
    return "".join(out)


@pytest.mark.parametrize("seed", range(6))
def test_random_blocks_agree_with_the_per_row_path(tmp_path, seed):
    rng = random.Random(seed)
    # The first record ends in LF (not CR LF), so LF is the row terminator and CRs are data.
    bcp = "first\t\t\0\t\n" + random_rows(rng, BCP_PIECES, 399, 4, mysql=False)
    if seed % 2:
        bcp = bcp.replace(
            "\n", "\nline\n", 3
        )  # LF inside a first field: bcp's data (fallback blocks)
    dump = make_dump(tmp_path, bcp.encode())
    expected = assert_paths_agree(
        dump,
        chunk_sizes=(rng.randrange(8, 64), rng.randrange(64, 2048), 1 << 20),
        expect_bytes=False,
    )
    assert expected.count(b"\n") == 400
    mysql = random_rows(rng, MYSQL_PIECES, 400, 3, mysql=True)
    dump = make_dump(
        tmp_path,
        mysql.encode(),
        dialect="mysql",
        schema=json.dumps({"columns": [{"name": f"c{i}", "type": "text"} for i in range(3)]}),
        name="t.txt",
    )
    assert (
        assert_paths_agree(
            dump,
            chunk_sizes=(rng.randrange(8, 64), rng.randrange(64, 2048), 1 << 20),
            expect_bytes=False,
        ).count(b"\n")
        == 400
    )


def test_bytes_blocks_pickle_for_workers_and_encode_there(tmp_path):
    dump = make_dump(tmp_path, b"".join(b"%d\t\ta\\b\t\0\n" % i for i in range(100)))
    encoder = BlockEncoder(*entry_of(dump)[1:])
    out, records = b"", 0
    for block, terminator, _ in blocks_of(dump, 128):
        chunk, count = encoder.encode(
            *pickle.loads(pickle.dumps((block, terminator))), first_record=records + 1
        )
        out, records = out + chunk, records + count
    assert records == 100 and out == per_row_copy_text(dump)


def test_for_copy_passes_bcp_blocks_as_they_are_unless_they_hold_empty_strings(tmp_path):
    dump = make_dump(tmp_path, b"1\t\ta\\b\tc\rd\n")
    fast = ByteFastPath(dump.tables["t"].file_format, dump.tables["t"].schema.columns)
    # NULL '' (bcp's own empty field); backslash and CR escaped as COPY text wants them.
    assert fast.for_copy(b"1\t\ta\\b\tc\rd\n") == (b"1\t\ta\\\\b\tc\\rd\n", 1, "")
    # A NUL field (bcp's empty string) cannot be written with NULL '': rewritten with \N.
    assert fast.for_copy(b"1\t\0\t\tx\n") == (b"1\t\t\\N\tx\n", 1, "\\N")
    # Invalid UTF-8 is left to PostgreSQL (the loader re-reads to name the column); convert()
    # refuses.
    assert fast.for_copy(b"1\t\xff\t\tx\n") == (b"1\t\xff\t\tx\n", 1, "")
    assert fast.convert(b"1\t\xff\t\tx\n") is None
