"""Table files: Parquet or Avro writers fed record batches, and readers giving them back.

A table's rows go to ``part-00000.<ext>``, ``part-00001.<ext>``, ... of its directory, a new file
every ``rows_per_file`` rows, so a big table is several files that readers (and restores) can
take in parallel. Parquet files are zstd-compressed with Arrow's logical types (DECIMAL,
TIMESTAMP with the UTC adjustment flag, UUID, JSON, DATE, TIME); Avro files are deflate blocks
whose schema carries Avro's logical types (decimal, timestamp-micros, local-timestamp-micros,
date, time-micros, uuid) and each field's PostgreSQL type as ``pg_type``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest_platform.backup import types

EXTENSIONS = {"parquet": "parquet", "avro": "avro"}
ROW_GROUP_ROWS = 1_000_000
ROW_GROUP_BYTES = 128 << 20
_AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TableFileWriter:
    """Writes one table's batches into part files; `finish()` returns [(path, rows)]."""

    def __init__(self, directory: Path, file_format: str, columns: list[dict], rows_per_file: int):
        self.directory, self.file_format, self.columns = directory, file_format, columns
        self.rows_per_file = rows_per_file
        self.schema = types.arrow_schema(columns)
        self.files: list[tuple[Path, int]] = []
        self._writer: _ParquetPart | _AvroPart | None = None

    def _open(self, first: pa.RecordBatch | None = None) -> _ParquetPart | _AvroPart:
        path = self.directory / f"part-{len(self.files):05d}.{EXTENSIONS[self.file_format]}"
        if self.file_format == "parquet":
            return _ParquetPart(path, self.schema, first)
        return _AvroPart(path, self.columns)

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None:
                self._writer = self._open(batch)
            room = self.rows_per_file - self._writer.rows
            head, batch = batch.slice(0, room), batch.slice(room)
            self._writer.write(head)
            if self._writer.rows >= self.rows_per_file:
                self._close()

    def _close(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self.files.append((self._writer.path, self._writer.rows))
        self._writer = None

    def finish(self) -> list[tuple[Path, int]]:
        if self._writer is None and not self.files:  # an empty table still has one file
            self._writer = self._open()
        if self._writer is not None:
            self._close()
        return self.files

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the disk may be full: the directory stays INCOMPLETE anyway
                pass
            self._writer = None


# A column whose first batch has more distinct values than this share of its rows is not
# dictionary-encoded (the dictionary would be about as big as the values).
DISTINCT_SHARE = 0.25
_DELTA_TYPES = (pa.types.is_integer, pa.types.is_date, pa.types.is_time, pa.types.is_timestamp)


def parquet_encodings(
    schema: pa.Schema, first: pa.RecordBatch | None
) -> tuple[list[str], dict[str, str]]:
    """(columns to dictionary-encode, {column: encoding}) for a part file, chosen per column from
    its type and its first batch. Measured on the benchmark tables (1M rows of 10 columns, 2M HR
    hires), zstd in every case:

    - integers, dates, times, timestamps with many distinct values: DELTA_BINARY_PACKED (a
      serial key 6.4 MB -> 0.01 MB, random ids and timestamps 10-25% smaller than a dictionary);
      with few distinct values (a department id) the dictionary stays smaller;
    - float32/64: BYTE_STREAM_SPLIT (7.8 -> 6.9 MB);
    - decimals with many distinct values: PLAIN (5.0 -> 4.6 MB);
    - strings, binary, booleans, nested: the dictionary (a description 0.8 MB against 2.8).

    BYTE_STREAM_SPLIT of integers and decimals would save a little more (HR timestamps 10.7
    against 12.1 MB), but readers learned it only in 2024 (Parquet format 2.11); the encodings
    used here are read by every engine that reads Parquet v2 pages."""
    dictionary, encodings = [], {}
    for i, field in enumerate(schema):
        kind = field.type
        delta = any(check(kind) for check in _DELTA_TYPES)
        many = (
            (delta or pa.types.is_decimal(kind))
            and first is not None
            and first.num_rows > 0
            and pc.count_distinct(first.column(i)).as_py() > DISTINCT_SHARE * first.num_rows
        )
        if pa.types.is_floating(kind):
            encodings[field.name] = "BYTE_STREAM_SPLIT"
        elif delta and many:
            encodings[field.name] = "DELTA_BINARY_PACKED"
        elif not many:
            dictionary.append(field.name)  # else a decimal: PLAIN
    return dictionary, encodings


class _ParquetPart:
    """Batches are gathered into row groups of about ROW_GROUP_ROWS rows (or ROW_GROUP_BYTES):
    a row group per CSV block would be ~65,000 rows, and each row group's dictionaries and
    pages cost size (47 MB instead of 37 MB for the 1M-row benchmark table). Each column's
    encoding: ``parquet_encodings``."""

    def __init__(self, path: Path, schema: pa.Schema, first: pa.RecordBatch | None = None):
        self.path, self.rows = path, 0
        dictionary, encodings = parquet_encodings(schema, first)
        self.writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            store_schema=True,
            use_dictionary=dictionary,
            column_encoding=encodings or None,
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending)
            self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


# ----------------------------------------------------------------------------- Avro


def avro_names(columns: list[dict]) -> list[str]:
    """Avro field names: the column's name where Avro allows it, else ``c<i>`` (the PostgreSQL
    name is in the field's ``pg_name``)."""
    names = []
    for i, column in enumerate(columns):
        name = column["name"]
        names.append(name if _AVRO_NAME.match(name) and name not in names else f"c{i}")
    return names


def _branches(avro_type) -> list:
    return avro_type if isinstance(avro_type, list) else [avro_type]


def avro_schema(columns: list[dict]) -> dict:
    fields = []
    for name, column in zip(avro_names(columns), columns, strict=True):
        avro_type = types.kind_of(column).avro(column)
        if column["kind"] in _SPECIAL:  # infinity (24:00:00) as a string branch
            avro_type = ["string", avro_type]
        fields.append(
            {
                "name": name,
                "type": avro_type if column["not_null"] else ["null", *_branches(avro_type)],
                "pg_name": column["name"],
                "pg_type": column["pg_type"],
            }
        )
    return {"type": "record", "name": "row", "fields": fields}


# Values outside what Avro readers (and Python) take as dates, times and timestamps go as strings.
_SPECIAL = {
    "date": {types.DATE_INFINITY: "infinity", types.DATE_MINUS_INFINITY: "-infinity"},
    "timestamp": {types.MICROS_INFINITY: "infinity", types.MICROS_MINUS_INFINITY: "-infinity"},
    "timestamptz": {types.MICROS_INFINITY: "infinity", types.MICROS_MINUS_INFINITY: "-infinity"},
    "time": {types.DAY_MICROS: "24:00:00"},
}
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICRO = dt.timedelta(microseconds=1)


def _avro_storage(kind: str, value):
    """A date, time or timestamp fastavro read back as days or microseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        return {text: number for number, text in _SPECIAL[kind].items()}[value]
    if kind == "date":
        return (value - _EPOCH.date()).days
    if kind == "time":
        return (
            value.hour * 3600 + value.minute * 60 + value.second
        ) * 1_000_000 + value.microsecond
    return (value - (_EPOCH_UTC if value.tzinfo else _EPOCH)) // _MICRO


def _avro_values(column: dict, array: pa.Array) -> list:
    """Python values fastavro writes for the column: logical types as their storage (days,
    microseconds), so infinite dates and timestamps need no Python date."""
    kind = column["kind"]
    if kind in _SPECIAL:
        storage = array.view(pa.int32() if kind == "date" else pa.int64()).to_pylist()
        special = _SPECIAL[kind]
        return [special.get(v, v) if v is not None else None for v in storage]
    if kind == "uuid":
        return [None if v is None else str(v) for v in array.to_pylist()]
    if kind == "json":
        return types._json_text(column, array).to_pylist()
    return array.to_pylist()


class _AvroPart:
    def __init__(self, path: Path, columns: list[dict]):
        self.path, self.rows, self.columns = path, 0, columns
        self.names = avro_names(columns)
        self.file = open(path, "wb")
        self.writer = fastavro.write.Writer(
            self.file, fastavro.parse_schema(avro_schema(columns)), codec="deflate"
        )

    def write(self, batch: pa.RecordBatch) -> None:
        values = [_avro_values(c, batch.column(i)) for i, c in enumerate(self.columns)]
        for row in zip(*values, strict=True):
            self.writer.write(dict(zip(self.names, row, strict=True)))
        self.rows += batch.num_rows

    def close(self) -> None:
        try:
            self.writer.flush()
        finally:
            self.file.close()


# ----------------------------------------------------------------------------- reading back


def read_batches(
    path: Path, columns: list[dict], batch_rows: int = 65536
) -> Iterator[pa.RecordBatch]:
    """The stored batches of one part file, in the stored Arrow types."""
    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        return
    yield from _avro_batches(path, columns, batch_rows)


def _avro_batches(path: Path, columns: list[dict], batch_rows: int) -> Iterator[pa.RecordBatch]:
    schema = types.arrow_schema(columns)
    names = avro_names(columns)
    with open(path, "rb") as file:
        records = fastavro.reader(file)
        chunk: list[dict] = []
        for record in records:
            chunk.append(record)  # type: ignore[arg-type]
            if len(chunk) >= batch_rows:
                yield _avro_batch(chunk, names, columns, schema)
                chunk = []
        if chunk or not path.stat().st_size:
            yield _avro_batch(chunk, names, columns, schema)


def _avro_batch(chunk: list[dict], names, columns, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for name, column, field in zip(names, columns, schema, strict=True):
        values = [r[name] for r in chunk]
        kind = column["kind"]
        if kind in _SPECIAL:
            storage = [_avro_storage(kind, v) for v in values]
            arrays.append(
                pa.array(storage, pa.int32() if kind == "date" else pa.int64()).view(field.type)
            )
        elif kind == "uuid":
            text = [None if v is None else str(v) for v in values]  # fastavro gives UUIDs
            arrays.append(types._uuid_arrow(column, [pa.array(text, pa.string())]))
        elif kind == "json":
            arrays.append(types._json_arrow(column, [pa.array(values, pa.string())]))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
