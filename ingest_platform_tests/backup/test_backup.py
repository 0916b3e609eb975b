"""Backups to Parquet and Avro against real PostgreSQL servers, read back by other readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import fastavro
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest_platform.backup import BackupError, backup, restore
from ingest_platform.backup.manifest import INCOMPLETE, MANIFEST
from ingest_platform.errors import SchemaError

pytestmark = pytest.mark.postgres

ALL_TYPES = """
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy | very');
    CREATE TABLE every_type (
        id bigserial PRIMARY KEY, i2 smallint, i4 int, n numeric(12,3),
        nbig numeric(60,10), nfree numeric, f8 float8, f4 real, b bool, s text, v varchar(10),
        by bytea, d date, ts timestamp, tz timestamptz, tm time, iv interval, j json,
        jb jsonb, u uuid, ai int[], at text[], e mood, addr inet);
    CREATE INDEX every_type_s ON every_type (s);
    CREATE VIEW every_text AS SELECT id, s FROM every_type;
    INSERT INTO every_type (i2, i4, n, nbig, nfree, f8, f4, b, s, v, by, d, ts, tz, tm, iv, j, jb,
                            u, ai, at, e, addr) VALUES
     (1, 2, 1.5, 12345678901234567890123456789012345678901234567890.0123456789, 'NaN', 'NaN',
      'Infinity', true, '', 'x', '\\x00ff', 'infinity', '-infinity',
      '2020-01-01 12:00:00.123456+05', '24:00:00', '1 year 2 mons -3 days 04:05:06.000007',
      '{"a": [1, 2]}', '{"b": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}',
      '{"a,b","c\\"d",NULL,"NULL"}', 'happy | very', '10.0.0.1/8'),
     (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
     (-32768, 2147483647, -999999999.999, -1e49, 1e400, 1.7976931348623157e308, -1.5e-45, false,
      E'tab\\there\\nnewline \\\\ back \u00fc \U0001f600', 'ü', '', '0001-01-01',
      '9999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', '00:00:00', '-1 microseconds',
      'null', '[]', '00000000-0000-0000-0000-000000000000', '{}', '{}', 'sad', '::1'),
     (0, 0, 0, 0, -0.0, -0.0, 1e-45, true, 'a|b', 'N', '\\x', '2024-02-29',
      '2024-02-29 00:00:00', '1969-12-31 23:59:59.999999+00', '12:34:56.789012', '0',
      '"x"', '1.5', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{-1}', '{""}', 'ok', '1.2.3.4');
    SELECT setval('every_type_id_seq', 1000);
"""


def _execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def _rows_as_text(dsn: str, table: str = "every_type") -> list[tuple]:
    # Independent of the comparison engine: every column as PostgreSQL prints it.
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        return conn.execute(f"SELECT t::text FROM {table} t ORDER BY id").fetchall()


@pytest.fixture
def source(pg_dsn) -> str:
    _execute(pg_dsn, ALL_TYPES)
    return pg_dsn


@pytest.mark.parametrize("file_format", ["parquet", "avro"])
def test_every_type_round_trips_and_restores_proven(source, target_dsn, tmp_path, file_format):
    manifest = backup(source, tmp_path / "b", file_format=file_format, rows_per_file=3)
    (table,) = manifest["tables"]
    assert table["rows"] == 4 and len(table["files"]) == 2  # several files for a big table
    assert manifest["format_version"] == 1 and manifest["server_version"] >= 150000
    assert "CREATE TABLE public.every_type" in manifest["schema_ddl"]
    result = restore(tmp_path / "b", target_dsn, source_dsn=source)
    assert result.passed, result.text()
    assert [c.passed for c in result.against_source] == [True]
    assert _rows_as_text(target_dsn) == _rows_as_text(source)
    with psycopg.connect(target_dsn) as conn:  # keys and indexes after the data, sequences, views
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert {"every_type_pkey", "every_type_s"} <= indexes
        assert conn.execute("SELECT nextval('every_type_id_seq')").fetchone() == (1001,)
        assert conn.execute("SELECT count(*) FROM every_text").fetchone() == (4,)
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'ingest_restore'")
        assert not conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = 'ingest_restore'"
        ).fetchone()


def test_parquet_files_have_logical_types_for_other_readers(source, tmp_path):
    manifest = backup(source, tmp_path / "b")
    path = tmp_path / "b" / manifest["tables"][0]["files"][0]
    schema = pq.read_schema(path)
    expected = {
        "i2": pa.int16(),
        "n": pa.decimal128(12, 3),
        "nbig": pa.decimal256(60, 10),
        "nfree": pa.string(),
        "f4": pa.float32(),
        "by": pa.binary(),
        "d": pa.date32(),
        "ts": pa.timestamp("us"),
        "tz": pa.timestamp("us", "UTC"),
        "tm": pa.time64("us"),
        "u": pa.uuid(),
        "j": pa.json_(),
        "ai": pa.list_(pa.int32()),
    }
    for name, arrow_type in expected.items():
        assert schema.field(name).type == arrow_type, name
    assert schema.field("e").metadata == {b"pg_type": b"mood"}
    parquet = str(pq.ParquetFile(path).schema)
    assert "u (UUID)" in parquet and "j (JSON)" in parquet
    assert "(Decimal(precision=12, scale=3))" in parquet
    assert "(Timestamp(isAdjustedToUTC=true, timeUnit=microseconds" in parquet
    # DuckDB reads the same file and sees types, not strings.
    db = duckdb.connect()
    described = dict(
        (name, kind) for name, kind, *_ in db.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()
    )
    assert described["n"] == "DECIMAL(12,3)"
    assert described["tz"] == "TIMESTAMP WITH TIME ZONE"
    assert described["ts"] == "TIMESTAMP"
    assert described["u"] == "UUID"
    assert described["d"] == "DATE"
    assert described["ai"] == "INTEGER[]"
    values = db.execute(f"SELECT n, s, u::text, ai FROM '{path}' WHERE id = 1").fetchone()
    assert values is not None and str(values[0]) == "1.500" and values[1] == ""
    assert values[2] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" and values[3] == [1, None, 3]
    assert db.execute(f"SELECT count(*) FROM '{path}' WHERE s IS NULL").fetchone() == (1,)


def test_parquet_encodings_follow_each_columns_values_and_other_readers_read_them(pg_dsn, tmp_path):
    _execute(pg_dsn, "CREATE TABLE enc (id bigint PRIMARY KEY, dept int, hired_at timestamp,"
             " amount numeric(12, 2), score float8, name text);"
             " INSERT INTO enc SELECT g, g % 5, timestamp '2020-01-01' + g * interval '7 min',"
             " g * 1.25, g / 3.0, 'n' || (g % 7) FROM generate_series(1, 5000) g")  # fmt: skip
    manifest = backup(pg_dsn, tmp_path / "b")
    path = tmp_path / "b" / manifest["tables"][0]["files"][0]
    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(6)}
    for many in ("id", "hired_at"):  # many distinct values: deltas
        assert "DELTA_BINARY_PACKED" in encodings[many], encodings
    assert "BYTE_STREAM_SPLIT" in encodings["score"], encodings
    assert "RLE_DICTIONARY" not in encodings["amount"], encodings
    for few in ("dept", "name"):  # few distinct values: the dictionary
        assert "RLE_DICTIONARY" in encodings[few], encodings
    totals = "sum(id), sum(dept), max(hired_at), sum(amount), sum(score), count(DISTINCT name)"
    found = duckdb.connect().execute(f"SELECT {totals} FROM '{path}'")
    with psycopg.connect(pg_dsn) as conn:
        expected = conn.execute(f"SELECT {totals} FROM enc").fetchone()
    got = found.fetchone()
    assert got is not None and expected is not None
    assert got[:4] + got[5:] == expected[:4] + expected[5:]
    assert got[4] == pytest.approx(expected[4])  # float sums: summation order


def test_avro_files_have_logical_types(source, tmp_path):
    manifest = backup(source, tmp_path / "b", file_format="avro")
    with open(tmp_path / "b" / manifest["tables"][0]["files"][0], "rb") as f:
        reader = fastavro.reader(f)
        fields = {f["name"]: f for f in reader.writer_schema["fields"]}  # type: ignore[index]
        records = list(reader)
    assert {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3} in fields["n"][
        "type"
    ]
    assert ["null", "string", {"type": "long", "logicalType": "timestamp-micros"}] == fields["tz"][
        "type"
    ]
    assert {"type": "string", "logicalType": "uuid"} in fields["u"]["type"]
    assert fields["e"]["pg_type"] == "mood"
    first = records[0]
    assert str(first["n"]) == "1.500" and first["s"] == "" and first["d"] == "infinity"
    assert records[1]["s"] is None


def test_numeric_nan_in_a_decimal_column_is_refused_by_name(pg_dsn, tmp_path):
    _execute(pg_dsn, "CREATE TABLE prices (id int PRIMARY KEY, p numeric(10,2));"
             " INSERT INTO prices VALUES (1, 1.5), (2, 'NaN')")  # fmt: skip
    with pytest.raises(SchemaError, match=r"public.prices: column p \(numeric\(10,2\)\).*NaN"):
        backup(pg_dsn, tmp_path / "b")
    assert not (tmp_path / "b" / MANIFEST).exists() and (tmp_path / "b" / INCOMPLETE).exists()


def test_multidimensional_array_is_refused_by_name(pg_dsn, tmp_path):
    _execute(pg_dsn, "CREATE TABLE grid (id int PRIMARY KEY, m int[]);"
             " INSERT INTO grid VALUES (1, '{{1,2},{3,4}}')")  # fmt: skip
    with pytest.raises(SchemaError, match=r"public.grid: column m .*multidimensional"):
        backup(pg_dsn, tmp_path / "b")


def _backup_dir(source: str, tmp_path: Path) -> tuple[Path, dict]:
    manifest = backup(source, tmp_path / "b", rows_per_file=2)
    return tmp_path / "b", manifest


def _assert_empty(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        assert not conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ).fetchone()


def test_damaged_backups_are_named_and_nothing_is_restored(source, target_dsn, tmp_path):
    directory, manifest = _backup_dir(source, tmp_path)
    first, second = manifest["tables"][0]["files"]
    data = bytearray((directory / first).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / first).write_bytes(bytes(data))
    with pytest.raises(BackupError, match=rf"{first} does not match its SHA-256.*Nothing was"):
        restore(directory, target_dsn)
    (directory / second).write_bytes((directory / second).read_bytes()[:-10])
    with pytest.raises(BackupError, match=rf"{second} has \d+ bytes, the manifest says"):
        restore(directory, target_dsn)
    (directory / second).unlink()
    with pytest.raises(BackupError, match=rf"{second} is missing"):
        restore(directory, target_dsn)
    _assert_empty(target_dsn)


def test_not_a_backup_and_unknown_versions_are_refused(source, target_dsn, tmp_path):
    with pytest.raises(BackupError, match="is not a backup \\(no manifest.json\\)"):
        restore(tmp_path, target_dsn)
    with pytest.raises(BackupError, match="is not a directory"):
        restore(tmp_path / "nowhere", target_dsn)
    directory, _ = _backup_dir(source, tmp_path)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["format_version"] = 99
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        BackupError, match="format version 99; this ingest_platform reads version 1"
    ):
        restore(directory, target_dsn)
    (directory / MANIFEST).write_text("{not json")
    with pytest.raises(BackupError, match="is not valid JSON"):
        restore(directory, target_dsn)
    _assert_empty(target_dsn)
    with pytest.raises(BackupError, match="not empty and holds no backup"):
        backup(source, tmp_path)  # tmp_path holds "b"


def test_backup_refuses_to_overwrite_and_names_unknown_tables(source, tmp_path):
    _backup_dir(source, tmp_path)
    with pytest.raises(BackupError, match="already holds a complete backup"):
        backup(source, tmp_path / "b")
    with pytest.raises(SchemaError, match="No table public.nope in the selected schemas"):
        backup(source, tmp_path / "c", tables=["public.nope"])


def test_non_empty_target_is_refused_unless_replace(source, target_dsn, tmp_path):
    directory, _ = _backup_dir(source, tmp_path)
    _execute(target_dsn, "CREATE TABLE public.keep_me (x int); INSERT INTO keep_me VALUES (7)")
    with pytest.raises(BackupError, match=r"is not empty \(it holds public.keep_me\).*--replace"):
        restore(directory, target_dsn)
    with psycopg.connect(target_dsn) as conn:
        assert conn.execute("SELECT x FROM keep_me").fetchall() == [(7,)]
    assert restore(directory, target_dsn, replace=True).passed
    assert _rows_as_text(target_dsn) == _rows_as_text(source)


def test_restore_across_major_versions(source, other_dsn, tmp_path):
    directory, _ = _backup_dir(source, tmp_path)
    result = restore(directory, other_dsn, source_dsn=source)
    assert result.passed and all(c.passed for c in result.against_source), result.text()
    assert _rows_as_text(other_dsn) == _rows_as_text(source)


_DAMAGE = {
    "a changed value": "UPDATE every_type SET s = 'changed' WHERE id = 2",
    "'' become NULL": "UPDATE every_type SET s = NULL WHERE id = 1",
    "values swapped between rows": "UPDATE every_type SET i4 = CASE id WHEN 1 THEN 0 ELSE 2 END"
    " WHERE id IN (1, 4)",
    "values swapped between columns": "UPDATE every_type SET s = v, v = s WHERE id = 4",
    "NULL become 0 (the zero a NULL is hashed as)": "UPDATE every_type SET i2 = 0, i4 = 0"
    " WHERE id = 2",
    "NULL become epoch": "UPDATE every_type SET ts = 'epoch', u = '00000000-0000-0000-0000-"
    "000000000000' WHERE id = 2",
    "a timestamp a microsecond later": "UPDATE every_type SET ts = ts + interval '1 us'"
    " WHERE id = 4",
    "a missing row": "DELETE FROM every_type WHERE id = 3",
    "a duplicated row": "ALTER TABLE every_type DROP CONSTRAINT every_type_pkey;"
    " INSERT INTO every_type SELECT * FROM every_type WHERE id = 2",
    "a row missing, another twice": "ALTER TABLE every_type DROP CONSTRAINT every_type_pkey;"
    " DELETE FROM every_type WHERE id = 3; INSERT INTO every_type SELECT * FROM every_type"
    " WHERE id = 2",
}


def _against_fingerprint(dsn: str, table: dict):
    from ingest_platform.backup.verify import compare_with_fingerprint, use_text_settings

    with psycopg.connect(dsn) as conn:
        use_text_settings(conn)
        recorded, columns = table["fingerprint"], table["columns"]
        return compare_with_fingerprint(conn, "public", "every_type", recorded, columns)


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_the_proof_catches_a_changed_missing_or_duplicated_row(
    source, target_dsn, tmp_path, damage
):
    directory, manifest = _backup_dir(source, tmp_path)
    (table,) = manifest["tables"]
    assert table["fingerprint"]["kind"] == "row_hash_sum" and table["fingerprint"]["rows"] == 4
    assert restore(directory, target_dsn).passed
    assert _against_fingerprint(target_dsn, table).passed
    _execute(target_dsn, _DAMAGE[damage])
    found = _against_fingerprint(target_dsn, table)
    assert not found.passed and found.differing_buckets == 1, damage
    assert "rows in the backup" in found.differences[0].detail


def test_an_older_backups_bucket_fingerprint_is_still_proved(source, target_dsn, tmp_path):
    # Backups written before the row-hash sum recorded the comparison engine's md5 buckets.
    from ingest_platform.backup.verify import text_side, use_text_settings

    directory, manifest = _backup_dir(source, tmp_path)
    (table,) = manifest["tables"]
    with psycopg.connect(source) as conn:
        use_text_settings(conn)
        side = text_side(conn, "public", "every_type", "backup")
        buckets = {k: list(v) for k, v in side.buckets(1, None).items()}
    table["fingerprint"] = {"depth": 1, "key": ["id"], "buckets": buckets}
    assert restore(directory, target_dsn).passed
    assert _against_fingerprint(target_dsn, table).passed
    _execute(target_dsn, _DAMAGE["a changed value"])
    assert not _against_fingerprint(target_dsn, table).passed


def test_backup_is_one_snapshot_while_writes_run(pg_dsn, target_dsn, tmp_path):
    # Transfers between two tables keep their sum at 1000; a backup of both must too.
    _execute(pg_dsn, "CREATE TABLE a (id int PRIMARY KEY, amount int);"
             " CREATE TABLE b (id int PRIMARY KEY, amount int);"
             " INSERT INTO a SELECT g, 10 FROM generate_series(1, 50) g;"
             " INSERT INTO b SELECT g, 10 FROM generate_series(1, 50) g;")  # fmt: skip
    stop = threading.Event()

    def transfer() -> None:
        with psycopg.connect(pg_dsn) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                with conn.transaction():
                    conn.execute("UPDATE a SET amount = amount - 1 WHERE id = %s", (n % 50 + 1,))
                    conn.execute("INSERT INTO b VALUES (%s, 1)", (1000 + n,))

    writer = threading.Thread(target=transfer)
    writer.start()
    try:
        time.sleep(0.3)
        manifest = backup(pg_dsn, tmp_path / "b", jobs=2)
    finally:
        stop.set()
        writer.join()
    assert restore(tmp_path / "b", target_dsn).passed
    with psycopg.connect(target_dsn) as conn:
        total = conn.execute("SELECT (SELECT sum(amount) FROM a) + (SELECT sum(amount) FROM b)")
        assert total.fetchone() == (1000,)
    assert sum(t["rows"] for t in manifest["tables"]) > 100


_PAUSING = """
import sys, time
from ingest_platform.backup import backup, restore
def pause(done):
    print("TABLE DONE", flush=True)
    time.sleep(60)
if sys.argv[1] == "backup":
    backup(sys.argv[2], sys.argv[3], jobs=1, on_table=pause)
else:
    restore(sys.argv[3], sys.argv[2], jobs=1, on_table=pause)
"""


def _kill_after_first_table(action: str, dsn: str, directory: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    process = subprocess.Popen(
        [sys.executable, "-c", _PAUSING, action, dsn, str(directory)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line == b"TABLE DONE\n", line
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def _two_tables(dsn: str) -> None:
    _execute(dsn, "CREATE TABLE one (id int PRIMARY KEY); CREATE TABLE two (id int PRIMARY KEY);"
             " INSERT INTO one SELECT generate_series(1, 100);"
             " INSERT INTO two SELECT generate_series(1, 100);")  # fmt: skip


def test_kill_9_during_backup_leaves_no_manifest_and_the_next_backup_succeeds(
    pg_dsn, target_dsn, tmp_path
):
    _two_tables(pg_dsn)
    directory = tmp_path / "b"
    _kill_after_first_table("backup", pg_dsn, directory)
    assert (directory / INCOMPLETE).exists() and not (directory / MANIFEST).exists()
    assert any((directory / "data").rglob("*.parquet"))
    with pytest.raises(BackupError, match="incomplete backup .* cannot be restored"):
        restore(directory, target_dsn)
    _assert_empty(target_dsn)
    manifest = backup(pg_dsn, directory)
    assert [t["rows"] for t in manifest["tables"]] == [100, 100]
    assert not (directory / INCOMPLETE).exists()
    assert restore(directory, target_dsn).passed


def test_kill_9_during_restore_then_running_it_again_converges(pg_dsn, target_dsn, tmp_path):
    _two_tables(pg_dsn)
    directory = tmp_path / "b"
    backup(pg_dsn, directory)
    _kill_after_first_table("restore", target_dsn, directory)
    with psycopg.connect(target_dsn) as conn:  # half restored: one table has its rows
        assert conn.execute("SELECT count(*) FROM one").fetchone() == (100,)
    result = restore(directory, target_dsn)  # no --replace needed: it is the same restore
    assert result.passed, result.text()
    assert _rows_as_text(target_dsn, "one") == _rows_as_text(pg_dsn, "one")
    assert _rows_as_text(target_dsn, "two") == _rows_as_text(pg_dsn, "two")


def test_a_timestamp_outside_years_1_to_9999_is_refused_by_name(pg_dsn, tmp_path):
    _execute(pg_dsn, "CREATE TABLE old (id int PRIMARY KEY, at timestamp);"
             " INSERT INTO old VALUES (1, '0044-03-15 12:00:00 BC')")  # fmt: skip
    with pytest.raises(SchemaError, match=r"public.old: column at holds a timestamp without time"
                       r" zone outside the years 1 to 9999"):  # fmt: skip
        backup(pg_dsn, tmp_path / "b")


def test_a_backup_without_fingerprints_restores_but_says_it_is_unproven(
    source, target_dsn, tmp_path
):
    backup(source, tmp_path / "b", fingerprints=False)
    result = restore(tmp_path / "b", target_dsn)
    assert result.against_backup == [] and "holds no fingerprints" in result.text()
    assert _rows_as_text(target_dsn) == _rows_as_text(source)


def test_tables_binary_copy_takes_restore_by_it_exactly(pg_dsn, target_dsn, tmp_path, caplog):
    # Binary COPY for tables of plain kinds and money (as int8 cents); infinity (stored as the
    # type's extreme value) and types binary COPY does not write (uuid here) go as text. Both
    # restore every value.
    from ingest_platform.backup.restore import binary_copy

    columns = (
        "id bigint PRIMARY KEY, n numeric(12,3), f float8, b bool, s text, v varchar(5),"
        " by bytea, d date, ts timestamp, tz timestamptz, tm time, j json, jb jsonb"
    )
    values = """
        (1, 1.5, 'NaN', true, '', 'ü', '\\x00ff', '2024-02-29', '0001-01-01 00:00:00',
         '2020-01-01 12:00:00.123456+05', '24:00:00', '{"a": [1]}', '{"b": null}'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, -999999999.999, '-Infinity', false, E'tab\\tnl\\n\\\\', 'N', '\\x', '1970-01-01',
         '9999-12-31 23:59:59.999999', '1969-12-31 23:59:59.999999+00', '00:00:00', 'null',
         '[]')"""
    _execute(pg_dsn, f"CREATE TABLE plain ({columns}); INSERT INTO plain VALUES {values};"
             f" CREATE TABLE endless ({columns}); INSERT INTO endless VALUES {values};"
             " UPDATE endless SET d = 'infinity', ts = '-infinity' WHERE id = 1;"
             " CREATE TABLE other (id int PRIMARY KEY, u uuid);"
             " INSERT INTO other VALUES (1, gen_random_uuid());"
             " CREATE TABLE cash (id int PRIMARY KEY, m money, n money NOT NULL);"
             " INSERT INTO cash VALUES (1, '92233720368547758.07', '-92233720368547758.08'),"
             "   (2, NULL, '-0.05'), (3, '0', '1234567.89'), (4, '-1000', '0.10')")  # fmt: skip
    manifest = backup(pg_dsn, tmp_path / "b")
    chosen = {
        t["name"]: binary_copy(tmp_path / "b", t, money_as_cents=True) is not None
        for t in manifest["tables"]
    }
    assert chosen == {"plain": True, "endless": False, "other": False, "cash": True}
    with caplog.at_level("INFO", logger="ingest_platform.backup"):
        result = restore(tmp_path / "b", target_dsn)
    assert result.passed, result.text()
    assert "public.cash: 4 rows (binary COPY)" in caplog.text  # the server prints "$1,234.56"
    for table in ("plain", "endless", "other", "cash"):
        assert _rows_as_text(target_dsn, table) == _rows_as_text(pg_dsn, table), table


def test_money_text_becomes_cents_only_in_the_shape_it_is_read_in():
    from ingest_platform.backup.types import money_cents

    text = pa.array(["$0.05", "-$1,234,567.89", None, "-$92,233,720,368,547,758.08", "$0.00",
                     "$92,233,720,368,547,758.07", "-$0.10", "$999.99"])  # fmt: skip
    assert money_cents(text).to_pylist() == [5, -123456789, None, -(2**63), 0, 2**63 - 1, -10,
                                             99999]  # fmt: skip
    assert money_cents(text.slice(1, 2)).to_pylist() == [-123456789, None]
    for other in ("€1.234,56", "$1,234.5", "1,234.56", "$1234.56", "($1.00)", "$1,23.00",
                  "$92,233,720,368,547,758.08", "$100,000,000,000,000,000.00"):  # fmt: skip
        assert money_cents(pa.array(["$1.00", other])) is None, other


def test_keys_and_indexes_of_tables_not_restored_are_built_too(pg_dsn, target_dsn, tmp_path):
    # Each restored table gets its keys and indexes right after its load; a table --tables
    # leaves out (and a partitioned parent, which holds no rows) gets them after all loads.
    _execute(pg_dsn, "CREATE TABLE one (id int PRIMARY KEY, at date);"
             " CREATE TABLE two (id int PRIMARY KEY, one_id int REFERENCES one (id));"
             " CREATE INDEX two_one ON two (one_id);"
             " CREATE TABLE parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
             " CREATE TABLE parted_2026 PARTITION OF parted"
             "   FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
             " CREATE INDEX parted_at ON parted (at);"
             " INSERT INTO one SELECT g, '2026-01-01' FROM generate_series(1, 50) g;"
             " INSERT INTO two SELECT g, g FROM generate_series(1, 50) g;"
             " INSERT INTO parted SELECT g, '2026-02-01' FROM generate_series(1, 9) g")  # fmt: skip
    backup(pg_dsn, tmp_path / "b")
    result = restore(tmp_path / "b", target_dsn, tables=["public.one", "public.parted_2026"])
    assert result.passed, result.text()
    with psycopg.connect(target_dsn) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        constraints = {r[0] for r in conn.execute("SELECT conname FROM pg_constraint")}
        assert conn.execute("SELECT count(*) FROM parted").fetchone() == (9,)
        assert conn.execute("SELECT count(*) FROM two").fetchone() == (0,)
    assert {"one_pkey", "two_pkey", "two_one", "parted_pkey", "parted_at"} <= indexes
    assert {"parted_2026_pkey", "parted_2026_at_idx"} <= indexes
    assert "two_one_id_fkey" in constraints


def test_keys_built_beside_the_proof_are_the_sources_constraints(pg_dsn, target_dsn, tmp_path):
    # Plain primary keys and unique constraints are built as unique indexes beside the proof and
    # the table's other indexes, then attached by USING INDEX; other forms run as pg_dump wrote
    # them. Either way the target's constraints and indexes are the source's.
    _execute(pg_dsn, "CREATE TABLE k (id int PRIMARY KEY, a int, b text, c int, d int,"
             " UNIQUE (a, b), UNIQUE NULLS NOT DISTINCT (c), UNIQUE (d) INCLUDE (a));"
             " CREATE INDEX k_b ON k (b DESC);"
             " INSERT INTO k SELECT g, g, g::text, g, g FROM generate_series(1, 500) g"
             )  # fmt: skip
    backup(pg_dsn, tmp_path / "b")
    result = restore(tmp_path / "b", target_dsn)
    assert result.passed, result.text()
    described = (
        "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid), i.relname"
        " FROM pg_constraint c LEFT JOIN pg_class i ON i.oid = c.conindid"
        # Keys only: PostgreSQL 18 lists NOT NULL as constraints too (contype 'n'), 15 does not.
        " WHERE c.conrelid = 'public.k'::regclass AND c.contype IN ('p', 'u') ORDER BY 1"
    )
    indexes = "SELECT indexdef FROM pg_indexes WHERE tablename = 'k' ORDER BY 1"
    with psycopg.connect(pg_dsn) as source, psycopg.connect(target_dsn) as target:
        expected = source.execute(described).fetchall()
        assert len(expected) == 4
        assert target.execute(described).fetchall() == expected
        assert target.execute(indexes).fetchall() == source.execute(indexes).fetchall()
        with pytest.raises(psycopg.errors.UniqueViolation):
            target.execute("INSERT INTO k VALUES (1, 0, '', 0, 0)")
