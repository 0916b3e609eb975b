"""Which tables the REST intake API exposes, and its limits.

Configuration comes from the environment:

- ``INGEST_API_CONFIG``: a TOML file (below). Default: the HR example's three tables
  (``hr.departments``, ``hr.jobs``, ``hr.hired_employees``; ``ingest-platform demo-hr``).
- ``INGEST_API_SECRET``: the key that signs tokens (HS256), at least 32 characters. Required to
  serve; never logged.
- ``INGEST_PG_DSN``: the warehouse.

TOML layout (every key optional except ``tables``; the values shown are the defaults)::

    schema = "_ingest_api"          # the API's own tables: users, requests, rejects
    max_records = 1000              # records per request; more: 413
    max_body_mb = 8                 # request body; larger: 413 before it is read
    token_minutes = 15              # lifetime of a bearer token
    login_failures = 5              # failed logins per user name and client address ...
    login_window_seconds = 300      # ... within this window; then 429 until it passes
    reject_share_limit = 0.05       # the Dagster check fails above this share in the last hour
    admin_exact_count = 100000      # admin list pages count matches up to this; above: estimate

    [[tables]]
    table = "hr.hired_employees"    # schema.table
    # name = "hired_employees"      # the name in URLs (/tables/<name>/records); default: table
    # [tables.defaults]             # column defaults set on the table by `api setup`
    # datetime = "now()"            # one of now(), current_timestamp, current_date

Write permission is per user (the users table, ``ingest-platform api user add NAME --table ...``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_platform.errors import ConfigError

DEFAULT_SCHEMA = "_ingest_api"
SECRET_VARIABLE = "INGEST_API_SECRET"
MIN_SECRET_LENGTH = 32
# Column defaults `api setup` may set: expressions, so only these (no SQL from a file).
DEFAULT_EXPRESSIONS = {
    "now()": "now()",
    "current_timestamp": "CURRENT_TIMESTAMP",
    "current_date": "CURRENT_DATE",
    "localtimestamp": "LOCALTIMESTAMP",
}


@dataclass(frozen=True)
class ApiTable:
    schema: str
    table: str
    name: str = ""  # in URLs; default: the table's own name
    defaults: tuple[tuple[str, str], ...] = ()  # (column, SQL expression) set by `api setup`

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.table)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ApiConfig:
    tables: tuple[ApiTable, ...]
    schema: str = DEFAULT_SCHEMA
    max_records: int = 1000
    max_body_mb: float = 8
    token_minutes: float = 15
    login_failures: int = 5
    login_window_seconds: float = 300
    reject_share_limit: float = 0.05
    admin_exact_count: int = 100_000

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def table(self, name: str) -> ApiTable | None:
        return next((t for t in self.tables if t.name == name), None)


HR_TABLES = (
    ApiTable("hr", "departments"),
    ApiTable("hr", "jobs"),
    # The seed's rule "a hire's datetime defaults to now" is the column's default, not code.
    ApiTable("hr", "hired_employees", defaults=(("datetime", "now()"),)),
)

_NUMBERS: dict[str, tuple[Any, float, float]] = {
    "max_records": (int, 1, 100_000),
    "max_body_mb": ((int, float), 0.001, 1024),
    "token_minutes": ((int, float), 0.01, 24 * 60),
    "login_failures": (int, 1, 1000),
    "login_window_seconds": ((int, float), 1, 86_400),
    "reject_share_limit": ((int, float), 0, 1),
    "admin_exact_count": (int, 10, 100_000_000),
}


def parse_api_config(text: str, origin: str = "API config") -> ApiConfig:
    """An ApiConfig from TOML text; ConfigError naming `origin` and the key when it is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from None
    unknown = set(data) - {"schema", "tables", *_NUMBERS}
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s): {', '.join(sorted(unknown))}.")
    settings: dict = {}
    for key, (kind, low, high) in _NUMBERS.items():
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                raise ConfigError(f"{origin}: {key} must be a number from {low} to {high}.")
            settings[key] = value
    if "schema" in data:
        if not isinstance(data["schema"], str) or not data["schema"]:
            raise ConfigError(f"{origin}: schema must be a schema name.")
        settings["schema"] = data["schema"]
    entries = data.get("tables")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{origin}: needs at least one [[tables]] entry with table = "s.t".')
    tables = []
    for number, entry in enumerate(entries, 1):
        where = f"{origin}: [[tables]] entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table.")
        unknown = set(entry) - {"table", "name", "defaults"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
        label = entry.get("table")
        if not isinstance(label, str) or label.count(".") != 1 or "" in label.split("."):
            raise ConfigError(f'{where}: table must be "schema.table", not {label!r}.')
        schema, table = label.split(".")
        name = entry.get("name") or table
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: name {name!r} must be letters, digits, _ or -.")
        defaults = entry.get("defaults", {})
        if not isinstance(defaults, dict):
            raise ConfigError(f"{where}: defaults must be a table of column = expression.")
        pairs = []
        for column, expression in defaults.items():
            sql_text = DEFAULT_EXPRESSIONS.get(str(expression).lower())
            if sql_text is None:
                raise ConfigError(
                    f"{where}: default of {column!r} must be one of "
                    f"{', '.join(DEFAULT_EXPRESSIONS)}, not {expression!r}."
                )
            pairs.append((column, sql_text))
        tables.append(ApiTable(schema, table, name, tuple(pairs)))
    names = [t.name for t in tables]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{origin}: table name(s) used twice: {', '.join(twice)}; set `name`.")
    return ApiConfig(tables=tuple(tables), **settings)


def api_config_from_env(environ=os.environ) -> ApiConfig:
    """`INGEST_API_CONFIG` (TOML), else the HR example's three tables."""
    path = environ.get("INGEST_API_CONFIG")
    if not path:
        return ApiConfig(tables=HR_TABLES)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"INGEST_API_CONFIG={path}: cannot read it ({error.strerror}).") from None
    return parse_api_config(text, f"INGEST_API_CONFIG={path}")


def secret_from_env(environ=os.environ) -> str:
    """The token signing key; a ConfigError saying how to set it when missing or short."""
    secret = environ.get(SECRET_VARIABLE) or ""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{SECRET_VARIABLE} is {'too short' if secret else 'not set'}: set it to a random "
            f"string of at least {MIN_SECRET_LENGTH} characters (e.g. `openssl rand -hex 32`); "
            "it signs the API's tokens."
        )
    return secret
