"""Reusing a dump version's files from the previous backup.

A dump version is an immutable child table (``postgres/versioned_tables``): a load creates it,
registers it in ``S."_ingest_versions"`` and never writes it again; a reload of the version
replaces it by a new table. So a version table whose *identity* is the one the previous backup
recorded holds the rows that backup wrote, and its files can be taken over instead of written.

The identity (``version_identity``, recorded in the manifest per version table) is read in the
backup's snapshot: the table's oid, its storage file (``relfilenode``: a rewrite by ALTER TYPE
changes it), the transaction that last changed its catalog row (``pg_class.xmin``: any ALTER,
an added column, a rename), and its registry row (table, version, rows, loaded_at, dump). A
version table is reused only when all of that, its columns and the file format are equal, and
its row count in the snapshot still equals the registry's (a cheap guard against rows written
into a child by hand).

Reused files are hard links to the previous backup's files (a copy where linking fails, e.g.
another file system), so every backup stays whole on its own and retention can delete any of
them. Each reused file's SHA-256 is computed again and must equal the previous manifest's; when
it does not, the table is written from the database instead.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import psycopg
from psycopg import sql

from ingest_platform.backup.manifest import sha256_of
from ingest_platform.postgres.catalog import qualified, relation_oid
from ingest_platform.postgres.version_registry import REGISTRY_TABLE

logger = logging.getLogger("ingest_platform.backup")

_CHILD = """
    SELECT c.relfilenode::text, c.xmin::text FROM pg_class c
    WHERE c.oid = %s AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"""


def version_identity(conn: psycopg.Connection, oid: int, schema: str, name: str) -> dict | None:
    """The identity of a registered version table as `conn`'s snapshot sees it; None for any
    other table (those are always written)."""
    child = conn.execute(_CHILD, (oid,)).fetchone()
    if child is None or relation_oid(conn, schema, REGISTRY_TABLE) is None:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT table_name, version, rows, loaded_at::text, dump FROM {} WHERE child_table = %s"
        ).format(qualified(schema, REGISTRY_TABLE)),
        (name,),
    ).fetchone()
    if row is None:
        return None
    table, version, rows, loaded_at, dump = row
    return {
        "oid": oid,
        "relfilenode": child[0],
        "catalog_xmin": child[1],
        "table": table,
        "version": version,
        "rows": rows,
        "loaded_at": loaded_at,
        "dump": dump,
    }


def reusable(
    conn: psycopg.Connection,
    entry: dict,
    previous: dict | None,
    file_format: str,
    fingerprints: bool,
) -> dict | None:
    """The previous manifest's entry of this table when its files can be reused, else None."""
    identity = entry.get("version_identity")
    if previous is None or identity is None or previous["file_format"] != file_format:
        return None
    before = next(
        (
            t
            for t in previous["tables"]
            if (t["schema"], t["name"]) == (entry["schema"], entry["name"])
        ),
        None,
    )
    if (
        before is None
        or before.get("version_identity") != identity
        or before["columns"] != entry["columns"]
        or (fingerprints and "fingerprint" not in before)
        or before["rows"] != identity["rows"]
    ):
        return None
    counted = conn.execute(
        sql.SQL("SELECT count(*) FROM ONLY {}").format(qualified(entry["schema"], entry["name"]))
    ).fetchone()
    return before if counted and counted[0] == identity["rows"] else None


def link_files(
    previous_dir: Path, previous: dict, before: dict, directory: Path, entry: dict
) -> dict[str, str] | None:
    """Hard-link (or copy) the previous backup's files of the table into `entry["directory"]`
    and check each one's SHA-256; returns {new file name: sha256}, or None (nothing left
    behind) when a file is missing or changed."""
    target_dir = directory / entry["directory"]
    target_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    for name in before["files"]:
        source, target = previous_dir / name, target_dir / Path(name).name
        expected = previous["files"][name]["sha256"]
        actual: str | None
        try:
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(source, target)
            actual = sha256_of(target)
        except OSError as exc:
            logger.warning(f"{previous_dir / name}: cannot be reused ({exc}); writing the table")
            actual = None
        if actual is None or actual != expected:
            if actual is not None:
                logger.warning(f"{previous_dir / name} changed since its backup; writing the table")
            shutil.rmtree(target_dir)
            target_dir.mkdir(parents=True)
            return None
        hashes[str(target.relative_to(directory))] = actual
    return hashes
