"""The dump directory: which applications, versions and tables it holds.

Definitions are generated from it (one asset per application table); the sensor compares it
with what the definitions know to request runs or ask for a reload.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.dumps.archive import open_dump
from ingest_platform.errors import IngestError

DUMP_SUFFIXES = (".zip", ".zip.gpg")
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DumpFile:
    path: Path
    app: str
    version: str
    tables: tuple[str, ...]
    dialect: str = ""  # the dialect's name (mssql, mysql, csv, ...); "" when unknown


@dataclass
class DumpCatalog:
    dumps: list[DumpFile] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # file name -> why it cannot be read

    def tables_by_app(self) -> dict[str, list[str]]:
        apps: dict[str, set[str]] = {}
        for dump in self.dumps:
            apps.setdefault(dump.app, set()).update(dump.tables)
        return {app: sorted(tables) for app, tables in sorted(apps.items())}


def dump_dir(environ=os.environ) -> Path:
    """`INGEST_DUMP_DIR`, default `./dumps`."""
    return Path(environ.get("INGEST_DUMP_DIR") or "dumps").resolve()


def default_dialect(environ=os.environ) -> str | None:
    """`INGEST_DUMP_DIALECT`: the dialect of dumps whose manifest does not name one."""
    return environ.get("INGEST_DUMP_DIALECT") or None


def is_dump_file(path: Path) -> bool:
    return (
        path.is_file()
        and path.name.lower().endswith(DUMP_SUFFIXES)
        and not path.name.startswith(".")
    )


def describe_dump(
    path: Path,
    dialect: str | None = None,
    app: str | None = None,
    version: str | None = None,
    environ=os.environ,
) -> DumpFile:
    """Read a dump's identity and table list (schemas and ZIP directory only)."""
    with open_dump(
        path, dialect=dialect, app=app, version=version, default_dialect=default_dialect(environ)
    ) as dump:
        return DumpFile(
            path.resolve(), dump.app, dump.version, tuple(sorted(dump.tables)), dump.dialect.name
        )


def scan_dump_dir(directory: Path, settle_seconds: float = 0.0, environ=os.environ) -> DumpCatalog:
    """Every readable dump in `directory`; files modified in the last `settle_seconds` are skipped
    (they may still be being copied). Unreadable ones are listed in `problems` and logged: one bad
    dump must not stop the others from becoming definitions."""
    catalog = DumpCatalog()
    if not directory.is_dir():
        return catalog
    now = time.time()
    for path in sorted(p for p in directory.iterdir() if is_dump_file(p)):
        if now - path.stat().st_mtime < settle_seconds:
            continue
        try:
            catalog.dumps.append(describe_dump(path, environ=environ))
        except IngestError as error:
            catalog.problems[path.name] = str(error)
        except Exception as error:  # a bug of ours; still only this dump's problem
            problem = f"{path}: cannot be read ({type(error).__name__}: {error})"
            catalog.problems[path.name] = problem
    for problem in catalog.problems.values():
        LOGGER.warning("Left out of the definitions: %s", problem)
    return catalog
