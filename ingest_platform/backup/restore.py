"""Restoring a backup into a database, and proving the result.

1. Before the target is touched: the manifest is read (a directory without one, or of another
   format version, is refused) and every file's size and SHA-256 is checked; a missing,
   truncated or corrupted file is named and nothing is restored.
2. A target holding any table, view or sequence is refused unless ``replace``: then the backup's
   schemas are dropped and recreated (other schemas are left alone).
3. A marker (schema ``ingest_restore``) says a restore of this backup is under way; a restore
   killed at any point leaves it, and running the restore again starts over (the backup's
   schemas are dropped again), so it converges. The marker goes when the restore is verified.
4. The schema's pre-data section (types, tables, functions, views) from the backup's pg_dump
   archive (``migration/pg_tools``, ``migration/schema``), then each table's files loaded by one
   COPY in its own transaction (``jobs`` tables at once), its keys and indexes right after it
   (``_PostData``; its index builds and its proof at once, ``_concurrent_builds``), then foreign
   keys, triggers and the rest of post-data, then the sequences.
5. Every restored table is compared with the backup's fingerprint (``verify``) right after its
   COPY, while other tables load; and, when `source_dsn` is given and answers, with the source.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from ingest_platform.backup import files, types
from ingest_platform.backup.manifest import BackupError, backup_id, read_manifest, verify_files
from ingest_platform.backup.verify import (
    ROW_HASH_SUM,
    compare_with_fingerprint,
    compare_with_source,
    use_text_settings,
)
from ingest_platform.bulk_ingest.arrow_copy import ArrowEncoder, ArrowValueError
from ingest_platform.consistency.compare import Comparison
from ingest_platform.errors import IngestError, first_line
from ingest_platform.migration import pg_tools
from ingest_platform.migration.schema import _ENTRY, _run_script
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect, server_address

logger = logging.getLogger("ingest_platform.backup")
MARKER_SCHEMA = "ingest_restore"
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", MARKER_SCHEMA)


@dataclass
class TableRestore:
    table: str
    rows: int
    seconds: float

    @property
    def line(self) -> str:
        rate = self.rows / max(self.seconds, 1e-9)
        return f"{self.table}: {self.rows:,} rows restored, {rate:,.0f} rows/s"


@dataclass
class RestoreResult:
    tables: list[TableRestore] = field(default_factory=list)
    against_backup: list[Comparison] = field(default_factory=list)
    against_source: list[Comparison] = field(default_factory=list)
    source_note: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.against_backup)

    def text(self) -> str:
        lines = []
        if not self.against_backup and self.tables:
            lines.append(
                "The backup holds no fingerprints (taken with fingerprints=False): the restored "
                "rows were not compared with it."
            )
        for c in self.against_backup:
            verdict = "same rows as the backup" if c.passed else "DIFFERENT from the backup"
            lines.append(
                f"{c.what}: {verdict} (backup {c.left_rows:,} rows, restored {c.right_rows:,},"
                f" {c.buckets} buckets, {c.differing_buckets} differ)"
            )
            lines += [f"    {d.key} {d.status} {d.detail}".rstrip() for d in c.differences]
        for c in self.against_source:
            verdict = "same rows as the source" if c.passed else "differs from the source now"
            lines.append(
                f"{c.what}: {verdict} (source {c.left_rows:,} rows, restored {c.right_rows:,})"
            )
            lines += [f"    {d.key} {d.status} {d.detail}".rstrip() for d in c.differences]
        if self.source_note:
            lines.append(self.source_note)
        return "\n".join(lines)


def restore(
    directory: Path | str,
    target_dsn: str,
    *,
    tables: list[str] | None = None,
    replace: bool = False,
    jobs: int = 2,
    source_dsn: str | None = None,
    on_table=lambda done: None,
) -> RestoreResult:
    """Restore the backup in `directory` into `target_dsn` (see the module's docstring)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    entries = _selected(manifest, tables)
    archive = directory / manifest["schema_archive"]
    this_backup = backup_id(manifest)
    with connect(target_dsn, autocommit=True) as target:
        version = target.info.server_version
        resuming = _marker(target) == this_backup
        occupied = _occupied(target)
        if occupied and not (replace or resuming):
            shown = ", ".join(occupied[:5]) + (" ..." if len(occupied) > 5 else "")
            raise BackupError(
                f"The target {server_address(target_dsn)} is not empty (it holds {shown}): "
                "nothing was restored. Restore into an empty database, or pass --replace to drop "
                f"and recreate schema(s) {', '.join(manifest['schemas'])} there."
            )
        _set_marker(target, this_backup)
    clock = _Phases()
    pre, post = (pg_tools.section_sql(archive, s, version) for s in pg_tools.SECTIONS)
    with connect(target_dsn) as target:
        with target.transaction():
            for schema in manifest["schemas"]:
                name = sql.Identifier(schema)
                target.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
                target.execute(sql.SQL("CREATE SCHEMA {}").format(name))
            _run_script(target, pre)
        # A parent's rows as an older (bucket) fingerprint reads them include its children's:
        # those are proved after all loads.
        parents = set(
            target.execute(
                "SELECT n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid ="
                " i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace"
            ).fetchall()
        )
        target.rollback()
    clock.done("checks and schema")
    result = RestoreResult()
    # A fingerprint is proved right after its table is loaded, while other tables load (keys and
    # indexes are not needed to hash the rows); bucket fingerprints without their key columns
    # recorded (the oldest backups) after the keys.
    early = all(
        "key" in e["fingerprint"] or e["fingerprint"].get("kind") == ROW_HASH_SUM
        for e in entries
        if "fingerprint" in e
    )

    def proved_early(entry: dict) -> bool:
        if "fingerprint" not in entry or not early:
            return False
        recorded = entry["fingerprint"]
        return (
            recorded.get("kind") == ROW_HASH_SUM or (entry["schema"], entry["name"]) not in parents
        )

    post_data = _PostData.of(post)

    def load(entry: dict) -> tuple[TableRestore, Comparison | None]:
        loaded = _load_table(directory, target_dsn, entry)
        builds, attach = _concurrent_builds(
            post_data.by_table.get(f"{entry['schema']}.{entry['name']}", [])
        )
        # The proof and the table's index builds read the table at once, each on its own
        # connection (none locks out the others): one table's keys no longer wait for its proof
        # and for each other while the other worker idles.
        with ThreadPoolExecutor(max_workers=min(len(builds), BUILDS_AT_ONCE) + 1) as side:
            proving = side.submit(_prove, target_dsn, entry) if proved_early(entry) else None
            for done in [side.submit(post_data.run, target_dsn, [b]) for b in builds]:
                done.result()
            proved = proving.result() if proving is not None else None
        post_data.run(target_dsn, attach)
        return loaded, proved

    # The biggest tables first: the last one to start is a small one, so the workers end together.
    biggest_first = sorted(entries, key=lambda e: -e.get("rows", 0))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done, proved in pool.map(load, biggest_first):
            on_table(done)
            result.tables.append(done)
            if proved is not None:
                result.against_backup.append(proved)
    clock.done("data, keys, indexes" + (" and proof" if early else ""))
    post_data.after_loads(target_dsn, {f"{e['schema']}.{e['name']}" for e in entries})
    with connect(target_dsn) as target:
        with target.transaction():
            for s in manifest["sequences"]:
                if s["last_value"] is not None:
                    sequence = qualified(s["schema"], s["name"]).as_string(target)
                    target.execute(
                        "SELECT setval(%s::regclass, %s, true)", (sequence, s["last_value"])
                    )
    clock.done("foreign keys, the rest of post-data, sequences")
    late = [e for e in entries if not proved_early(e)]
    if any("fingerprint" in e for e in late):
        _verify(target_dsn, late, result, jobs)
        clock.done("proof")
    if source_dsn:
        _compare_source(source_dsn, target_dsn, entries, result)
    if result.passed:
        with connect(target_dsn, autocommit=True) as target:
            target.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(MARKER_SCHEMA))
            )
    return result


class _Phases:
    """Logs how long each step took (what a slow restore spent its time on)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        logger.info(f"restore: {step} took {now - self.last:.2f} s")
        self.last = now


def _selected(manifest: dict, tables: list[str] | None) -> list[dict]:
    entries = manifest["tables"]
    if not tables:
        return entries
    by_name = {f"{e['schema']}.{e['name']}": e for e in entries}
    missing = [t for t in tables if t not in by_name]
    if missing:
        raise BackupError(
            f"The backup holds no table {', '.join(missing)}: it has "
            f"{', '.join(sorted(by_name)) or 'no tables'}."
        )
    return [by_name[t] for t in tables]


def _occupied(target: psycopg.Connection) -> list[str]:
    rows = target.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT n.nspname = ANY(%s)"
        " AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1",
        (list(_SYSTEM_SCHEMAS),),
    ).fetchall()
    return [r[0] for r in rows]


def _marker(target: psycopg.Connection) -> str | None:
    exists = target.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{MARKER_SCHEMA}.running",)
    ).fetchone()
    if not exists or not exists[0]:
        return None
    row = target.execute(
        sql.SQL("SELECT backup FROM {}.running").format(sql.Identifier(MARKER_SCHEMA))
    ).fetchone()
    return row[0] if row else None


def _set_marker(target: psycopg.Connection, backup_id: str) -> None:
    schema = sql.Identifier(MARKER_SCHEMA)
    with target.transaction():
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        target.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.running (backup text NOT NULL)").format(schema)
        )
        target.execute(sql.SQL("DELETE FROM {}.running").format(schema))
        target.execute(sql.SQL("INSERT INTO {}.running VALUES (%s)").format(schema), (backup_id,))


# ----------------------------------------------------------------------------- loading


def _escape(text: pa.Array) -> pa.Array:
    """COPY text escapes: backslash first, then the characters COPY reads as separators."""
    for raw, escaped in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = pc.replace_substring(text, raw, escaped)
    return text


def copy_text(columns: list[dict], batch: pa.RecordBatch) -> pa.Buffer | None:
    """The batch as COPY text rows, computed on whole columns."""
    if not batch.num_rows:
        return None
    fields = []
    for i, column in enumerate(columns):
        text = types.kind_of(column).to_text(column, batch.column(i))
        if column["kind"] not in ("int", "float", "bool", "decimal", "bytea", "uuid", "date",
                                  "timestamp", "timestamptz", "time", "interval"):  # fmt: skip
            text = _escape(text)
        fields.append(pc.fill_null(text, "\\N"))
    rows = pc.binary_join_element_wise(*fields, "\t") if len(fields) > 1 else fields[0]
    rows = pc.binary_join_element_wise(rows, "", "\n").cast(pa.large_string())
    buffers = rows.buffers()
    offsets = memoryview(buffers[1]).cast("q")
    return buffers[2][offsets[rows.offset] : offsets[rows.offset + len(rows)]]


# Kinds binary COPY (``bulk_ingest/arrow_copy.py``) writes from the stored Arrow arrays, and money
# (``money_cents``). Others (inet, enums and every other type kept as text, uuid, interval,
# arrays) go as text.
_BINARY_KINDS = {"int", "float", "bool", "decimal", "text", "bytea", "date", "timestamp",
                 "timestamptz", "time", "json"}  # fmt: skip
_SENTINELS = {
    "date": (types.DATE_MINUS_INFINITY, types.DATE_INFINITY),
    "timestamp": (types.MICROS_MINUS_INFINITY, types.MICROS_INFINITY),
    "timestamptz": (types.MICROS_MINUS_INFINITY, types.MICROS_INFINITY),
}
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # signature, flags, extension length
_BINARY_TRAILER = b"\xff\xff"

# Money is stored as PostgreSQL's text of it, which lc_monetary shapes ("-$1,234.56" under the C
# and en_US locales). Its binary form is an int8 of the currency's smallest unit, scaled by the
# locale's fraction digits. So money goes binary only when the target prints money in that
# shape with two fraction digits (``money_prints_as_cents``) and every stored value has it
# (``types.money_shaped``): then the value's digits are the int8 the target's own text input would
# make (``types.money_cents``). Otherwise the table goes as text, parsed by the target as before.
# The proof hashes money's text on the target, so a value changed on the way would fail the
# restore, never pass it.
_MONEY_PROBE = "SELECT (-1234567.89)::numeric::money::text, (0.05)::numeric::money::text"
_MONEY_PRINTED = ("-$1,234,567.89", "$0.05")


def money_prints_as_cents(target: psycopg.Connection) -> bool:
    """Whether `target` (this session's lc_monetary) prints money as "-$1,234.56"."""
    return tuple(target.execute(_MONEY_PROBE).fetchone() or ()) == _MONEY_PRINTED


def _is_money(column: dict) -> bool:
    return column.get("pg_base") == "money"


@dataclass
class BinaryCopy:
    """How a table's stored batches become binary COPY data: the encoder, and the positions of
    money columns, sent as int8 cents."""

    encoder: ArrowEncoder
    money: list[int]

    def encode(self, batch: pa.RecordBatch) -> list:
        if self.money:
            arrays = batch.columns
            for i in self.money:
                # Every value's shape was checked by binary_copy; only the range is left.
                cents = types.money_cents(pc.cast(arrays[i], pa.string()), shaped=True)
                if cents is None:
                    name = batch.schema.names[i]
                    raise ValueError(f"column {name} holds a money value beyond int8's range")
                arrays[i] = cents
            batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        return self.encoder.encode(batch)


def binary_copy(directory: Path, entry: dict, money_as_cents: bool = False) -> BinaryCopy | None:
    """The binary COPY of a table stored in Parquet whose every column binary COPY takes, or None
    (text COPY). Infinite dates and timestamps are stored as their type's extreme values,
    which binary COPY would shift from 1970 to PostgreSQL's epoch: a table whose Parquet
    statistics show one (or have none) goes as text. Money columns count when
    `money_as_cents` (the target prints money as "-$1,234.56", ``money_prints_as_cents``) and
    every stored value has that shape."""
    columns = entry["columns"]
    money = [i for i, c in enumerate(columns) if _is_money(c)] if money_as_cents else []
    if not columns or any(
        c["kind"] not in _BINARY_KINDS for i, c in enumerate(columns) if i not in money
    ):
        return None
    if not all(name.endswith(".parquet") for name in entry["files"]):
        return None
    schema = types.arrow_schema(columns)
    for name in entry["files"]:
        parquet = pq.ParquetFile(directory / name)
        if not _finite(parquet.metadata, columns):
            return None
        if money:
            stored = parquet.read(columns=[columns[i]["name"] for i in money])
            for values in stored.columns:
                if not types.money_shaped(pc.cast(values, pa.string())):
                    return None
    for i in money:
        schema = schema.set(i, schema.field(i).with_type(pa.int64()))
    typnames = ["int8" if i in money else c.get("typname", "") for i, c in enumerate(columns)]
    try:
        encoder = ArrowEncoder.of(schema, [c["name"] for c in columns], typnames)
    except ArrowValueError:
        return None
    return BinaryCopy(encoder, money) if encoder is not None else None


def _finite(meta: pq.FileMetaData, columns: list[dict]) -> bool:
    """No date or timestamp of the file is stored as an infinity (its statistics say so)."""
    for i, column in enumerate(columns):
        sentinels = _SENTINELS.get(column["kind"])
        if sentinels is None:
            continue
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(i).statistics
            if stats is None:
                if meta.row_group(group).num_rows:
                    return False
                continue
            if not stats.has_min_max:
                if stats.null_count < meta.row_group(group).num_rows:
                    return False
                continue
            low, high = stats.min_raw, stats.max_raw  # days or microseconds, as stored
            if low <= sentinels[0] or high >= sentinels[1]:
                return False
    return True


def _load_table(directory: Path, target_dsn: str, entry: dict) -> TableRestore:
    started = time.monotonic()
    label = f"{entry['schema']}.{entry['name']}"
    columns = entry["columns"]
    rows = 0
    try:
        with connect(target_dsn) as target:
            use_text_settings(target, local=True)
            money = any(_is_money(c) for c in columns) and money_prints_as_cents(target)
            binary = binary_copy(directory, entry, money_as_cents=money)
            names = binary.encoder.columns if binary is not None else [c["name"] for c in columns]
            # FREEZE: the table is truncated in the same transaction, so its rows are written
            # frozen (no hint-bit writes when the proof then reads them, nothing left for VACUUM
            # to freeze).
            statement = sql.SQL("COPY {} ({}) FROM STDIN ({}FREEZE)").format(
                qualified(entry["schema"], entry["name"]),
                sql.SQL(", ").join(sql.Identifier(name) for name in names),
                sql.SQL("FORMAT binary, " if binary is not None else ""),
            )
            target.execute(  # ONLY: a parent table's TRUNCATE would empty its loaded children
                sql.SQL("TRUNCATE ONLY {}").format(qualified(entry["schema"], entry["name"]))
            )
            cursor = target.cursor()
            # A thread sends each batch while the next is read and turned into COPY data.
            with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
                if binary is not None:
                    copy.write(_BINARY_SIGNATURE)
                for name in entry["files"]:
                    for batch in files.read_batches(directory / name, columns):
                        if binary is not None:
                            for data in binary.encode(batch):
                                copy.write(data)
                        else:
                            text = copy_text(columns, batch)
                            if text is not None:
                                copy.write(text)
                        rows += batch.num_rows
                if binary is not None:
                    copy.write(_BINARY_TRAILER)
            target.commit()
    except ArrowValueError as exc:
        raise BackupError(
            f"{label}: restoring failed: column {exc.column}: {exc.message}. The backup's file "
            "holds a value the target's column does not take."
        ) from None
    except (psycopg.Error, pa.ArrowException, OSError, ValueError) as exc:
        raise BackupError(
            f"{label}: restoring failed: {first_line(exc)}. Run the restore again (it starts "
            "over); if it fails the same way, the target server may not take this type."
        ) from None
    logger.info(f"{label}: {rows:,} rows ({'binary' if binary is not None else 'text'} COPY)")
    return TableRestore(label, rows, time.monotonic() - started)


# ----------------------------------------------------------------------------- keys and indexes

# Index builds sort every row: more memory than PostgreSQL's default 64MB keeps a 2M-row key's
# sort in memory (per connection, for this restore's statements only).
INDEX_MEMORY = "256MB"
# A table's index builds at once (each worker's): at most this many INDEX_MEMORY sorts per worker.
BUILDS_AT_ONCE = 2
_INDEX_TABLE = re.compile(r"^CREATE (?:UNIQUE )?INDEX \S+ ON (?:ONLY )?(\S+) ", re.MULTILINE)


@dataclass
class _PostData:
    """pg_dump's post-data section split in two. ``by_table``: each table's primary key, unique
    and check constraints and indexes, in order ("schema.table" as pg_dump prints it); they need
    nothing but their table, so each table's are built as soon as it is loaded, in the worker
    that loaded it, while other tables load. ``rest``: foreign keys (they need the keys), index
    attachments, triggers, rules, comments, in the archive's order after all loads."""

    preamble: str
    by_table: dict[str, list[str]]
    rest: list[str]

    @classmethod
    def of(cls, script: str) -> _PostData:
        starts = [m.start() for m in _ENTRY.finditer(script)] + [len(script)]
        by_table: dict[str, list[str]] = {}
        rest: list[str] = []
        for start, end in zip(starts, starts[1:], strict=False):
            entry = script[start:end]
            header = _ENTRY.match(entry)
            assert header is not None
            name, kind, schema = header.groups()
            table = None
            if kind == "CONSTRAINT":
                table = f"{schema}.{name.split(' ')[0]}"
            elif kind == "INDEX":
                found = _INDEX_TABLE.search(entry)
                table = found.group(1) if found else None
            if table is None:  # (a name pg_dump quotes, say: built after the loads)
                rest.append(entry)
            else:
                by_table.setdefault(table, []).append(entry)
        return cls(script[: starts[0]], by_table, rest)

    def run(self, target_dsn: str, entries: list[str]) -> None:
        if not entries:
            return
        with connect(target_dsn) as target:
            with target.transaction():
                target.execute(
                    "SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_MEMORY,)
                )
                _run_script(target, self.preamble + "".join(entries))

    def after_loads(self, target_dsn: str, loaded: set[str]) -> None:
        """The tables' statements not built by their loads (tables not restored: a
        partitioned parent, ``--tables``), then the rest."""
        for table, statements in self.by_table.items():
            if table not in loaded:
                self.run(target_dsn, statements)
        self.run(target_dsn, self.rest)


# A primary key or unique constraint in the form pg_dump writes for plain columns: built as a
# unique index of the constraint's name (a SHARE lock: it runs beside the proof and the table's
# other index builds), then made the constraint by ``USING INDEX`` (no second build). Any other
# form (NULLS NOT DISTINCT, INCLUDE, WITH, DEFERRABLE, expressions) is run as pg_dump wrote it.
_KEY = re.compile(
    r"^ALTER TABLE ONLY (\S+)\n    ADD CONSTRAINT (\S+) (PRIMARY KEY|UNIQUE) \(([^()]*)\);\n",
    re.MULTILINE,
)


def _concurrent_builds(entries: list[str]) -> tuple[list[str], list[str]]:
    """(index builds that can run at once, what runs after them in order) of one table's
    post-data entries."""
    builds: list[str] = []
    after: list[str] = []
    for entry in entries:
        header = _ENTRY.match(entry)
        kind = header.group(2) if header else ""
        body = entry[header.end() :].strip().removeprefix("--").strip() if header else ""
        key = _KEY.search(entry)
        if kind == "CONSTRAINT" and key is not None and body == key.group(0).strip():
            table, name, constraint, columns = key.groups()
            head = entry[: key.start()]
            builds.append(f"{head}CREATE UNIQUE INDEX {name} ON {table} USING btree ({columns});\n")
            attach = f"ADD CONSTRAINT {name} {constraint} USING INDEX {name}"
            after.append(f"{head}ALTER TABLE ONLY {table}\n    {attach};\n")
        elif kind == "INDEX" and body.startswith("CREATE INDEX ") and body.count(";") == 1:
            builds.append(entry)
        else:
            after.append(entry)
    return builds, after


def _prove(target_dsn: str, entry: dict) -> Comparison:
    with connect(target_dsn) as target:
        use_text_settings(target)
        recorded, columns = entry["fingerprint"], entry["columns"]
        return compare_with_fingerprint(target, entry["schema"], entry["name"], recorded, columns)


def _verify(target_dsn: str, entries: list[dict], result: RestoreResult, jobs: int) -> None:
    """Each table against its fingerprint, `jobs` tables at once (each its own connection)."""
    proving = [e for e in entries if "fingerprint" in e]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        result.against_backup.extend(pool.map(lambda e: _prove(target_dsn, e), proving))


def _compare_source(
    source_dsn: str, target_dsn: str, entries: list[dict], result: RestoreResult
) -> None:
    try:
        with connect(source_dsn) as source, connect(target_dsn) as target:
            use_text_settings(source)
            use_text_settings(target)
            for entry in entries:
                result.against_source.append(
                    compare_with_source(source, target, entry["schema"], entry["name"])
                )
    except IngestError as exc:
        result.source_note = f"The source was not compared: {first_line(exc)}"
