"""Historical CSV files -> a staging table -> set-based checks -> the target table.

1. Each file is COPYed as text into a temporary staging table (one text column per target
   column, plus file and record number). The server parses the CSV and transcodes `encoding`;
   a file it cannot parse (wrong column count, bad bytes) is read again in Python, record by
   record, and the records that cannot be parsed are rejected with their line and raw text.
2. Set-based checks find every failing row at once: values that do not convert to the column's
   type, NULLs in NOT NULL columns, foreign keys whose parent row does not exist, and keys
   repeated within the files or already in the table.
3. ``fail`` (default): any rejected row loads nothing and the error lists every one (file, line,
   column or constraint, value). ``quarantine``: the good rows go in and the rejected ones go to
   ``ingest_import.rejects`` with file, line, reason and raw text; more than `max_rejects`
   rejected rows load nothing.

Idempotence by a record of imported files (``ingest_import.files``: target table, sha256 of the
bytes): a file imported before is skipped, whatever its name. Chosen over an upsert on the key
because it also works for tables without a key, keeps rows the warehouse changed since, and does
not report a quarantined file's rejects twice.

The common case takes two statements after the COPY (``_fast_path``): one scan finds every row
whose parent is missing, one INSERT ... SELECT loads the rest while the target's casts, NOT NULLs
and unique indexes check it; any failure there rolls back to a savepoint and step 2 runs rule by
rule. The parent tables are locked (SHARE) before the checks, so no parent can vanish between the
check and the insert. When the connection may (superuser) and the table has no triggers of its
own, the insert skips the per-row foreign-key triggers (``session_replication_role = replica``):
the set-based check has already proven every reference.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from ingest_platform.errors import FormatError, IngestError, SchemaError, first_line
from ingest_platform.postgres import catalog, etl_log
from ingest_platform.postgres.connection import connect, scalar

IMPORT_SCHEMA = "ingest_import"
SNIFF_BYTES = 8192
NUL = b"\0"
MAX_LISTED = 1000  # rejects listed in a `fail` error; all of them go to the rejects table


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    reason: str  # "column datetime: invalid input ...", "foreign key ..._fkey: no departments 99"
    value: str | None
    raw: str

    def __str__(self) -> str:
        shown = "" if self.value is None else f" (value {self.value!r})"
        return f"{self.file}, line {self.line}: {self.reason}{shown}"


@dataclass
class ImportResult:
    table: str
    loaded: int = 0
    skipped_files: list[str] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # file -> sha256, skipped ones too
    rows_by_file: dict[str, int] = field(default_factory=dict)  # rows loaded from each new file
    checks: str = ""  # "fast" (one scan + the insert) or "full" (every check marks its rows)


@dataclass(frozen=True)
class CsvOptions:
    encoding: str = "utf-8"
    delimiter: str = ","
    header: bool = False
    on_reject: str = "fail"  # or "quarantine"
    max_rejects: int | None = None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    parent_schema: str
    parent: str
    parent_columns: tuple[str, ...]


def import_csv(
    dsn: str, schema: str, table: str, files: list[Path], options: CsvOptions = CsvOptions()
) -> ImportResult:
    """Import `files` into ``schema.table`` (see the module's docstring)."""
    if options.on_reject not in ("fail", "quarantine"):
        raise IngestError(f"--on-reject must be fail or quarantine, not {options.on_reject!r}.")
    pg_encoding = _pg_encoding(options.encoding)
    result = ImportResult(f"{schema}.{table}")
    with connect(dsn) as conn:
        oid = catalog.relation_oid(conn, schema, table)
        if oid is None:
            raise SchemaError(f"Table {schema}.{table} does not exist on the target.")
        columns = catalog.columns(conn, oid)
        _ensure_bookkeeping(conn)
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                catalog.qualified(schema, table)
            )
        )
        todo = []
        for number, path in enumerate(files, start=1):
            digest = file_digest(path)
            result.digests[str(path)] = digest
            if conn.execute(
                "SELECT 1 FROM ingest_import.files WHERE target = %s AND sha256 = %s",
                (result.table, digest),
            ).fetchone():
                result.skipped_files.append(str(path))
            else:
                todo.append((number, path, digest))
        if not todo:
            conn.commit()
            return result
        _create_stage(conn, columns)
        staged: dict[int, int] = {}  # file number -> rows in staging
        for number, path, _ in todo:
            unparsed, staged[number] = _load_file(conn, columns, number, path, options, pg_encoding)
            result.rejects += unparsed
        names = {number: str(path) for number, path, _ in todo}
        _lock_parents(conn, oid)  # no parent row can vanish between the checks and the insert
        fast = _fast_path(conn, schema, table, oid, columns, names, options, len(result.rejects))
        result.checks = "full" if fast is None else "fast"
        if fast is not None:
            checked, result.loaded = fast
            result.rejects += checked
        else:
            checked = _check_rows(conn, schema, table, oid, columns, names)
            result.rejects += checked
            too_many = options.max_rejects is not None and len(result.rejects) > options.max_rejects
            if result.rejects and (options.on_reject == "fail" or too_many):
                conn.rollback()
                result.rejects.sort(key=lambda r: (r.file, r.line))
                raise RejectedRows(result, too_many, options.max_rejects)
            result.loaded = _insert_good_rows(conn, schema, table, oid, columns)
        result.rejects.sort(key=lambda r: (r.file, r.line))
        for number, path, _ in todo:
            result.rows_by_file[str(path)] = staged[number] - sum(
                1 for r in checked if r.file == str(path)
            )
        _record(conn, result, todo)
        etl_log.record(
            conn,
            kind="csv_import",
            table=result.table,
            rows=result.loaded,
            detail={"files": [str(p) for _, p, _ in todo]},
        )
        conn.commit()
    result.files = [str(p) for _, p, _ in todo]
    return result


class RejectedRows(IngestError):
    def __init__(self, result: ImportResult, too_many: bool, max_rejects: int | None):
        self.result = result
        count = len(result.rejects)
        why = (
            f"{count} rows rejected, more than --max-rejects {max_rejects}"
            if too_many
            else f"{count} rows rejected"
        )
        listed = [str(r) for r in result.rejects[:MAX_LISTED]]
        more = [f"... and {count - MAX_LISTED} more"] if count > MAX_LISTED else []
        super().__init__(
            f"Import into {result.table}: {why}; nothing was loaded. Fix the files, or import with "
            "--on-reject quarantine to load the good rows:\n" + "\n".join(listed + more)
        )


def _pg_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise IngestError(f"--encoding {encoding!r} is not an encoding Python knows.") from None
    return {"utf-8": "UTF8", "iso8859-1": "LATIN1", "cp1252": "WIN1252", "iso8859-15": "LATIN9",
            "ascii": "SQL_ASCII"}.get(name, name.upper().replace("-", ""))  # fmt: skip


def file_digest(path: Path) -> str:
    """The file's sha256; an error naming the file if it is missing, empty or binary."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
            digest = hashlib.sha256(head)
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise FormatError(f"cannot read it ({exc.strerror})", file=str(path)) from None
    if not head.strip():
        raise FormatError("the file is empty: nothing to import", file=str(path))
    if NUL in head:
        raise FormatError(
            f"not a CSV text file (a NUL byte at byte {head.index(NUL) + 1})", file=str(path)
        )
    return digest.hexdigest()


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE SCHEMA IF NOT EXISTS ingest_import;"
        "CREATE TABLE IF NOT EXISTS ingest_import.files (target text NOT NULL, file text NOT NULL,"
        " sha256 text NOT NULL, rows bigint NOT NULL, rejects bigint NOT NULL,"
        " imported_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target, sha256));"
        "CREATE TABLE IF NOT EXISTS ingest_import.rejects (target text NOT NULL,"
        " file text NOT NULL, line bigint NOT NULL, reason text NOT NULL, value text,"
        " raw text NOT NULL, imported_at timestamptz NOT NULL DEFAULT now());"
        # The file's bytes, not its name, identify its rejects (a name can be reused).
        "ALTER TABLE ingest_import.rejects ADD COLUMN IF NOT EXISTS sha256 text"
    )
    conn.commit()


STAGE = sql.Identifier("_import_stage")


def _create_stage(conn: psycopg.Connection, columns: list[catalog.Column]) -> None:
    stage = STAGE
    conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(stage))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (_file int NOT NULL, _line bigint NOT NULL, {},"
            " _bad boolean NOT NULL DEFAULT false)"
        ).format(
            stage,
            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c.name)) for c in columns),
        )
    )


def _load_file(conn, columns, number, path, options, pg_encoding) -> tuple[list[Reject], int]:
    """COPY the file into staging: the server parses it; if it refuses, Python does.
    Returns the records it could not parse and the number of rows staged."""
    stage = STAGE
    # CACHE: the line numbers come from the session's cache, not one sequence-page update per
    # row (which more than doubles the COPY's time); setval discards the cache between files.
    conn.execute("CREATE TEMP SEQUENCE IF NOT EXISTS _import_line CACHE 100000")
    conn.execute("SELECT setval('_import_line', %s, false)", (2 if options.header else 1,))
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ALTER _file SET DEFAULT {}, ALTER _line SET DEFAULT"
            " nextval('_import_line')"
        ).format(stage, sql.Literal(number))
    )
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    copy = sql.SQL(
        "COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER {}, ENCODING {}, HEADER {})"
    ).format(
        stage,
        names,
        sql.Literal(options.delimiter),
        sql.Literal(pg_encoding),
        sql.SQL("true" if options.header else "false"),
    )
    conn.execute("SAVEPOINT file_copy")
    try:
        cursor = conn.cursor()
        with cursor.copy(copy) as into, path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                into.write(block)
        conn.execute("RELEASE SAVEPOINT file_copy")
        return [], cursor.rowcount
    except psycopg.Error:
        conn.execute("ROLLBACK TO SAVEPOINT file_copy")
    return _careful_load(conn, stage, columns, number, path, options)


def _careful_load(conn, stage, columns, number, path, options) -> tuple[list[Reject], int]:
    """Record by record: records with the wrong field count or bad bytes are rejected."""
    rejects, staged = [], 0
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    with path.open(encoding=options.encoding, errors="surrogateescape", newline="") as text:
        reader = csv.reader(text, delimiter=options.delimiter)
        statement = sql.SQL("COPY {} (_line, {}) FROM STDIN").format(stage, names)
        with conn.cursor().copy(statement) as into:
            line = 0
            for fields in reader:
                first, line = line + 1, reader.line_num  # a record may span lines
                if options.header and first == 1:
                    continue
                raw = options.delimiter.join(fields)
                if _UNDECODED.search(raw):
                    shown = raw.encode("utf-8", "surrogateescape").decode(
                        "ascii", "backslashreplace"
                    )
                    reason = f"bytes that are not {options.encoding}"
                    rejects.append(Reject(str(path), first, reason, None, shown))
                elif len(fields) != len(columns):
                    reason = f"{len(fields)} fields, the table has {len(columns)} columns"
                    rejects.append(Reject(str(path), first, reason, None, raw))
                else:
                    into.write_row([first] + [f if f != "" else None for f in fields])
                    staged += 1
    return rejects, staged


# Bytes the encoding could not decode, as surrogateescape leaves them.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _check_rows(conn, schema, table, oid, columns, names) -> list[Reject]:
    """Mark (and return) every staged row that would fail: types, NOT NULL, parents, keys.
    A row is rejected for the first of these it fails."""
    rejects: list[Reject] = []
    raw = sql.SQL(" || ',' || ").join(
        sql.SQL("coalesce({}, '')").format(sql.Identifier(c.name)) for c in columns
    )

    def mark(condition: sql.Composable, reason: str, value: sql.Composable) -> None:
        rows = conn.execute(
            # CASE: a condition that casts must never see a row already found bad.
            sql.SQL(
                "UPDATE pg_temp._import_stage AS s SET _bad = true"
                " WHERE CASE WHEN _bad THEN false ELSE ({}) END"
                " RETURNING _file, _line, {}, {}"
            ).format(condition, value, raw)
        ).fetchall()
        rejects.extend(Reject(names[f], line, reason, v, r) for f, line, v, r in rows)

    has_valid = conn.info.server_version >= 160000
    check_types = has_valid or not _all_convert(conn, columns)
    if not has_valid and check_types:
        conn.execute(_IS_VALID)
    for c in columns:
        ref = sql.Identifier(c.name)
        check = sql.SQL(
            "NOT pg_input_is_valid({}, {})" if has_valid else "NOT pg_temp.is_valid({}, {})"
        )
        if check_types:
            mark(
                sql.SQL("{} IS NOT NULL AND {}").format(
                    ref, check.format(ref, sql.Literal(c.type))
                ),
                f"column {c.name}: not a valid {c.type}",
                ref,
            )
        if c.not_null:
            mark(
                sql.SQL("{} IS NULL").format(ref),
                f"column {c.name}: empty, but NOT NULL",
                sql.SQL("NULL::text"),
            )
    # Parents before keys: a row repeating the key of a row rejected for its parent is not a
    # repeat of anything loaded (and the fast path, which finds parents first, agrees).
    for fk in foreign_keys(conn, oid):
        typed = [
            sql.SQL("s.{}::{}").format(sql.Identifier(k), sql.SQL(_type(columns, k)))
            for k in fk.columns
        ]
        same = sql.SQL(" AND ").join(
            sql.SQL("p.{} = {}").format(sql.Identifier(k), t)
            for k, t in zip(fk.parent_columns, typed, strict=True)
        )
        present = sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(k)) for k in fk.columns
        )
        shown = sql.SQL(" || ',' || ").join(sql.Identifier(k) for k in fk.columns)
        mark(
            sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
                present, catalog.qualified(fk.parent_schema, fk.parent), same
            ),
            f"foreign key {fk.name}: no {fk.parent_schema}.{fk.parent} row with "
            f"{', '.join(fk.parent_columns)} =",
            shown,
        )
    target = catalog.qualified(schema, table)
    for name, key in _unique_keys(conn, oid):
        typed = [
            sql.SQL("s.{}::{}").format(sql.Identifier(k), sql.SQL(_type(columns, k))) for k in key
        ]
        keys = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Identifier(k), sql.SQL(_type(columns, k))) for k in key
        )
        same = sql.SQL(" AND ").join(
            sql.SQL("t.{} = {}").format(sql.Identifier(k), t)
            for k, t in zip(key, typed, strict=True)
        )
        shown = sql.SQL(" || ',' || ").join(sql.Identifier(k) for k in key)
        mark(
            sql.SQL(
                "(_file, _line) IN (SELECT _file, _line FROM (SELECT _file, _line, row_number()"
                " OVER (PARTITION BY {} ORDER BY _file, _line) AS n FROM pg_temp._import_stage"
                " WHERE NOT _bad) AS d WHERE n > 1)"
            ).format(keys),
            f"key {name}: repeats an earlier line",
            shown,
        )
        mark(
            sql.SQL("EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(target, same),
            f"key {name}: already in {schema}.{table}",
            shown,
        )
    return rejects


# PostgreSQL 15 lacks pg_input_is_valid: the same test, by trying the cast.
_IS_VALID = """
CREATE OR REPLACE FUNCTION pg_temp.is_valid(value text, type text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %L::%s', value, type);
    RETURN true;
EXCEPTION WHEN data_exception OR invalid_text_representation THEN
    RETURN false;
END $$"""


def _all_convert(conn, columns) -> bool:
    """Whether every staged value converts to its column's type (one pass, no function calls)."""
    casts = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns
    )
    # ROW(...)::text evaluates every cast (the planner would split ROW(...) IS NULL into
    # field tests that stop at the first non-NULL one).
    conn.execute("SAVEPOINT all_convert")
    try:
        conn.execute(
            sql.SQL("SELECT sum(length(ROW({})::text)) FROM pg_temp._import_stage").format(casts)
        )
    except psycopg.errors.DataError:
        conn.execute("ROLLBACK TO SAVEPOINT all_convert")
        return False
    conn.execute("RELEASE SAVEPOINT all_convert")
    return True


def _type(columns: list[catalog.Column], name: str) -> str:
    return next(c.type for c in columns if c.name == name)


def _unique_keys(conn, oid) -> list[tuple[str, tuple[str, ...]]]:
    rows = conn.execute(
        "SELECT k.conname, array_agg(a.attname ORDER BY u.ord) FROM pg_constraint k"
        " JOIN LATERAL unnest(k.conkey) WITH ORDINALITY u(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum"
        " WHERE k.conrelid = %s AND k.contype IN ('p', 'u') GROUP BY k.oid, k.conname ORDER BY 1",
        (oid,),
    ).fetchall()
    return [(name, tuple(cols)) for name, cols in rows]


def foreign_keys(conn, oid) -> list[ForeignKey]:
    rows = conn.execute(
        "SELECT k.conname, pn.nspname, p.relname,"
        " (SELECT array_agg(a.attname ORDER BY u.ord) FROM unnest(k.conkey) WITH ORDINALITY"
        "   u(attnum, ord) JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum),"
        " (SELECT array_agg(a.attname ORDER BY u.ord) FROM unnest(k.confkey) WITH ORDINALITY"
        "   u(attnum, ord) JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum)"
        " FROM pg_constraint k JOIN pg_class p ON p.oid = k.confrelid"
        " JOIN pg_namespace pn ON pn.oid = p.relnamespace"
        " WHERE k.conrelid = %s AND k.contype = 'f' ORDER BY 1",
        (oid,),
    ).fetchall()
    return [ForeignKey(n, tuple(c), s, p, tuple(pc)) for n, s, p, c, pc in rows]


def _lock_parents(conn, oid) -> None:
    for fk in foreign_keys(conn, oid):
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
                catalog.qualified(fk.parent_schema, fk.parent)
            )
        )


class _NeedsFullChecks(Exception):
    pass


def _fast_path(conn, schema, table, oid, columns, names, options, unparsed: int):
    """The common case in two statements: one scan finds every row whose parent is missing, then
    one INSERT ... SELECT casts and loads the others, the target's NOT NULLs, unique indexes and
    casts checking the rest as it goes. Anything that fails there (a bad value, a repeated key, a
    NULL), or rejects that make the import fail (whose error must list every rejected row), rolls
    the attempt back and returns None: the caller then runs the full per-check marking. Returns
    (rejected rows, rows loaded)."""
    conn.execute("SAVEPOINT fast_path")
    try:
        rejects = _missing_parents(conn, oid, columns, names)
        total = unparsed + len(rejects)
        too_many = options.max_rejects is not None and total > options.max_rejects
        if total and (options.on_reject == "fail" or too_many):
            raise _NeedsFullChecks
        if rejects:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _import_rejected (_file int, _line bigint);"
                "TRUNCATE _import_rejected"
            )
            with conn.cursor().copy("COPY _import_rejected FROM STDIN") as copy:
                for r in rejects:
                    copy.write_row((r.file_number, r.line))
            conn.execute("ANALYZE _import_rejected")
        loaded = _insert_good_rows(conn, schema, table, oid, columns, bool(rejects), fast=True)
    except (_NeedsFullChecks, psycopg.errors.DataError, psycopg.errors.IntegrityError):
        conn.execute("ROLLBACK TO SAVEPOINT fast_path")
        return None
    conn.execute("RELEASE SAVEPOINT fast_path")
    return [r.reject for r in rejects], loaded


@dataclass(frozen=True)
class _Found:
    file_number: int
    line: int
    reject: Reject


def _missing_parents(conn, oid, columns, names) -> list[_Found]:
    """Every staged row with a foreign key whose parent row does not exist: one scan, a hash
    (left) join per foreign key. A value that does not convert raises DataError."""
    fks = foreign_keys(conn, oid)
    if not fks:
        return []
    joins, missing, reasons = [], [], []
    for number, fk in enumerate(fks):
        alias = sql.Identifier(f"p{number}")
        same = sql.SQL(" AND ").join(
            sql.SQL("{}.{} = s.{}::{}").format(
                alias, sql.Identifier(pk), sql.Identifier(k), sql.SQL(_type(columns, k))
            )
            for k, pk in zip(fk.columns, fk.parent_columns, strict=True)
        )
        joins.append(
            sql.SQL("LEFT JOIN {} AS {} ON {}").format(
                catalog.qualified(fk.parent_schema, fk.parent), alias, same
            )
        )
        # MATCH SIMPLE: a key with a NULL column references nothing. The parent's key columns
        # are never NULL in a matched row, so NULL there means no parent.
        missing.append(
            sql.SQL("({} AND {}.{} IS NULL)").format(
                sql.SQL(" AND ").join(
                    sql.SQL("s.{} IS NOT NULL").format(sql.Identifier(k)) for k in fk.columns
                ),
                alias,
                sql.Identifier(fk.parent_columns[0]),
            )
        )
        reasons.append(sql.SQL("WHEN {} THEN {}").format(missing[-1], sql.Literal(number)))
    shown = sql.SQL(", ").join(
        sql.SQL(" || ',' || ").join(sql.SQL("s.{}").format(sql.Identifier(k)) for k in fk.columns)
        for fk in fks
    )
    raw = sql.SQL(" || ',' || ").join(
        sql.SQL("coalesce(s.{}, '')").format(sql.Identifier(c.name)) for c in columns
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT s._file, s._line, CASE {} END, ARRAY[{}], {}"
            " FROM pg_temp._import_stage AS s {} WHERE NOT s._bad AND ({})"
        ).format(
            sql.SQL(" ").join(reasons),
            shown,
            raw,
            sql.SQL(" ").join(joins),
            sql.SQL(" OR ").join(missing),
        )
    ).fetchall()
    found = []
    for file_number, line, which, values, text in rows:
        fk = fks[which]
        reason = (
            f"foreign key {fk.name}: no {fk.parent_schema}.{fk.parent} row with "
            f"{', '.join(fk.parent_columns)} ="
        )
        found.append(
            _Found(file_number, line, Reject(names[file_number], line, reason, values[which], text))
        )
    return found


def _insert_good_rows(conn, schema, table, oid, columns, exclude=False, fast=False) -> int:
    """INSERT ... SELECT the staged rows not marked bad (nor, with `exclude`, in
    _import_rejected). `fast`: errors propagate (the fast path falls back on them)."""
    skip_fk_triggers = (
        bool(
            conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        )
        and not conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal", (oid,)
        ).fetchone()
    )
    if skip_fk_triggers:
        conn.execute("SET LOCAL session_replication_role = replica")
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    values = sql.SQL(", ").join(
        sql.SQL("s.{}::{}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns
    )
    # No ORDER BY: the staging table is scanned in the order COPY wrote it (file, line); a sort
    # of every row would buy nothing.
    statement = sql.SQL(
        "INSERT INTO {} ({}) SELECT {} FROM pg_temp._import_stage AS s WHERE {}"
    ).format(
        catalog.qualified(schema, table),
        names,
        values,
        sql.SQL(
            "NOT _bad AND NOT EXISTS (SELECT 1 FROM pg_temp._import_rejected AS r"
            " WHERE r._file = s._file AND r._line = s._line)"
            if exclude
            else "NOT _bad"
        ),
    )
    if fast:
        cursor = conn.execute(statement)
        if skip_fk_triggers:
            conn.execute("SET LOCAL session_replication_role = origin")
        return cursor.rowcount
    try:
        cursor = conn.execute(statement)
    except psycopg.Error as exc:  # a CHECK constraint or trigger the set-based checks do not know
        raise IngestError(
            f"Import into {schema}.{table} failed: {first_line(exc)}; nothing was loaded."
        ) from None
    if skip_fk_triggers:
        conn.execute("SET LOCAL session_replication_role = origin")
    return cursor.rowcount


def _record(conn, result: ImportResult, todo) -> None:
    with conn.cursor().copy(
        "COPY ingest_import.rejects (target, file, line, reason, value, raw, sha256) FROM STDIN"
    ) as copy:
        for r in result.rejects:
            copy.write_row(
                (result.table, r.file, r.line, r.reason, r.value, r.raw, result.digests[r.file])
            )
    for _, path, digest in todo:
        rows = result.rows_by_file[str(path)]
        rejects = sum(1 for r in result.rejects if r.file == str(path))
        conn.execute(
            "INSERT INTO ingest_import.files (target, file, sha256, rows, rejects)"
            " VALUES (%s, %s, %s, %s, %s)",
            (result.table, str(path), digest, rows + 0, rejects),
        )


@dataclass(frozen=True)
class FileRecord:
    """What `ingest_import.files` says of one imported file (by its bytes)."""

    file: str
    rows: int
    rejects: int
    imported_at: str


def file_record(conn: psycopg.Connection, target: str, sha256: str) -> FileRecord | None:
    """The import of these bytes into `target` ("schema.table"), or None (never imported, or the
    bookkeeping does not exist yet)."""
    if not _bookkeeping_exists(conn):
        return None
    row = conn.execute(
        "SELECT file, rows, rejects, imported_at::text FROM ingest_import.files"
        " WHERE target = %s AND sha256 = %s",
        (target, sha256),
    ).fetchone()
    return None if row is None else FileRecord(*row)


def recorded_rejects(
    conn: psycopg.Connection, target: str, sha256: str, limit: int = 20
) -> list[Reject]:
    """The first `limit` rejected rows of these bytes' import into `target`, by line."""
    if not _bookkeeping_exists(conn):
        return []
    rows = conn.execute(
        "SELECT file, line, reason, value, raw FROM ingest_import.rejects"
        " WHERE target = %s AND sha256 = %s ORDER BY line LIMIT %s",
        (target, sha256, limit),
    ).fetchall()
    return [Reject(*row) for row in rows]


def _bookkeeping_exists(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn, "SELECT to_regclass('ingest_import.rejects') IS NOT NULL"))
