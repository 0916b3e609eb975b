"""The manifest: what makes a directory a backup, written last.

``manifest.json`` appears by an atomic rename after every data file is written, synced and
hashed, so a directory without one is an unfinished backup (killed, out of disk) and is never
listed or restored. While a backup is being written the directory holds ``INCOMPLETE``; the next
backup into the same directory removes what such a run left.

Format version 1::

    {"format": "ingest_platform.backup", "format_version": 1, "file_format": "parquet"|"avro",
     "created": ISO time, "server_version": 180001, "server_version_text": "18.1",
     "database": "app", "schemas": [...],
     "schema_archive": "schema.dump",   # pg_dump --schema-only --format=custom of the schemas
     "schema_ddl": "...",               # the same as SQL, for people and other tools
     "sequences": [{"schema", "name", "last_value"}],
     "backup_id": "app@<created>",     # what reused_from names
     "tables": [{"schema", "name", "rows", "columns": [...], "files": ["data/..."],
                 "fingerprint": {"kind": "row_hash_sum", "rows": n, "sum": "<decimal>"},
                 # (backups before it: {"depth": d, "key": [...], "buckets": {prefix: [...]}})
                 # dump-version tables only (``reuse``):
                 "version_identity": {"oid", "relfilenode", "catalog_xmin", "table",
                                      "version", "rows", "loaded_at", "dump"},
                 "reused_from": "app@<created of the previous backup>"}],   # when reused
     "files": {"data/...": {"sha256": hex, "bytes": n, "rows": n}, "schema.dump": {...}}}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ingest_platform.errors import IngestError

FORMAT = "ingest_platform.backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INCOMPLETE = "INCOMPLETE"


class BackupError(IngestError):
    """A backup cannot be written or a directory cannot be restored from."""


def backup_id(manifest: dict) -> str:
    """What names a backup in another backup's manifest (``reused_from``) and in a restore's
    marker: the database and the time the backup began."""
    return manifest.get("backup_id") or f"{manifest['database']}@{manifest['created']}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest atomically (temporary file, fsync, rename, fsync of the directory)."""
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    fsync_file(temporary)
    os.replace(temporary, directory / MANIFEST)
    fsync_file(directory)
    (directory / INCOMPLETE).unlink(missing_ok=True)


def read_manifest(directory: Path) -> dict:
    """The manifest of a complete backup, or BackupError saying what the directory is."""
    if not directory.is_dir():
        raise BackupError(f"{directory} is not a directory: pass the directory of a backup.")
    path = directory / MANIFEST
    if not path.exists():
        if (directory / INCOMPLETE).exists():
            raise BackupError(
                f"{directory} holds an incomplete backup (it was interrupted: no manifest): "
                "it cannot be restored; take a new backup."
            )
        raise BackupError(
            f"{directory} is not a backup (no {MANIFEST}): pass a directory written by "
            "`ingest-platform backup`."
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not valid JSON ({exc}): the manifest is damaged.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f'{path} is not a backup manifest (no "format": "{FORMAT}").')
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"{path} has format version {version!r}; this ingest_platform reads version "
            f"{FORMAT_VERSION}: restore it with the release that wrote it."
        )
    return manifest


def verify_files(directory: Path, manifest: dict) -> None:
    """Every file the manifest lists exists with its size and SHA-256; else BackupError naming
    each file that does not (nothing is restored)."""
    problems = []
    for name, expected in sorted(manifest["files"].items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != expected["bytes"]:
            problems.append(f"{name} has {size} bytes, the manifest says {expected['bytes']}")
            continue
        if sha256_of(path) != expected["sha256"]:
            problems.append(f"{name} does not match its SHA-256 (corrupted)")
    if problems:
        raise BackupError(
            f"Backup {directory} is damaged: " + "; ".join(problems) + ". Nothing was restored: "
            "restore another backup or copy the file again from where the backup was kept."
        )
