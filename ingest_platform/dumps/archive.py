"""Open a dump archive (``.zip`` or ``.zip.gpg``), read its manifest and pair data with schemas.

See the package docstring (``ingest_platform/dumps/__init__.py``) for the manifest, the file-name
version rule and the GPG environment variables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ingest_platform.dumps.copy_source import CopySource
from ingest_platform.dumps.decrypted import new_decrypt_dir
from ingest_platform.dumps.dialect import (
    DIALECT_DIR_ENV,
    Dialect,
    FileFormat,
    dialect_from_text,
    load_dialect,
)
from ingest_platform.dumps.reader import DEFAULT_CHUNK_BYTES, count_rows, iter_copy_chunks
from ingest_platform.dumps.schema import TableSchema, read_json_schema
from ingest_platform.dumps.text_stream import encoding_problem, sniff_encoding
from ingest_platform.errors import ConfigError, DumpError, SchemaError, first_line

MANIFEST_NAME = "manifest.json"
GPG_HOME_ENV = "INGEST_GPG_HOME"  # GnuPG home holding the private key (default: gpg's own)
GPG_PASSPHRASE_ENV = "INGEST_GPG_PASSPHRASE"  # passphrase of that key, if it has one
GPG_BINARY_ENV = "INGEST_GPG_BINARY"  # path to gpg (default: "gpg" on PATH)
HEAD_BYTES = 64 << 10  # the start of each data file, read when a dump is opened
_VERSION = re.compile(r"^v?\d[\w.\-+]*$", re.IGNORECASE)


@dataclass
class TableEntry:
    name: str
    schema: TableSchema
    data_member: str | None  # None: schema without data file = a version with no rows
    file_format: FileFormat


@dataclass
class Dump:
    path: Path  # the file as delivered (.zip or .zip.gpg)
    archive_path: Path  # the plain ZIP to read members from (picklable, for workers)
    app: str
    version: str
    dialect: Dialect
    tables: dict[str, TableEntry] = field(default_factory=dict)
    manifest: dict | None = None
    _decrypted_dir: Path | None = None

    def iter_copy_chunks(
        self, table: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> Iterator[bytes]:
        entry = self.tables[table]
        if entry.data_member is None:
            return iter(())
        return iter_copy_chunks(
            self.archive_path,
            entry.data_member,
            entry.file_format,
            entry.schema.columns,
            chunk_bytes,
        )

    def copy_source(self, table: str) -> CopySource | None:
        """The table's data file for the loader; None when this version has no data file."""
        entry = self.tables[table]
        if entry.data_member is None:
            return None
        return CopySource(
            str(self.archive_path),
            entry.data_member,
            entry.file_format,
            tuple(entry.schema.columns),
        )

    def count_rows(self, table: str) -> int:
        entry = self.tables[table]
        if entry.data_member is None:
            return 0
        return count_rows(
            self.archive_path, entry.data_member, entry.file_format, entry.schema.columns
        )

    def close(self) -> None:
        """Delete the decrypted copy of a .zip.gpg (after every worker is done with it)."""
        if self._decrypted_dir is not None:
            shutil.rmtree(self._decrypted_dir, ignore_errors=True)
            self._decrypted_dir = None

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_dump_file_name(file_name: str) -> tuple[str, str]:
    """``<app>_<version>.zip[.gpg]`` -> (app, version); the version follows the LAST underscore.

    ``crm_eu_2025.zip`` -> ("crm_eu", "2025"); ``shop_1.2.3.zip`` -> ("shop", "1.2.3");
    ``shop_v2.zip.gpg`` -> ("shop", "v2").  A version starts with a digit, or v + digit.
    """
    stem = file_name
    for suffix in (".gpg", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    app, _, version = stem.rpartition("_")
    if not app or not _VERSION.match(version):
        raise DumpError(
            f"{file_name}: cannot read <app>_<version> from the file name; rename it like "
            "'myapp_2025.zip' or put app and version in manifest.json"
        )
    return app, version


def open_dump(
    path: str | Path,
    dialect: str | Path | Dialect | None = None,
    app: str | None = None,
    version: str | None = None,
    default_dialect: str | Path | Dialect | None = None,
) -> Dump:
    """Open a dump and list its tables.  Explicit arguments win over manifest.json, which wins
    over the file name (and over `default_dialect`, the configured one).  Reads only schemas and
    the ZIP directory, not the data."""
    path = Path(path)
    decrypted_dir = None
    archive_path = path
    if path.suffix.lower() == ".gpg":
        decrypted_dir = new_decrypt_dir()  # private; see dumps/decrypted.py
    try:
        if decrypted_dir is not None:
            archive_path = decrypt_gpg(path, decrypted_dir / path.name[: -len(".gpg")])
        return _read_dump(path, archive_path, dialect, app, version, decrypted_dir, default_dialect)
    except BaseException:
        if decrypted_dir is not None:
            shutil.rmtree(decrypted_dir, ignore_errors=True)
        raise


def decrypt_gpg(path: Path, output: Path) -> Path:
    import gnupg

    try:
        gpg = gnupg.GPG(
            gnupghome=os.environ.get(GPG_HOME_ENV), gpgbinary=os.environ.get(GPG_BINARY_ENV, "gpg")
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(
            f"cannot start gpg ({error}); install GnuPG or set {GPG_BINARY_ENV}"
        ) from error
    with open(path, "rb") as encrypted:
        result = gpg.decrypt_file(
            encrypted, output=str(output), passphrase=os.environ.get(GPG_PASSPHRASE_ENV)
        )
    if not result.ok:
        output.unlink(missing_ok=True)
        raise DumpError(
            f"{path}: cannot decrypt ({result.status or 'gpg failed'}); check that {GPG_HOME_ENV} "
            f"holds the recipient's private key and {GPG_PASSPHRASE_ENV} its passphrase"
        )
    return output


def check_member_name(name: str, archive: Path) -> None:
    """Refuse names that could escape a directory when someone extracts the archive."""
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DumpError(
            f"{archive}: unsafe member name {name!r} (absolute or with '..'); the dump was "
            "not produced by a trusted exporter"
        )


def _read_dump(path, archive_path, dialect, app, version, decrypted_dir, default_dialect) -> Dump:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DumpError(
            f"{path}: not a readable ZIP archive (corrupt or truncated?): {error}"
        ) from error
    with archive:
        members = [i.filename for i in archive.infolist() if not i.is_dir()]
        for name in members:
            check_member_name(name, path)
        _refuse_duplicate_members(members, path)
        manifest = _read_manifest(archive, path) if MANIFEST_NAME in members else {}
        if app is None or version is None:
            if "app" in manifest and "version" in manifest:
                file_app, file_version = manifest["app"], manifest["version"]
            else:
                file_app, file_version = parse_dump_file_name(path.name)
            app = app or manifest.get("app", file_app)
            version = version or manifest.get("version", file_version)
        _check_identity(app, version, path)
        if dialect is None and "dialect" in manifest:
            dialect = _manifest_dialect(archive, members, manifest["dialect"], path)
        dialect = dialect or default_dialect
        if dialect is None:
            raise ConfigError(
                f"{path}: no dialect; set INGEST_DUMP_DIALECT or pass --dialect (mssql, mysql, csv "
                "or a .toml path), or add 'dialect' to manifest.json"
            )
        if not isinstance(dialect, Dialect):
            dialect = load_dialect(dialect)
        tables = _discover_tables(
            archive,
            members,
            _with_dump_budget(dialect, manifest, path),
            manifest.get("tables", {}),
            path,
        )
        if not tables:
            raise DumpError(
                f"{path}: holds no table schema (<table>.json, or the *.sql of dialect "
                f"{dialect.name!r}); is it a dump of this dialect?"
            )
        for entry in tables.values():
            _check_data_start(archive, entry, path)
    return Dump(
        path=path,
        archive_path=archive_path,
        app=app,
        version=version,
        dialect=dialect,
        tables=tables,
        manifest=manifest or None,
        _decrypted_dir=decrypted_dir,
    )


def _with_dump_budget(dialect: Dialect, manifest: dict, path: Path) -> Dialect:
    """The dialect, with the manifest's dump-wide ``max_errors`` (if any) as every table's default:
    a table's own setting (manifest ``tables``, JSON schema ``format``, BULK INSERT) still wins."""
    if "max_errors" not in manifest:
        return dialect
    try:
        budget = dialect.file_format.with_overrides({"max_errors": manifest["max_errors"]})
    except ConfigError as error:
        raise DumpError(f"{path}: {MANIFEST_NAME}: {error}") from error
    return dataclasses.replace(dialect, file_format=budget)


def _refuse_duplicate_members(members: list[str], path: Path) -> None:
    """Two members of one name: readers would silently take one of them (zipfile: the last)."""
    seen: set[str] = set()
    for name in members:
        if name in seen:
            raise DumpError(
                f"{path}: holds two members named {name!r}; re-create the archive with each file "
                "once (appending to a ZIP adds a second copy instead of replacing the first)"
            )
        seen.add(name)


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> dict:
    try:
        manifest = json.loads(archive.read(MANIFEST_NAME).decode("utf-8-sig"))
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DumpError(f"{path}: {MANIFEST_NAME} is not valid JSON: {error}") from error
    where = f"{path}: {MANIFEST_NAME}"
    if not isinstance(manifest, dict):
        raise DumpError(f'{where} must be an object like {{"app": .., "version": ..}}')
    for key in ("app", "version", "dialect"):
        value = manifest.get(key)
        if key in manifest and not (isinstance(value, str) and value):
            quote = f' (quoted: "{key}": "{value}")' if isinstance(value, int | float) else ""
            raise DumpError(f"{where}: {key!r} must be a non-empty string, not {value!r}{quote}")
    tables = manifest.get("tables", {})
    if not isinstance(tables, dict) or not all(
        isinstance(overrides, dict) and isinstance(overrides.get("data", ""), str)
        for overrides in tables.values()
    ):
        raise DumpError(
            f"{where}: 'tables' must map each table to an object of file-format keys and "
            'optionally "data" (its member), e.g. {"orders": {"data": "x/orders.dat"}}'
        )
    return manifest


def _check_identity(app: str, version: str, path: Path) -> None:
    """App and version name a schema, assets and a partition: printable and non-empty
    (Dagster's partition keys also exclude '...')."""
    for what, value in (("app", app), ("version", version)):
        if not value or not value.isprintable() or (what == "version" and "..." in value):
            raise DumpError(
                f"{path}: {what} {value!r} cannot name a dump {what}: give a non-empty {what} "
                "without control characters (or '...') in manifest.json or the file name"
            )


def _manifest_dialect(archive, members: list[str], name: str, path: Path) -> Dialect:
    """The dialect a manifest names: a platform dialect or one in INGEST_DIALECT_DIR by name, or
    a .toml member of this dump; never a file elsewhere on the host."""
    if name in members and name.lower().endswith(".toml"):
        try:
            return dialect_from_text(
                _read_text(archive, name, path), PurePosixPath(name).stem, f"{path}: {name}"
            )
        except ConfigError as error:
            raise DumpError(str(error)) from None
    if name.lower().endswith(".toml") or "/" in name or "\\" in name:
        raise DumpError(
            f"{path}: {MANIFEST_NAME} names dialect {name!r}, which is not a member of the dump; "
            f"a manifest names a dialect (mssql, mysql, csv, or one in {DIALECT_DIR_ENV}) or a "
            ".toml file inside the dump"
        )
    try:
        return load_dialect(name)
    except ConfigError as error:
        raise DumpError(f"{path}: {MANIFEST_NAME}: {error}") from None


def _read_text(archive: zipfile.ZipFile, name: str, path: Path) -> str:
    try:
        data = archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DumpError(f"{path}: member {name!r} is corrupt or truncated: {error}") from error
    encoding, skip = sniff_encoding(data[:4], "utf-8")
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as error:
        raise SchemaError(f"{path}: schema file {name!r} is not {encoding}: {error}") from error


def _discover_tables(
    archive, members, dialect: Dialect, manifest_tables: dict, path: Path
) -> dict[str, TableEntry]:
    try:
        return _tables(archive, members, dialect, manifest_tables, path)
    except SchemaError as error:
        message = first_line(error)  # a parser's message may quote the source below
        named = message if message.startswith(str(path)) else f"{path}: {message}"
        raise SchemaError(named) from error


def _tables(
    archive, members, dialect: Dialect, manifest_tables: dict, path: Path
) -> dict[str, TableEntry]:
    schemas: dict[str, TableSchema] = {}
    schema_files: dict[str, str] = {}  # table -> the member that declares it
    overrides: dict[str, dict] = {}
    named_data: dict[str, str] = {}  # table -> data file name given by the schema (BULK INSERT)
    for name in members:
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix.lower()
        if name == MANIFEST_NAME:
            continue
        if suffix == ".json":
            schema, format_overrides = read_json_schema(
                _read_text(archive, name, path), dialect, stem, name
            )
            if schema_files.get(schema.name, "").lower().endswith(".json"):
                raise SchemaError(  # two JSON schemas; a JSON one may replace a script's
                    f"{path}: {name} and {schema_files[schema.name]} both declare table "
                    f"{schema.name!r}; keep one"
                )
            schemas[schema.name] = schema
            schema_files[schema.name] = name
            overrides[schema.name] = {**overrides.get(schema.name, {}), **format_overrides}
        elif suffix == ".sql" and dialect.schema_language == "tsql":
            # Imported here: sqlglot takes ~0.15 s to import, and load workers never parse DDL.
            from ingest_platform.dumps.tsql_schema import read_tsql_script

            script = read_tsql_script(_read_text(archive, name, path), dialect, name)
            for table, schema in script.tables.items():
                schemas.setdefault(table, schema)
                schema_files.setdefault(table, name)
                overrides[table] = {
                    **script.format_overrides.get(table, {}),
                    **overrides.get(table, {}),
                }
            named_data.update(script.data_files)
        elif suffix == ".sql" and dialect.schema_language == "mysql":
            from ingest_platform.dumps.mysql_schema import read_mysql_tables

            for table, schema in read_mysql_tables(
                _read_text(archive, name, path), dialect, name
            ).items():
                schemas.setdefault(table, schema)
                schema_files.setdefault(table, name)
    unknown = sorted(set(manifest_tables) - set(schemas))
    if unknown:
        raise SchemaError(
            f"{path}: {MANIFEST_NAME} describes table {unknown[0]!r}, which has no schema in the "
            f"dump (tables: {_listed(schemas)}); fix the name, or add the table's schema"
        )
    data_members = [
        m
        for m in members
        if PurePosixPath(m).suffix.lower() in dialect.data_extensions
        and PurePosixPath(m).name != MANIFEST_NAME
    ]
    by_base = {PurePosixPath(m).name.lower(): m for m in data_members}
    by_stem: dict[str, list[str]] = {}
    for member in data_members:
        by_stem.setdefault(PurePosixPath(member).stem, []).append(member)
    tables, used = {}, set()
    for table, schema in schemas.items():
        table_overrides = dict(manifest_tables.get(table, {}))
        member = table_overrides.pop("data", None)
        if member is not None and member not in members:
            raise SchemaError(
                f"{path}: {MANIFEST_NAME} maps table {table!r} to data file {member!r}, which the "
                f"dump does not hold (data files: {_listed(data_members)}); name one of its members"
            )
        if member is None and table in named_data:
            member = by_base.get(named_data[table].lower())
        if member is None:
            candidates = by_stem.get(table) or [
                m for s, ms in by_stem.items() if s.casefold() == table.casefold() for m in ms
            ]
            if len(candidates) > 1:
                raise SchemaError(
                    f"{path}: table {table!r} matches data files {sorted(candidates)}; name one "
                    f'in {MANIFEST_NAME}: "tables": {{"{table}": {{"data": "..."}}}}'
                )
            member = candidates[0] if candidates else None
        if member is not None:
            used.add(member)
        # Layered so that an error names where the bad key is: the schema, then the manifest.
        file_format = _with_overrides(
            dialect.file_format, table, overrides.get(table, {}), schema_files[table], path
        )
        file_format = _with_overrides(file_format, table, table_overrides, MANIFEST_NAME, path)
        tables[table] = TableEntry(table, schema, member, file_format)
    orphans = sorted(set(data_members) - used)
    if orphans:
        raise SchemaError(
            f"{path}: data files without a schema: {orphans}; add <table>.json (or the CREATE "
            "TABLE script) for each, or remove them from the dump"
        )
    return tables


def _with_overrides(
    file_format: FileFormat, table: str, overrides: dict, source: str, path: Path
) -> FileFormat:
    try:
        return file_format.with_overrides(overrides)
    except ConfigError as error:
        raise SchemaError(f"{path}: table {table!r}: {error}; fix it in {source}") from error


def _check_data_start(archive: zipfile.ZipFile, entry: TableEntry, path: Path) -> None:
    """Read the start of a table's data file: a member that cannot be read, or whose bytes do not
    fit its declared encoding, is refused before any load begins."""
    if entry.data_member is None:
        return
    try:
        with archive.open(entry.data_member) as member:
            head = member.read(HEAD_BYTES)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise DumpError(
            f"{path}: member {entry.data_member!r} is corrupt or truncated: {error}"
        ) from error
    except (RuntimeError, NotImplementedError) as error:  # encrypted, or deflate64 and the like
        raise DumpError(
            f"{path}: member {entry.data_member!r} cannot be read ({error}); write the ZIP "
            "without a password (encrypt the whole file with GnuPG instead) and with deflate"
        ) from error
    problem = encoding_problem(head, entry.file_format)
    if problem:
        raise DumpError(f"{path}: data file {entry.data_member!r} (table {entry.name!r}) {problem}")


def _listed(names, limit: int = 10) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
