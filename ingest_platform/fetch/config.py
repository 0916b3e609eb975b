"""The sources of direct fetches, from a TOML file.

    [sources.eu_shop]
    kind = "postgres"              # or "mysql" (MySQL and MariaDB)
    dsn_env = "EU_SHOP_DB_URL"     # the variable holding postgresql://... or mysql://user@host/db
    app = "shop"                   # the warehouse schema, as a dump's app
    tables = ["orders", "customers"]   # or pattern = "order*" (shell-style, on table names)
    schema = "public"              # PostgreSQL sources: the schema read (default public)
    version = "2024_06"            # or version_query = "SELECT version FROM app_meta"

    [sources.eu_shop.incremental.orders]   # tables pulled incrementally with --incremental
    cursor = "updated_at"          # a column that grows with every insert and update
    key = ["id"]                   # default: the source's primary key
    deletes = true                 # compare keys for deleted rows on every pull (default)

    [sources.eu_shop.types]        # source type -> PostgreSQL type, before the dialect's map
    mood = "text"

The URL is read from the environment only, so the file holds no secret; messages show
host:port, never the URL.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.errors import ConfigError

KINDS = ("postgres", "mysql")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


@dataclass(frozen=True)
class Incremental:
    cursor: str
    key: tuple[str, ...] = ()  # () : the source's primary key
    deletes: bool = True  # look for deleted keys on every incremental pull


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    dsn_env: str
    app: str
    tables: tuple[str, ...] = ()
    pattern: str | None = None
    schema: str = "public"
    version: str | None = None
    version_query: str | None = None
    incremental: dict[str, Incremental] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    file: str = ""

    def dsn(self, environ=os.environ) -> str:
        value = environ.get(self.dsn_env)
        if not value:
            raise ConfigError(
                f"{self.file} [sources.{self.name}]: the environment variable {self.dsn_env} "
                f"(dsn_env) is not set; export it with the source's URL, e.g. "
                f"{'mysql://user@host:3306/db' if self.kind == 'mysql' else 'postgresql://user@host:5432/db'}."
            )
        return value


def check_version(version: object, where: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ConfigError(
            f"{where}: version {version!r} is not a version name: use letters, digits, '.', '_' "
            "or '-' (at most 40), as in dump file names."
        )
    return version


def load_config(path: str | Path) -> dict[str, SourceConfig]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read fetch config {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"fetch config {path} is not TOML: {error}") from None
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ConfigError(f"{path}: no [sources.<name>] table; add one per source database.")
    return {name: _source(path, name, raw) for name, raw in sources.items()}


def _source(path: Path, name: str, raw: object) -> SourceConfig:
    where = f"{path} [sources.{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table.")
    known = {
        "kind", "dsn_env", "app", "tables", "pattern", "schema", "version", "version_query",
        "incremental", "types",
    }  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}.")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {list(KINDS)}, not {kind!r}.")
    for key in ("dsn_env", "app"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key} is missing (a non-empty string).")
    tables, pattern = raw.get("tables"), raw.get("pattern")
    if (tables is None) == (pattern is None):
        raise ConfigError(f'{where}: give either tables = [...] or pattern = "...", not both.')
    if tables is not None and (
        not isinstance(tables, list) or not tables or not all(isinstance(t, str) for t in tables)
    ):
        raise ConfigError(f"{where}: tables must be a non-empty list of table names.")
    if pattern is not None and not isinstance(pattern, str):
        raise ConfigError(f'{where}: pattern must be a string such as "order*".')
    version, query = raw.get("version"), raw.get("version_query")
    if (version is None) == (query is None):
        raise ConfigError(
            f'{where}: give either version = "..." or version_query = "SELECT ...", not both.'
        )
    if version is not None:
        check_version(version, where)
    if query is not None and not isinstance(query, str):
        raise ConfigError(f"{where}: version_query must be a SELECT returning one value.")
    incremental = {}
    for table, spec in (raw.get("incremental") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("cursor"), str):
            raise ConfigError(
                f'{where} incremental.{table}: give cursor = "<column>" (e.g. updated_at).'
            )
        key = spec.get("key", [])
        if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
            raise ConfigError(f"{where} incremental.{table}: key must be a list of column names.")
        deletes = spec.get("deletes", True)
        if not isinstance(deletes, bool):
            raise ConfigError(f"{where} incremental.{table}: deletes must be true or false.")
        incremental[table] = Incremental(spec["cursor"], tuple(key), deletes)
    types = raw.get("types") or {}
    if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
        raise ConfigError(f"{where}: [types] maps source type names to PostgreSQL types (strings).")
    return SourceConfig(
        name=name,
        kind=kind,
        dsn_env=raw["dsn_env"],
        app=raw["app"],
        tables=tuple(tables or ()),
        pattern=pattern,
        schema=raw.get("schema", "public"),
        version=version,
        version_query=query,
        incremental=incremental,
        types={k.lower(): v for k, v in types.items()},
        file=str(path),
    )
