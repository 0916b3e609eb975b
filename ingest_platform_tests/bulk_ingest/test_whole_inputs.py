"""Whole inputs in a batch besides Python rows: Arrow tables, record batches (one or an iterator),
CSV files and a dump table's COPY chunks. What lands is what the same values give as Python rows;
the upsert, its direct COPY and the modes behave as for rows; a bad value names record and column
and leaves nothing loaded."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ingest_platform import CsvFile, Mode, ingest
from ingest_platform.bulk_ingest import arrow_copy, upsert
from ingest_platform.dumps import open_dump
from ingest_platform.errors import FormatError, IngestError
from ingest_platform_tests.bulk_ingest.conftest import rows_of, stored_watermark
from ingest_platform_tests.conftest import make_zip

UTC = dt.UTC


def every_type_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("small", sa.SmallInteger),
        sa.Column("number", sa.Integer),
        sa.Column("money", sa.Numeric(12, 2)),
        sa.Column("free", sa.Numeric),
        sa.Column("code", sa.String(5)),
        sa.Column("note", sa.Text),
        sa.Column("flag", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.DateTime),
        sa.Column("at_tz", sa.DateTime(timezone=True)),
        sa.Column("clock", sa.Time),
        sa.Column("ratio", sa.Float),
        sa.Column("real", sa.REAL),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("doc", postgresql.JSONB),
        sa.Column("raw_doc", postgresql.JSON),
        schema="app",
    )


# One tuple per row, in the table's column order: NULLs, signs, edges, values past 64 bits.
ROWS = [
    (
        1,
        -32768,
        2147483647,
        Decimal("0.00"),
        Decimal("12345678901234567890123456789.123456789"),  # beyond 64 bits: the Python path
        "",
        "größe",
        True,
        dt.date(1, 1, 1),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2000, 1, 1, tzinfo=UTC),
        dt.time(0, 0),
        -0.0,
        1.5,
        b"",
        {"a": [1, "x"]},
        {"b": 2},
    ),
    (2,) + (None,) * 16,
    (
        3,
        32767,
        -2147483648,
        Decimal("-9999999999.99"),
        Decimal("-0.000001000"),
        "abcde",
        "line\nbreak\ttab \\ backslash",
        False,
        dt.date(9999, 12, 31),
        dt.datetime(1970, 1, 1),
        dt.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC),
        dt.time(23, 59, 59, 999999),
        1e300,
        -3.25,
        b"\x00\xff\x10",
        [],
        "null",
    ),
    (
        4,
        0,
        0,
        Decimal("10000.50"),
        Decimal("42"),
        "x",
        None,
        None,
        dt.date(2000, 1, 1),
        dt.datetime(1900, 3, 4, 5, 6, 7),
        None,
        None,
        float("inf"),
        None,
        None,
        "text",
        None,
    ),
]


def arrow_of(rows: list[tuple]) -> pa.Table:
    """The rows as an Arrow table with the types a user would pick (JSON as its text)."""
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "id": pa.array(columns[0], pa.int64()),
            "small": pa.array(columns[1], pa.int16()),
            "number": pa.array(columns[2], pa.int32()),
            "money": pa.array(columns[3], pa.decimal128(12, 2)),
            "free": pa.array(columns[4], pa.decimal128(38, 9)),
            "code": pa.array(columns[5], pa.string()),
            "note": pa.array(columns[6], pa.large_string()),
            "flag": pa.array(columns[7], pa.bool_()),
            "day": pa.array(columns[8], pa.date32()),
            "at": pa.array(columns[9], pa.timestamp("us")),
            "at_tz": pa.array(columns[10], pa.timestamp("us", "UTC")),
            "clock": pa.array(columns[11], pa.time64("us")),
            "ratio": pa.array(columns[12], pa.float64()),
            "real": pa.array(columns[13], pa.float32()),
            "blob": pa.array(columns[14], pa.binary()),
            "doc": pa.array([None if v is None else json.dumps(v) for v in columns[15]]),
            "raw_doc": pa.array([None if v is None else json.dumps(v) for v in columns[16]]),
        }
    )


def test_an_arrow_table_lands_as_the_same_rows_would(engine, pg):
    metadata = sa.MetaData()
    by_rows, by_arrow = every_type_table(metadata, "by_rows"), every_type_table(metadata, "arrow")
    table = arrow_of(ROWS)
    with engine.connect() as conn:
        result = ingest(
            conn, metadata, lambda w: [(1, [(by_arrow, table)] + [(by_rows, r) for r in ROWS])]
        )
    assert result.rows == {"app.arrow": 4, "app.by_rows": 4}
    assert rows_of(pg, "app.arrow") == rows_of(pg, "app.by_rows")
    # The display scale is the decimal's own, as for a Python Decimal; the column's typmod rounds.
    assert pg.execute("SELECT free::text FROM app.arrow WHERE id = 3").fetchone() == (
        "-0.000001000",
    )
    assert pg.execute("SELECT count(*) FROM app.arrow WHERE free IS NULL").fetchone() == (1,)


def test_arrow_batches_upsert_directly_then_through_staging(engine, pg, monkeypatch):
    """Into the empty table the COPY goes straight in; the next batch upserts through staging;
    an iterator of record batches and a reader give the same rows; the last row of a key wins,
    also between rows and Arrow data of one batch."""
    staging = []
    original = upsert.create_staging
    monkeypatch.setattr(
        upsert, "create_staging", lambda conn, t: staging.append(t.display) or original(conn, t)
    )
    metadata = sa.MetaData()
    items = every_type_table(metadata, "items")
    first = arrow_of(ROWS)
    changed = arrow_of([(k, 7, 7, Decimal("7.00")) + (None,) * 13 for k in (2, 3, 5)])

    def batches(watermark):
        yield 1, [(items, first)]
        yield 2, [(items, iter(changed.to_batches(max_chunksize=2)))]
        reader = pa.RecordBatchReader.from_batches(changed.schema, changed.to_batches())
        yield 3, [(items, (5, 1, 1) + (None,) * 14), (items, reader)]
        yield 4, [(items, changed.slice(2).to_batches()[0]), (items, (5, 9) + (None,) * 15)]

    with engine.connect() as conn:
        result = ingest(conn, metadata, batches)
    assert staging == ["app.items"] * 3
    assert result.rows == {"app.items": 4 + 3 + 4 + 2}
    assert pg.execute("SELECT id, small, money FROM app.items ORDER BY id").fetchall() == [
        (1, -32768, Decimal("0.00")),
        (2, 7, Decimal("7.00")),
        (3, 7, Decimal("7.00")),
        (4, 0, Decimal("10000.50")),
        (5, 9, None),
    ]
    assert stored_watermark(pg, "app") == {"app.items": 4}


@pytest.mark.parametrize("kind", ["table", "iterator"])
def test_a_key_repeated_in_arrow_data_replays_the_direct_copy(engine, pg, kind):
    """A table is encoded again for the replay; an iterator's bytes come from the spool."""
    metadata = sa.MetaData()
    items = every_type_table(metadata, "items")
    table = arrow_of(ROWS + [(1, 5) + (None,) * 15])
    data = table if kind == "table" else iter(table.to_batches(2))
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(items, data)])])
    assert pg.execute("SELECT id, small FROM app.items ORDER BY id").fetchall() == [
        (1, 5),
        (2, None),
        (3, 32767),
        (4, 0),
    ]


def test_arrow_values_are_converted_only_when_nothing_changes(engine, pg):
    """Other Arrow types are cast with pyarrow's safe cast: strings parse, smaller ints widen."""
    metadata = sa.MetaData()
    t = sa.Table(
        "t",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime),
        sa.Column("n", sa.Numeric(6, 1)),
        sa.Column("label", sa.Text),
        sa.Column("flag", sa.Boolean),
        schema="app",
    )
    table = pa.table(
        {
            "label": pa.array([1, 2], pa.int8()),
            "id": pa.array(["10", "11"]),
            "at": pa.array([1_000, 2_000_000], pa.timestamp("ns")),
            "n": pa.array([5, -6], pa.uint8().with_nullable(True) if False else pa.int8()),
            "flag": pa.array(["true", "0"]).dictionary_encode(),
        }
    )
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(t, table)])])
    assert rows_of(pg, "app.t") == [
        (10, dt.datetime(1970, 1, 1, 0, 0, 0, 1), Decimal("5"), "1", True),
        (11, dt.datetime(1970, 1, 1, 0, 0, 0, 2000), Decimal("-6"), "2", False),
    ]


def test_a_table_with_a_type_arrow_copy_does_not_encode_takes_the_row_path(engine, pg):
    metadata = sa.MetaData()
    t = sa.Table(
        "t",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("span", sa.Interval),
        schema="app",
    )
    table = pa.table({"id": [1, 2], "span": pa.array([dt.timedelta(days=1, microseconds=5), None])})
    assert arrow_copy.ArrowEncoder.of(table.schema, ["id", "span"], ["int4", "interval"]) is None
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(t, table)])])
    assert rows_of(pg, "app.t") == [(1, dt.timedelta(days=1, microseconds=5)), (2, None)]


def test_arrow_data_and_csv_files_append_to_a_table_without_a_key(engine, pg, tmp_path):
    metadata = sa.MetaData()
    log = sa.Table("log", metadata, sa.Column("line", sa.Text), sa.Column("n", sa.Integer))
    path = tmp_path / "log.csv"
    path.write_text("n,line\n3,c\n")
    table = pa.table({"n": pa.array([1, 2], pa.int32()), "line": ["a", None]})

    def batches(watermark):
        yield 1, [(log, table), (log, ("x", 0))]
        yield 2, [(log, CsvFile(path)), (log, table.to_batches()[0])]

    with engine.connect() as conn:
        assert ingest(conn, metadata, batches).rows == {"public.log": 6}
    assert rows_of(pg, "public.log", "n, line") == [
        ("x", 0),
        ("a", 1),
        ("a", 1),
        (None, 2),
        (None, 2),
        ("c", 3),
    ]


# ------------------------------------------------------------------------------ bad Arrow input


@pytest.fixture
def loaded(engine):
    """app.items holding ROWS, watermark 1: a bad batch must leave exactly this."""
    metadata = sa.MetaData()
    items = every_type_table(metadata, "items")
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(items, r) for r in ROWS])])
    return metadata, items


def run_bad(engine, metadata, item) -> None:
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(2, [(metadata.tables["app.items"], item)])])


def assert_unchanged(pg):
    assert [r[0] for r in rows_of(pg, "app.items")] == [1, 2, 3, 4]
    assert pg.execute("SELECT small FROM app.items WHERE id = 1").fetchone() == (-32768,)
    assert stored_watermark(pg, "app") == {"app.items": 1}


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


BIG = arrow_of([(k,) + ROWS[2][1:] for k in range(1, 70_001)])  # crosses encoder slices


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: with_column(BIG, "number", pa.array([2**31] + [1] * 69_999, pa.int64())),
            r'app.items, Arrow table, record 1, column "number": the value 2147483648 \(int64\) '
            r"cannot be stored as int4 unchanged",
        ),
        (
            lambda: with_column(
                BIG,
                "small",
                pa.array([1] * 66_000 + [40_000] + [1] * 3_999, pa.int32()),
            ),
            r'record 66,001, column "small": the value 40000 \(int32\) cannot be stored as int2',
        ),
        (
            lambda: with_column(
                BIG, "code", pa.array(["ok"] * 65_537 + ["toolong"] + ["ok"] * 4_462)
            ),
            r'app.items, Arrow table, record 65,538, column "code": value too long for type '
            r"character varying\(5\)",
        ),
        (
            lambda: with_column(
                BIG, "at", pa.array([0] * 7 + [1_001] + [0] * 69_992, pa.timestamp("ns"))
            ),
            r'record 8, column "at": the value .* cannot be stored as timestamp unchanged',
        ),
        (
            lambda: with_column(BIG, "at", BIG["at"].cast(pa.timestamp("us", "UTC"))),
            r'column "at": the Arrow type timestamp\[us, tz=UTC\] has a time zone',
        ),
        (
            lambda: with_column(BIG, "at_tz", BIG["at_tz"].cast(pa.timestamp("us"))),
            r'column "at_tz": the Arrow type timestamp\[us\] has no time zone',
        ),
        (
            lambda: with_column(BIG, "money", pa.array([1.5] * 70_000)),
            r'column "money": the Arrow type double is binary floating point',
        ),
        (
            lambda: with_column(BIG, "id", pa.array(["1"] * 69_999 + ["x"])),
            r'record 70,000, column "id": the value \'x\' \(string\) cannot be stored as int8',
        ),
        (
            lambda: with_column(BIG, "doc", pa.array(["{}"] * 3 + ["{oops"] + ["{}"] * 69_996)),
            r'record 4, column "doc": invalid input syntax for type json',
        ),
        (
            lambda: BIG.drop_columns(["note"]).append_column("nope", BIG["note"]),
            r'app.items: the Arrow table lacks "note" and has "nope" too many: give each column',
        ),
        (
            lambda: iter([BIG.to_batches()[0], BIG.drop_columns(["note"]).to_batches()[0]]),
            r"the Arrow record batches change their schema after 70,000 records",
        ),
        (lambda: iter([1, 2]), r"gives an iterator of int, not of pyarrow RecordBatches"),
    ],
    ids=[
        "int-overflow-first",
        "int-overflow-later-slice",
        "too-long-on-server",
        "nanoseconds",
        "aware-into-naive",
        "naive-into-aware",
        "float-into-numeric",
        "unparsable-string",
        "bad-json",
        "field-names",
        "schema-changes",
        "not-batches",
    ],
)
def test_bad_arrow_input_names_record_and_column_and_loads_nothing(
    engine, pg, loaded, make, message
):
    metadata, _ = loaded
    with pytest.raises(IngestError, match=message):
        run_bad(engine, metadata, make())
    assert_unchanged(pg)


def test_a_bad_arrow_value_in_a_direct_copy_is_named_after_the_replay(engine, pg):
    """Into an empty table: the direct COPY fails, its spool is replayed into staging, and the
    replay's error names the record; the table stays empty."""
    metadata = sa.MetaData()
    items = every_type_table(metadata, "items")
    bad = with_column(BIG, "code", pa.array(["ok"] * 69_999 + ["toolong"]))
    with (
        engine.connect() as conn,
        pytest.raises(IngestError, match=r"record 70,000, column \"code\""),
    ):
        ingest(conn, metadata, lambda w: [(1, [(items, iter(bad.to_batches()))])])
    assert rows_of(pg, "app.items") == []
    assert stored_watermark(pg, "app") == {}


# ------------------------------------------------------------------------------ CSV


def simple_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "items",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(5)),
        sa.Column("amount", sa.Numeric(8, 2)),
        sa.Column("at", sa.DateTime),
        schema="app",
    )


def test_csv_files_upsert_with_and_without_a_header(engine, pg, tmp_path):
    metadata = sa.MetaData()
    items = simple_table(metadata)
    first = tmp_path / "first.csv"
    first.write_text(
        'amount,id,at,name\n1.50,1,2020-01-01 10:00:00,"a,b"\n,2,,""\n3,3,,\n', encoding="utf-8"
    )
    second = tmp_path / "second.txt"
    second.write_bytes("2;prixé;9.99;\n4;x;;1999-12-31 23:59:59\n".encode("latin-1"))

    def batches(watermark):
        yield 1, [(items, CsvFile(first))]
        yield 2, [(items, CsvFile(second, header=False, delimiter=";", encoding="latin-1"))]

    with engine.connect() as conn:
        result = ingest(conn, metadata, batches)
    assert result.rows == {"app.items": 5}
    assert rows_of(pg, "app.items") == [
        (1, "a,b", Decimal("1.50"), dt.datetime(2020, 1, 1, 10)),
        (2, "prixé", Decimal("9.99"), None),
        (3, None, Decimal("3.00"), None),
        (4, "x", None, dt.datetime(1999, 12, 31, 23, 59, 59)),
    ]
    assert stored_watermark(pg, "app") == {"app.items": 2}


def test_a_key_repeated_in_a_csv_file_into_an_empty_table_is_replayed(engine, pg, tmp_path):
    metadata = sa.MetaData()
    items = simple_table(metadata)
    path = tmp_path / "dup.csv"
    path.write_text("id,name,amount,at\n1,a,1,\n2,b,2,\n1,c,3,\n")
    with engine.connect() as conn:
        ingest(
            conn, metadata, lambda w: [(1, [(items, (5, "row", 0, None)), (items, CsvFile(path))])]
        )
    assert rows_of(pg, "app.items") == [
        (1, "c", Decimal("3.00"), None),
        (2, "b", Decimal("2.00"), None),
        (5, "row", Decimal("0.00"), None),
    ]


@pytest.fixture
def loaded_csv(engine, tmp_path):
    metadata = sa.MetaData()
    items = simple_table(metadata)
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(items, (1, "one", Decimal(1), None))])])
    return metadata, items


@pytest.mark.parametrize(
    ("text", "options", "error", "message"),
    [
        (
            "id,name,amount,at\n2,b,2,\n3,c,abc,\n",
            {},
            FormatError,
            r"bad.csv, line 3, column amount: record 3: invalid input syntax for type numeric: "
            r"\"abc\" \(value 'abc'\); the batch was rolled back",
        ),
        (
            "2,b,2,\n3,toolong,3,\n",
            {"header": False},
            FormatError,
            r"bad.csv, line 2, column name: record 2: value too long",
        ),
        (
            "id,name,amount,at\n2,b,2\n",
            {},
            FormatError,
            r"bad.csv, line 2: record 2: missing data for column \"at\"",
        ),
        (
            "id,name,amount,when\n2,b,2,\n",
            {},
            IngestError,
            r'bad.csv: the header lacks "at" and has "when" too many',
        ),
        ("", {}, FormatError, r"bad.csv: the file is empty"),
        ("id,name,amount,at\n", {"encoding": "klingon"}, IngestError, r"encoding 'klingon'"),
    ],
    ids=["bad-number", "too-long-no-header", "short-row", "header", "empty", "encoding"],
)
def test_bad_csv_names_file_record_and_column_and_loads_nothing(
    engine, pg, tmp_path, loaded_csv, text, options, error, message
):
    metadata, items = loaded_csv
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with engine.connect() as conn, pytest.raises(error, match=message):
        ingest(
            conn,
            metadata,
            lambda w: [(2, [(items, (9, "x", 1, None)), (items, CsvFile(path, **options))])],
        )
    assert rows_of(pg, "app.items") == [(1, "one", Decimal("1.00"), None)]
    assert stored_watermark(pg, "app") == {"app.items": 1}


def test_a_missing_csv_file_is_named(engine, pg, tmp_path, loaded_csv):
    metadata, items = loaded_csv
    missing = tmp_path / "nowhere.csv"
    with engine.connect() as conn, pytest.raises(IngestError, match=r"nowhere.csv: cannot read"):
        ingest(conn, metadata, lambda w: [(2, [(items, CsvFile(missing, header=False))])])
    assert stored_watermark(pg, "app") == {"app.items": 1}


def test_csv_and_arrow_in_one_final_commit_roll_back_together(engine, pg, tmp_path, loaded_csv):
    """DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH: a bad CSV file in the second batch
    undoes the delete and the first batch (Arrow)."""
    metadata, items = loaded_csv
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,amount,at\n7,x,not a number,\n")
    first = pa.table(
        {
            "id": pa.array([5], pa.int32()),
            "name": ["five"],
            "amount": pa.array([Decimal("5.00")]),
            "at": pa.array([None], pa.timestamp("us")),
        }
    )

    def batches(watermark):
        yield 2, [(items, first)]
        yield 3, [(items, CsvFile(bad))]

    with (
        engine.connect() as conn,
        pytest.raises(FormatError, match=r"bad.csv, line 2, column amount"),
    ):
        ingest(
            conn,
            metadata,
            batches,
            ingest_mode=Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH,
        )
    assert rows_of(pg, "app.items") == [(1, "one", Decimal("1.00"), None)]
    assert stored_watermark(pg, "app") == {"app.items": 1}


# ------------------------------------------------------------------------------ dump tables

DUMP_SCHEMA = json.dumps(
    {
        "name": "items",
        "columns": [
            {"name": "id", "type": "int", "nullable": False},
            {"name": "name", "type": "varchar(5)"},
            {"name": "amount", "type": "decimal(8,2)"},
            {"name": "at", "type": "datetime"},
        ],
        "primary_key": ["id"],
    }
)


def test_a_dump_tables_copy_chunks_upsert(engine, pg, tmp_path, loaded_csv):
    metadata, items = loaded_csv
    data = "1\tuno\t1.10\t2021-05-06 07:08:09.000\n8\t\t\t\n"
    dump = open_dump(
        make_zip(tmp_path / "shop_1.zip", {"items.json": DUMP_SCHEMA, "items.dat": data}), "mssql"
    )
    with engine.connect() as conn:
        result = ingest(conn, metadata, lambda w: [(2, [(items, dump.copy_source("items"))])])
    assert result.rows == {"app.items": 2}
    assert rows_of(pg, "app.items") == [
        (1, "uno", Decimal("1.10"), dt.datetime(2021, 5, 6, 7, 8, 9)),
        (8, None, None, None),
    ]


def test_a_bad_value_in_a_dump_table_names_member_record_and_column(
    engine, pg, tmp_path, loaded_csv
):
    metadata, items = loaded_csv
    data = "2\ttwo\t2\t\n3\tthree!\t3\t\n"
    dump = open_dump(
        make_zip(tmp_path / "shop_1.zip", {"items.json": DUMP_SCHEMA, "items.dat": data}), "mssql"
    )
    with (
        engine.connect() as conn,
        pytest.raises(
            FormatError, match=r"items.dat, line 2, column name: record 2: value too long"
        ),
    ):
        ingest(conn, metadata, lambda w: [(2, [(items, dump.copy_source("items"))])])
    assert rows_of(pg, "app.items") == [(1, "one", Decimal("1.00"), None)]
    assert stored_watermark(pg, "app") == {"app.items": 1}
