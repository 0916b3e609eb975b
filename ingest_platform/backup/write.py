"""Taking a backup: every selected table from one exported snapshot, in parallel, into files.

1. The directory gets ``INCOMPLETE`` first (a killed or failed run leaves it, never a manifest).
2. The schema: ``pg_dump --schema-only`` of the selected schemas (``migration/pg_tools``), kept as
   ``schema.dump`` (what restores run) and as SQL text in the manifest.
3. One connection exports its snapshot (``postgres/snapshot``); ``jobs`` workers adopt it, so all
   tables are read as of one instant while the source keeps taking writes. Each table is one
   ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``, run by ``psql`` (``_PsqlCopy``: why) and
   parsed from its pipe by Arrow's streaming CSV reader in blocks
   (memory does not grow with the table), converted column by column (``types``) and written
   (``files``). In the same snapshot a second connection computes the table's fingerprint (row
   count and sum of row hashes, ``verify``), which a restore compares against.
4. Every file is synced and hashed; the manifest is written last (``manifest``).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from ingest_platform.backup import files, reuse, types
from ingest_platform.backup.manifest import (
    FORMAT,
    FORMAT_VERSION,
    INCOMPLETE,
    MANIFEST,
    BackupError,
    backup_id,
    fsync_file,
    read_manifest,
    sha256_of,
    write_manifest,
)
from ingest_platform.backup.verify import fingerprint, use_text_settings
from ingest_platform.errors import IngestError, SchemaError, first_line
from ingest_platform.migration import inventory, pg_tools
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect, server_address
from ingest_platform.postgres.snapshot import adopt_snapshot, export_snapshot

logger = logging.getLogger("ingest_platform.backup")
SCHEMA_ARCHIVE = "schema.dump"
CSV_BLOCK_BYTES = 8 << 20
ROWS_PER_FILE = 4_000_000

TABLES = """
    SELECT c.oid, n.nspname, c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%s) AND c.relkind = 'r' ORDER BY 2, 3"""


@dataclass(frozen=True)
class TableBackup:
    schema: str
    name: str
    rows: int
    bytes: int
    seconds: float
    reused: bool = False

    @property
    def line(self) -> str:
        if self.reused:
            return (
                f"{self.schema}.{self.name}: {self.rows:,} rows, {self.bytes / 1e6:,.1f} MB,"
                " unchanged version: files reused from the previous backup"
            )
        rate = self.rows / max(self.seconds, 1e-9)
        return (
            f"{self.schema}.{self.name}: {self.rows:,} rows, {self.bytes / 1e6:,.1f} MB,"
            f" {rate:,.0f} rows/s"
        )


def backup(
    source_dsn: str,
    to_dir: Path | str,
    *,
    file_format: str = "parquet",
    schemas: list[str] | None = None,
    tables: list[str] | None = None,
    jobs: int = 2,
    rows_per_file: int = ROWS_PER_FILE,
    fingerprints: bool = True,
    previous: Path | str | None = None,
    on_table=lambda done: None,
) -> dict:
    """Write a backup of `source_dsn` into `to_dir` (see the module's docstring); returns the
    manifest. `tables`: "schema.table" names (default: every table of `schemas`, default every
    user schema). `previous`: an earlier backup whose unchanged dump-version files are reused
    (``reuse``)."""
    if file_format not in files.EXTENSIONS:
        raise BackupError(f"Unknown backup format {file_format!r}: use parquet or avro.")
    directory = Path(to_dir)
    previous_dir = Path(previous) if previous is not None else None
    earlier = read_manifest(previous_dir) if previous_dir is not None else None
    _prepare(directory)
    started = dt.datetime.now(dt.UTC)
    with connect(source_dsn) as source:
        selected = inventory.selected_schemas(source, list(schemas or []))
        version, version_text = source.info.server_version, source.execute("SHOW server_version")
        version_text = version_text.fetchone()[0]  # type: ignore[index]
        database = source.info.dbname
    pg_tools.dump_schema(source_dsn, selected, directory / SCHEMA_ARCHIVE)
    ddl = "".join(
        pg_tools.section_sql(directory / SCHEMA_ARCHIVE, s, version) for s in pg_tools.SECTIONS
    )
    with connect(source_dsn) as source:
        snapshot = export_snapshot(source)
        found = source.execute(TABLES, (selected,)).fetchall()
        wanted = _select_tables(found, tables)
        entries = [
            {"oid": oid, "schema": s, "name": n, "columns": types.table_columns(source, oid)}
            for oid, s, n in wanted
        ]
        sequences = source.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences"
            " WHERE schemaname = ANY(%s) ORDER BY 1, 2",
            (selected,),
        ).fetchall()
        known: dict[str, str] = {}  # reused file -> its SHA-256, already checked
        reuse_from: dict[int, dict] = {}
        for i, entry in enumerate(entries):
            entry["directory"] = f"data/{i:04d}"
            identity = reuse.version_identity(source, entry["oid"], entry["schema"], entry["name"])
            if identity is not None:
                entry["version_identity"] = identity
                before = reuse.reusable(source, entry, earlier, file_format, fingerprints)
                if before is not None:
                    reuse_from[i] = before

        def one(i: int, entry: dict) -> TableBackup:
            if i in reuse_from:
                assert previous_dir is not None and earlier is not None
                reused = _reused(previous_dir, earlier, reuse_from[i], directory, entry, known)
                if reused is not None:
                    return reused
            return _table(
                source_dsn, snapshot, directory, entry, file_format, rows_per_file, fingerprints
            )

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            done = pool.map(one, range(len(entries)), entries)
            results = []
            for result in done:
                on_table(result)
                results.append(result)
        source.rollback()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backup_id": f"{database}@{started.isoformat()}",
        "file_format": file_format,
        "created": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "source": server_address(source_dsn),
        "database": database,
        "server_version": version,
        "server_version_text": version_text,
        "schemas": selected,
        "schema_archive": SCHEMA_ARCHIVE,
        "schema_ddl": ddl,
        "sequences": [{"schema": s, "name": n, "last_value": v} for s, n, v in sequences],
        "tables": [{k: v for k, v in e.items() if k != "oid"} for e in entries],
        "files": {},
    }
    for name in [SCHEMA_ARCHIVE] + [f for e in entries for f in e["files"]]:
        path = directory / name
        fsync_file(path)
        digest = known.get(name) or sha256_of(path)
        manifest["files"][name] = {"sha256": digest, "bytes": path.stat().st_size}
    for entry in entries:
        for name, rows in zip(entry["files"], entry.pop("file_rows"), strict=True):
            manifest["files"][name]["rows"] = rows
    manifest["tables"] = [{k: v for k, v in e.items() if k != "oid"} for e in entries]
    write_manifest(directory, manifest)
    return manifest


def _reused(
    previous_dir: Path,
    earlier: dict,
    before: dict,
    directory: Path,
    entry: dict,
    known: dict[str, str],
) -> TableBackup | None:
    """The table's files taken over from the previous backup, or None to write them."""
    started = time.monotonic()
    hashes = reuse.link_files(previous_dir, earlier, before, directory, entry)
    if hashes is None:
        return None
    known.update(hashes)
    entry["rows"] = before["rows"]
    entry["files"] = list(hashes)
    entry["file_rows"] = [earlier["files"][name]["rows"] for name in before["files"]]
    if "fingerprint" in before:
        entry["fingerprint"] = before["fingerprint"]
    entry["reused_from"] = backup_id(earlier)
    size = sum((directory / name).stat().st_size for name in hashes)
    logger.info(f"{entry['schema']}.{entry['name']}: files reused from {previous_dir}")
    return TableBackup(
        entry["schema"], entry["name"], entry["rows"], size, time.monotonic() - started, True
    )


def _prepare(directory: Path) -> None:
    """An empty directory marked INCOMPLETE. What an interrupted backup left is removed; a
    complete backup or a directory of other files is refused."""
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"{directory} is a file: pass a directory for the backup.")
    if directory.exists() and any(directory.iterdir()):
        if (directory / MANIFEST).exists():
            raise BackupError(
                f"{directory} already holds a complete backup: choose a new directory "
                "(backups are never overwritten)."
            )
        if not (directory / INCOMPLETE).exists():
            raise BackupError(
                f"{directory} is not empty and holds no backup: choose an empty or new directory."
            )
        logger.info(f"{directory}: removing what an interrupted backup left")
        for child in directory.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        (directory / "data").mkdir(parents=True, exist_ok=True)
        (directory / INCOMPLETE).write_text("backup in progress or interrupted: no manifest yet\n")
    except OSError as exc:
        raise BackupError(f"Cannot write to {directory}: {exc.strerror}.") from None


def _select_tables(found: list[tuple], tables: list[str] | None) -> list[tuple]:
    if not tables:
        return found
    by_name = {f"{s}.{n}": (oid, s, n) for oid, s, n in found}
    missing = [t for t in tables if t not in by_name]
    if missing:
        raise SchemaError(
            f"No table {', '.join(missing)} in the selected schemas: name tables as schema.table "
            "(see --schema)."
        )
    return [by_name[t] for t in tables]


class _PsqlCopy:
    """A table's ``COPY ... TO STDOUT (FORMAT csv)`` run by ``psql`` in the exported snapshot,
    its output read from a pipe. Why not psycopg's COPY: the server sends a message per row and
    psycopg hands each to Python (a generator step, a bytes object, a copy into Arrow's buffer):
    3.7 to 4.4 s of CPU for the 1M-row benchmark table against 1.4 to 1.6 s with psql (its C
    loop writes the rows into the pipe; Arrow reads the pipe in 8 MB blocks), on 2 cores where
    CPU is the limit. The password travels in the environment (``pg_tools``), never the command
    line."""

    def __init__(self, dsn: str, snapshot: str, select: sql.Composable):
        conninfo, env = pg_tools.command_environment(dsn)
        env["PGCLIENTENCODING"] = "UTF8"  # what Arrow's CSV reader reads
        script = "\n".join(
            [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
                sql.SQL("SET TRANSACTION SNAPSHOT {};").format(sql.Literal(snapshot)).as_string(),
                "SET LOCAL bytea_output = 'hex';",
                "SET LOCAL extra_float_digits = 1;",  # shortest exact floats
                select.as_string() + ";",
                "COMMIT;",
                "",
            ]
        )
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [pg_tools.pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(script.encode())
        self.process.stdin.close()
        self.output: io.BufferedReader = self.process.stdout  # type: ignore[assignment]

    def empty(self) -> bool:
        """No rows at all (Arrow's CSV reader refuses an empty stream)."""
        return not self.output.peek(1)

    def finish(self) -> None:
        """Wait for psql; its error (the server's message) as a psycopg-like error line."""
        self.output.close()
        code = self.process.wait()
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace")
        self.errors.close()
        if code:
            raise _PsqlError(_psql_message(text) or f"psql exited with code {code}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.output.close()
        self.errors.close()


class _PsqlError(Exception):
    pass


_PSQL_PREFIX = re.compile(r"^(psql:<stdin>:\d+: |psql: )?(ERROR|FATAL|error):\s+")


def _psql_message(text: str) -> str:
    """``psql:<stdin>:5: ERROR:  relation ... does not exist`` -> ``relation ... does not
    exist`` (the first error line, without psql's prefix)."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        if _PSQL_PREFIX.match(line):
            return _PSQL_PREFIX.sub("", line).strip()
    return lines[0].strip() if lines else ""


def _table(
    dsn: str,
    snapshot: str,
    directory: Path,
    entry: dict,
    file_format: str,
    rows_per_file: int,
    fingerprints: bool,
) -> TableBackup:
    started = time.monotonic()
    label = f"{entry['schema']}.{entry['name']}"
    columns = entry["columns"]
    table_dir = directory / entry["directory"]
    table_dir.mkdir(parents=True, exist_ok=True)
    writer = files.TableFileWriter(table_dir, file_format, columns, rows_per_file)
    rows = 0
    # The fingerprint is computed by the server on a second connection in the same snapshot while
    # this thread parses and writes the COPY: the two passes overlap instead of adding up.
    alongside = ThreadPoolExecutor(max_workers=1)
    proof = alongside.submit(_fingerprint, dsn, snapshot, entry) if fingerprints else None
    copy: _PsqlCopy | None = None
    try:
        quote = lambda name: sql.Identifier(name).as_string()  # noqa: E731
        plan = types.wire_plan(columns, quote)
        select = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(sql.SQL(e) for e in plan.expressions)
            if plan.expressions
            else sql.SQL("1"),
            qualified(entry["schema"], entry["name"]),
        )
        names = [f"c{i}" for i in range(max(1, len(plan.expressions)))]
        wire_types = plan.types or [pa.int32()]
        copy = _PsqlCopy(dsn, snapshot, select)
        reader = (
            []
            if copy.empty()
            else pa_csv.open_csv(
                copy.output,
                read_options=pa_csv.ReadOptions(column_names=names, block_size=CSV_BLOCK_BYTES),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict(zip(names, wire_types, strict=True)),
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
            )
        )
        try:
            for wire in reader:
                batch = _stored_batch(label, columns, plan, wire, file_format, writer.schema)
                writer.write(batch)
                rows += batch.num_rows
        except pa.ArrowException:
            copy.finish()  # psql's error first: a failed COPY ends the stream early
            raise
        copy.finish()
        written = writer.finish()
        if proof is not None:
            entry["fingerprint"] = proof.result()
    except OSError as exc:
        writer.abort()
        raise BackupError(
            f"{label}: writing {table_dir} failed ({exc.strerror or exc}): the backup is "
            "incomplete (no manifest). Free space or choose another directory, then run it again."
        ) from None
    except (psycopg.Error, pa.ArrowException, _PsqlError) as exc:
        writer.abort()
        raise BackupError(f"{label}: {first_line(exc)}. The backup is incomplete.") from None
    except IngestError:
        writer.abort()
        raise
    finally:
        if copy is not None:
            copy.kill()
        alongside.shutdown(wait=False, cancel_futures=True)
    entry["rows"] = rows
    entry["files"] = [str(path.relative_to(directory)) for path, _ in written]
    entry["file_rows"] = [n for _, n in written]
    size = sum(path.stat().st_size for path, _ in written)
    return TableBackup(entry["schema"], entry["name"], rows, size, time.monotonic() - started)


def _fingerprint(dsn: str, snapshot: str, entry: dict) -> dict:
    with connect(dsn) as conn:
        adopt_snapshot(conn, snapshot)
        use_text_settings(conn, local=True)
        found = fingerprint(conn, entry["schema"], entry["name"], entry["columns"])
        conn.rollback()
        return found


def _stored_batch(
    label: str,
    columns: list[dict],
    plan: types.WirePlan,
    wire: pa.RecordBatch,
    file_format: str,
    schema: pa.Schema,
) -> pa.RecordBatch:
    if not columns:
        return pa.RecordBatch.from_arrays([], schema=schema).slice(0, 0)
    arrays = []
    for column, (start, end) in zip(columns, plan.spans, strict=True):
        parts = [wire.column(i) for i in range(start, end)]
        try:
            arrays.append(types.kind_of(column).to_arrow(column, parts))
        except (types.OutOfRange, types.NotStorable) as exc:
            raise types.refuse(label, str(exc)) from None
        except (pa.ArrowInvalid, ValueError) as exc:
            raise types.refuse(
                label,
                f"column {column['name']} ({column['pg_type']}) holds a value the {file_format} "
                f"type {types.arrow_field(column).type} cannot hold ({first_line(exc)}); for "
                "NaN or Infinity in numeric(p, s), change the column to numeric without a "
                "precision (kept exactly, as text)",
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
