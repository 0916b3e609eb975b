"""What lands in PostgreSQL is what was given, value by value: the chunked row path of copy_rows and
numeric_binary's Decimal encoder, edge values of every type, NULLs, row numbers past the first
chunk."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ingest_platform import ingest
from ingest_platform.bulk_ingest.copy_rows import _CHUNK_ROWS
from ingest_platform.bulk_ingest.numeric_binary import encode_decimals
from ingest_platform.errors import IngestError
from ingest_platform_tests.bulk_ingest.conftest import rows_of

# Each list: one batch, so one chunk whose numeric columns take one path of the encoder.
PLAIN_SCALE_2 = [
    "0.00",
    "-0.00",
    "1.00",
    "-1.00",
    "-0.01",
    "0.10",
    "9999.99",
    "10000.00",
    "-99999999.99",
    "12345678901234567890.12",
    "0.05",
]
PLAIN_SCALE_0 = ["0", "-0", "1", "-1", "9999", "10000", "-12345", "99999999999999999999999999999"]
PLAIN_SCALE_10 = ["0.1234567890", "-0.0000012345", "1234567890.0000000001", "0.0000010000"]
LONG = ["1234567890123456789012345678901234567890.123456789", "-0.000001000", "5.000000000"]
WIDER_THAN_THE_ENCODER = ["1" * 70 + ".5", "-2.5"]
MIXED = ["1.5", "2.25", "-3", "0E-10", "1E+3", "1E-10", "NaN", "Infinity", "-Infinity", "7.000"]
DECIMAL_BATCHES = [
    PLAIN_SCALE_2,
    PLAIN_SCALE_0,
    PLAIN_SCALE_10,
    LONG,
    WIDER_THAN_THE_ENCODER,
    MIXED,
]


def numbers_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "numbers",
        metadata,
        sa.Column("id", sa.Integer),
        sa.Column("free", sa.Numeric),
        sa.Column("money", sa.Numeric(12, 2)),
        sa.Column("qty", sa.SmallInteger),
        sa.Column("rate", sa.Numeric(19, 4)),
        schema="app",
    )


def test_encoder_takes_plain_decimals_and_declines_the_rest():
    for texts in (PLAIN_SCALE_2, PLAIN_SCALE_0, PLAIN_SCALE_10, LONG):
        fields, width = encode_decimals([Decimal(t) for t in texts])
        assert len(fields) == len(texts) and width == max(map(len, texts)) + 1
        # A narrower width from a previous chunk is retried with the right one.
        assert encode_decimals([Decimal(t) for t in texts], width=3)[0] == fields
    for texts in (WIDER_THAN_THE_ENCODER, MIXED, ["1.5", "2.25"], ["NaN"], ["1E+3"], ["0E-10"]):
        assert encode_decimals([Decimal(t) for t in texts]) is None


@pytest.mark.parametrize(
    "texts", DECIMAL_BATCHES, ids=["scale2", "scale0", "scale10", "long", "wide", "mixed"]
)
def test_decimals_land_as_psycopg_would_send_them(engine, pg, texts):
    """Against a reference table filled by a parameterised INSERT (psycopg's own Decimal dumper):
    the same text in PostgreSQL, scale included, for the unconstrained and the fixed-scale
    columns."""
    finite = [t for t in texts if Decimal(t).is_finite()]
    fits = [t for t in finite if Decimal(t).adjusted() < 10]  # numeric(12,2) / (19,4) hold these
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    rows = [
        (i, Decimal(t), Decimal(t) if t in fits else None, None, Decimal(t) if t in fits else None)
        for i, t in enumerate(texts)
    ]
    rows.append((len(rows), None, None, None, None))
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(numbers, row) for row in rows])])
    pg.execute("CREATE TABLE app.reference (LIKE app.numbers)")
    with pg.cursor() as cursor:
        cursor.executemany("INSERT INTO app.reference VALUES (%s, %s, %s, %s, %s)", rows)
    query = "SELECT id, free::text, money::text, rate::text FROM app.{} ORDER BY id"
    assert (
        pg.execute(query.format("numbers")).fetchall()
        == pg.execute(query.format("reference")).fetchall()
    )
    stored = {i: (free, money, rate) for i, free, money, _, rate in rows_of(pg, "app.numbers")}
    for i, free, money, _, rate in rows:
        assert stored[i][0].is_nan() if free is not None and free.is_nan() else stored[i][0] == free
        assert stored[i][1] == (
            None if money is None else money.quantize(Decimal("0.01"), "ROUND_HALF_UP")
        )
        assert stored[i][2] == (
            None if rate is None else rate.quantize(Decimal("0.0001"), "ROUND_HALF_UP")
        )


def test_decimals_with_more_decimals_than_the_column_round_on_the_server(engine, pg):
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    texts = ["1.005", "-1.005", "2.004", "0.995", "-0.004"]  # one scale: the encoder's path
    assert encode_decimals([Decimal(t) for t in texts]) is not None
    with engine.connect() as conn:
        ingest(
            conn,
            metadata,
            lambda w: [
                (1, [(numbers, (i, None, Decimal(t), None, None)) for i, t in enumerate(texts)])
            ],
        )
    assert [r[2] for r in rows_of(pg, "app.numbers")] == [
        Decimal(t).quantize(Decimal("0.01"), "ROUND_HALF_UP") for t in texts
    ]


def every_type_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "every",
        metadata,
        sa.Column("seq", sa.Integer),
        sa.Column("id", sa.BigInteger),
        sa.Column("i4", sa.Integer),
        sa.Column("i2", sa.SmallInteger),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("code", sa.String(12)),
        sa.Column("note", sa.Text),
        sa.Column("at", sa.DateTime),
        sa.Column("flag", sa.Boolean),
        sa.Column("ratio", sa.Double),
        schema="app",
    )


STRINGS = [
    "",
    "tab\there",
    "new\nline",
    "cr\rlf\r\n",
    "back\\slash",
    "\\N",
    "ünïcødé łódź 日本 🎉",
    "'quote\"",
    "x" * 300,
]
FLOATS = [0.0, -0.0, 1.5, -2.25e300, 5e-324, math.inf, -math.inf, math.nan]
INTS = [(-(2**63), -(2**31), -(2**15)), (2**63 - 1, 2**31 - 1, 2**15 - 1), (0, 0, 0)]


def every_type_rows(count: int) -> list[tuple]:
    rows: list[tuple] = []
    for k in range(count):
        big, i4, i2 = INTS[k % len(INTS)]
        rows.append(
            (
                k,
                k if k % 5 else big,
                i4,
                i2,
                Decimal(k % 1000 - 500).scaleb(-2),
                f"c{k % 97}",
                STRINGS[k % len(STRINGS)],
                dt.datetime(2024, 2, 29, 23, 59, 59, k % 1_000_000),
                k % 3 == 0,
                FLOATS[k % len(FLOATS)],
            )
        )
    for column in range(1, 10):  # a NULL in each column, in rows of their own
        rows[7 + column * 13] = tuple(
            None if i == column else v for i, v in enumerate(rows[7 + column * 13])
        )
    return rows


def same(stored, given) -> bool:
    if isinstance(given, float):
        return (
            math.isnan(stored)
            if math.isnan(given)
            else stored == given and math.copysign(1, stored) == math.copysign(1, given)
        )
    return type(stored) is type(given) and stored == given if given is not None else stored is None


def test_every_type_lands_as_given_across_chunks(engine, pg):
    metadata = sa.MetaData()
    every = every_type_table(metadata)
    rows = every_type_rows(2 * _CHUNK_ROWS + 123)
    with engine.connect() as conn:
        result = ingest(conn, metadata, lambda w: [(1, [(every, row) for row in rows])])
    assert result.rows == {"app.every": len(rows)}
    stored = rows_of(pg, "app.every")
    assert len(stored) == len(rows)
    for number, (got, given) in enumerate(zip(stored, rows, strict=True), 1):
        for name, a, b in zip(every.columns.keys(), got, given, strict=True):
            assert same(a, b), f"row {number}, column {name}: stored {a!r}, given {b!r}"


def test_rows_given_as_lists_and_ints_in_numeric_columns(engine, pg):
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    rows = [[k, k, Decimal(k), k % 7, 10**10 + k] for k in range(_CHUNK_ROWS + 10)]
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, [(numbers, row) for row in rows])])
    assert rows_of(pg, "app.numbers") == [
        (k, Decimal(k), Decimal(k), k % 7, Decimal(10**10 + k)) for k in range(_CHUNK_ROWS + 10)
    ]


@pytest.mark.parametrize(
    "column, value, message",
    [
        (2, "lots", r'column "money" \(numeric\) cannot take the str \'lots\''),
        (1, 2.5, r'column "free" \(numeric\) cannot take the float 2.5'),
        (0, "7", r'column "id" \(int4\) takes int, not str'),
        (3, 40000, r'column "qty" \(int2\) cannot hold 40000: out of range'),
        (3, 1.0, r'column "qty" \(int2\) takes int, not float'),
        (3, "1", r'column "qty" \(int2\) takes int, not str'),
    ],
)
def test_wrong_values_past_the_first_chunk_name_their_row(engine, pg, column, value, message):
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    bad_at = _CHUNK_ROWS + 500
    rows = [(k, Decimal(k), Decimal(k), 1, Decimal(k)) for k in range(3 * _CHUNK_ROWS)]
    rows[bad_at - 1] = tuple(value if i == column else v for i, v in enumerate(rows[bad_at - 1]))
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError, match=rf"Row {bad_at:,} of app.numbers in this batch: " + message
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, [(numbers, row) for row in rows])])
    assert rows_of(pg, "app.numbers") == []


def test_value_the_server_rejects_past_the_first_chunk_names_row_and_column(engine, pg):
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    rows = [(k, None, Decimal(k).scaleb(-2), 1, None) for k in range(3 * _CHUNK_ROWS)]
    rows[2 * _CHUNK_ROWS + 6] = (0, None, Decimal("10000000000.00"), 1, None)  # through the encoder
    with (
        engine.connect() as conn,
        pytest.raises(
            IngestError,
            match=rf"row {2 * _CHUNK_ROWS + 7:,} of app.numbers "
            r'in this batch, column "money": .*overflow',
        ),
    ):
        ingest(conn, metadata, lambda w: [(1, [(numbers, row) for row in rows])])


def test_interleaved_tables_over_many_chunks(engine, pg):
    metadata = sa.MetaData()
    numbers = numbers_table(metadata)
    log = sa.Table("log", metadata, sa.Column("line", sa.Text), schema="app")
    items = []
    for k in range(5 * _CHUNK_ROWS):
        items.append((numbers, (k, Decimal(k) / 8, None, None, None)))
        if k % 3 == 0:
            items.append((log if k % 2 else "app.log", (f"line {k}",)))
    with engine.connect() as conn:
        result = ingest(conn, metadata, lambda w: [(1, iter(items))], buffer_rows=100)
    assert result.rows == {"app.numbers": 5 * _CHUNK_ROWS, "app.log": len(items) - 5 * _CHUNK_ROWS}
    assert rows_of(pg, "app.numbers") == [
        (k, Decimal(k) / 8, None, None, None) for k in range(5 * _CHUNK_ROWS)
    ]
    assert rows_of(pg, "app.log") == sorted(row for table, row in items if table is not numbers)


def test_tables_of_numeric_columns_alone_or_with_one_other_or_with_bytea(engine, pg):
    import psycopg

    metadata = sa.MetaData()
    alone = sa.Table("alone", metadata, sa.Column("n", sa.Numeric(8, 3)), schema="app")
    pair = sa.Table(
        "pair", metadata, sa.Column("n", sa.Numeric), sa.Column("k", sa.Integer), schema="app"
    )
    raw = sa.Table(
        "raw",
        metadata,
        sa.Column("k", sa.Integer),
        sa.Column("n", sa.Numeric),
        sa.Column("b", sa.LargeBinary),
        schema="app",
    )
    count = _CHUNK_ROWS + 7
    items = [(alone, (Decimal(k).scaleb(-3),)) for k in range(count)]
    items += [(pair, (Decimal(-k).scaleb(-1), k)) for k in range(count)]
    items += [
        (
            raw,
            (
                k,
                Decimal(k),
                psycopg.Binary(b"\x00\\" + bytes([k % 256])) if k % 2 else bytes([k % 256]),
            ),
        )
        for k in range(count)
    ]
    with engine.connect() as conn:
        ingest(conn, metadata, lambda w: [(1, items)])
    assert rows_of(pg, "app.alone") == [(Decimal(k).scaleb(-3),) for k in range(count)]
    assert rows_of(pg, "app.pair", "2") == [(Decimal(-k).scaleb(-1), k) for k in range(count)]
    assert rows_of(pg, "app.raw") == [
        (k, Decimal(k), b"\x00\\" + bytes([k % 256]) if k % 2 else bytes([k % 256]))
        for k in range(count)
    ]
