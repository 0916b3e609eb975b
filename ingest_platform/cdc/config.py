"""Which source tables the CDC pipeline tracks, and where the change log and the source live.

Configuration comes from the environment:

- ``INGEST_CDC_SOURCE_DSN``: the application database (libpq DSN or URL). Default: database
  ``cdc_demo`` on the warehouse server of ``INGEST_PG_DSN`` (``ingest-platform demo-app`` creates
  it).
- ``INGEST_CDC_CONFIG``: a TOML file (below). Default: the demo app's four tables.
- ``INGEST_CDC_SCHEMA``: the warehouse schema of merged and staging tables (default ``cdc``; the
  TOML's ``warehouse_schema`` wins over the default, the variable over both).

TOML layout (every key optional except ``tables``; the values shown are the defaults)::

    warehouse_schema = "cdc"
    terminate_blockers_after = 60            # seconds a merged-table schema change waits for
                                             # readers' locks before terminating them (logged);
                                             # "never": wait

    [change_log]
    schema = "public"                        # source schema of the two Django tables
    change_table = "models_logging_change"
    content_type_table = "django_content_type"
    untracked_content_types = "error"        # or "ignore": changes of content types no
                                             # [[tables]] names

    [[tables]]
    app_label = "pm"                         # django_content_type.app_label
    model = "plan"                           # django_content_type.model
    # source_table = "pm_plan"               # default: Django's <app_label>_<model>
    # source_schema = "public"
    # name = "pm_plan"                       # the merged table and asset name; default source_table

A second source kind reads PostgreSQL's write-ahead log instead of a change log (logical decoding,
``ingest_platform.cdc.logical``): ``kind = "logical"`` and a ``[logical]`` table; its
``[[tables]]`` name ``source_table`` (and optionally ``source_schema``, ``name``), no
app_label/model::

    kind = "logical"
    [logical]
    slot = "ingest_cdc"                      # a logical replication slot with plugin pgoutput
    publication = "ingest_cdc"               # a publication of the tracked tables
    max_retained_wal_mb = 1024               # the slot_wal_retained check fails above this
    max_changes_per_run = 100000             # rows decoded per run (whole transactions)

Merged table ``<warehouse_schema>."<name>"``, staging ``<warehouse_schema>."<name>__staging"``,
assets ``cdc/<name>/staging`` and ``cdc/<name>/merged``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.errors import ConfigError
from ingest_platform.postgres.catalog import MAX_IDENTIFIER_BYTES
from ingest_platform.postgres.locks import DEFAULT_AFTER_SECONDS

DEFAULT_WAREHOUSE_SCHEMA = "cdc"
DEMO_DATABASE = "cdc_demo"
STAGING_SUFFIX = "__staging"
# The change history (one row per change-log row merged) and its staging table (warehouse.py).
CHANGES_SUFFIX = "__changes"
STAGING_CHANGES_SUFFIX = "__staging_changes"


@dataclass(frozen=True)
class CdcTable:
    """One tracked table: the Django content type that names it in the change log, where it
    lives."""

    app_label: str = ""
    model: str = ""
    source_table: str = ""  # default <app_label>_<model>
    source_schema: str = "public"
    name: str = ""  # merged table and asset name; default source_table

    def __post_init__(self):
        if not self.source_table:
            object.__setattr__(self, "source_table", f"{self.app_label}_{self.model}")
        if not self.name:
            object.__setattr__(self, "name", self.source_table)

    @property
    def merged_table(self) -> str:
        return self.name

    @property
    def staging_table(self) -> str:
        return self.name + STAGING_SUFFIX

    @property
    def changes_table(self) -> str:
        return self.name + CHANGES_SUFFIX

    @property
    def staging_changes_table(self) -> str:
        return self.name + STAGING_CHANGES_SUFFIX


@dataclass(frozen=True)
class ChangeLog:
    schema: str = "public"
    change_table: str = "models_logging_change"
    content_type_table: str = "django_content_type"
    untracked_content_types: str = "error"  # "error" | "ignore"


@dataclass(frozen=True)
class LogicalSource:
    """``kind = "logical"``: the slot and publication the changes are decoded from."""

    slot: str
    publication: str
    max_retained_wal_mb: float = 1024.0
    max_changes_per_run: int = 100_000

    @property
    def max_retained_wal_bytes(self) -> int:
        return int(self.max_retained_wal_mb * 1024 * 1024)


@dataclass(frozen=True)
class CdcConfig:
    tables: tuple[CdcTable, ...]
    warehouse_schema: str = DEFAULT_WAREHOUSE_SCHEMA
    change_log: ChangeLog = field(default_factory=ChangeLog)
    # None: the change-log kind; else logical decoding of this slot (cdc.logical)
    logical: LogicalSource | None = None
    # Seconds a schema change of a merged table waits for readers' locks before terminating them
    # (postgres.locks, shared with ingest() and the dump attach); None ("never" in TOML): wait.
    terminate_blockers_after: float | None = DEFAULT_AFTER_SECONDS

    def table(self, name: str) -> CdcTable:
        for table in self.tables:
            if table.name == name:
                return table
        raise ConfigError(
            f"No tracked CDC table named {name!r}; tracked: "
            f"{', '.join(t.name for t in self.tables)}."
        )


# The demo app (`ingest-platform demo-app`): two models with a db_table of their own, two with
# Django's default <app_label>_<model> names.
DEMO_TABLES = (
    CdcTable(app_label="core", model="project", source_table="project"),
    CdcTable(app_label="core", model="inventory", source_table="inventory"),
    CdcTable(app_label="pm", model="plan"),
    CdcTable(app_label="pm", model="item"),
)


def parse_cdc_config(
    text: str, origin: str = "CDC config", warehouse_schema: str | None = None
) -> CdcConfig:
    """A CdcConfig from TOML text; ConfigError naming `origin` and the key when it is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from None
    kind = data.get("kind", "change_log")
    if kind not in ("change_log", "logical"):
        raise ConfigError(f'{origin}: kind must be "change_log" or "logical", not {kind!r}.')
    logical = _logical_source(data.get("logical"), origin) if kind == "logical" else None
    log = data.get("change_log", {})
    if not isinstance(log, dict):
        raise ConfigError(f"{origin}: [change_log] must be a table.")
    unknown = set(log) - {"schema", "change_table", "content_type_table", "untracked_content_types"}
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) in [change_log]: {', '.join(sorted(unknown))}."
        )
    if log.get("untracked_content_types", "error") not in ("error", "ignore"):
        raise ConfigError(
            f'{origin}: [change_log] untracked_content_types must be "error" or "ignore".'
        )
    tables = []
    entries = data.get("tables")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"{origin}: needs at least one [[tables]] entry with app_label and model."
        )
    for number, entry in enumerate(entries, 1):
        unknown = set(entry) - {"app_label", "model", "source_table", "source_schema", "name"}
        if unknown:
            raise ConfigError(
                f"{origin}: [[tables]] entry {number}: unknown key(s) {', '.join(sorted(unknown))}."
            )
        if logical is not None:
            if not entry.get("source_table") or entry.get("app_label") or entry.get("model"):
                raise ConfigError(
                    f"{origin}: [[tables]] entry {number} needs source_table (and no "
                    'app_label/model) with kind = "logical".'
                )
        elif not entry.get("app_label") or not entry.get("model"):
            raise ConfigError(f"{origin}: [[tables]] entry {number} needs app_label and model.")
        tables.append(CdcTable(**{k: str(v) for k, v in entry.items()}))
    config = CdcConfig(
        tables=tuple(tables),
        warehouse_schema=warehouse_schema
        or str(data.get("warehouse_schema") or DEFAULT_WAREHOUSE_SCHEMA),
        change_log=ChangeLog(**{k: str(v) for k, v in log.items()}),
        logical=logical,
        terminate_blockers_after=_blocker_delay(
            data.get("terminate_blockers_after", DEFAULT_AFTER_SECONDS), origin
        ),
    )
    validate_config(config, origin)
    return config


def _logical_source(value, origin: str) -> LogicalSource:
    keys = {"slot", "publication", "max_retained_wal_mb", "max_changes_per_run"}
    if not isinstance(value, dict) or not value.get("slot") or not value.get("publication"):
        raise ConfigError(
            f'{origin}: kind = "logical" needs a [logical] table with slot and publication.'
        )
    unknown = set(value) - keys
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) in [logical]: {', '.join(sorted(unknown))}.")
    limit = value.get("max_retained_wal_mb", 1024)
    changes = value.get("max_changes_per_run", 100_000)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise ConfigError(f"{origin}: [logical] max_retained_wal_mb must be a number > 0.")
    if isinstance(changes, bool) or not isinstance(changes, int) or changes < 1:
        raise ConfigError(f"{origin}: [logical] max_changes_per_run must be an integer >= 1.")
    return LogicalSource(str(value["slot"]), str(value["publication"]), float(limit), changes)


def _blocker_delay(value, origin: str) -> float | None:
    if value == "never":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            f'{origin}: terminate_blockers_after must be seconds (>= 0) or "never", not {value!r}.'
        )
    return float(value)


def validate_config(config: CdcConfig, origin: str = "CDC config") -> None:
    names = [t.name for t in config.tables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"{origin}: table name(s) used twice: {', '.join(duplicates)}; give one a `name`."
        )
    types = [(t.app_label, t.model) for t in config.tables]
    if config.logical is None and len(set(types)) != len(types):
        raise ConfigError(f"{origin}: a content type (app_label, model) is tracked twice.")
    for table in config.tables:
        if len(table.staging_changes_table.encode()) > MAX_IDENTIFIER_BYTES:
            raise ConfigError(
                f"{origin}: table name {table.name!r} is too long: "
                f"{table.staging_changes_table!r} must "
                f"fit "
                f"PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes; give it a shorter `name`."
            )
        if table.name.startswith("_cdc"):
            raise ConfigError(
                f"{origin}: table names starting with _cdc are reserved; rename {table.name!r}."
            )


def cdc_config_from_env(environ=os.environ) -> CdcConfig:
    """The tracked tables: `INGEST_CDC_CONFIG` (TOML), else the demo app's four tables."""
    schema = environ.get("INGEST_CDC_SCHEMA") or None
    path = environ.get("INGEST_CDC_CONFIG")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"INGEST_CDC_CONFIG={path}: cannot read it ({error.strerror})."
            ) from None
        return parse_cdc_config(text, f"INGEST_CDC_CONFIG={path}", schema)
    return CdcConfig(tables=DEMO_TABLES, warehouse_schema=schema or DEFAULT_WAREHOUSE_SCHEMA)


def cdc_tables_from_env(environ=os.environ) -> list[CdcTable]:
    """The tracked tables (each `.name` is the merged table `<warehouse_schema>."<name>"`)."""
    return list(cdc_config_from_env(environ).tables)


def source_dsn_from_env(environ=os.environ) -> str:
    """`INGEST_CDC_SOURCE_DSN`, else database `cdc_demo` on the warehouse server
    (`INGEST_PG_DSN`)."""
    dsn = environ.get("INGEST_CDC_SOURCE_DSN")
    if dsn:
        return dsn
    warehouse = environ.get("INGEST_PG_DSN")
    if not warehouse:
        raise ConfigError(
            "Neither INGEST_CDC_SOURCE_DSN nor INGEST_PG_DSN is set: set INGEST_CDC_SOURCE_DSN to "
            "the "
            "application database, or run under `ingest-platform dev` (which sets INGEST_PG_DSN)."
        )
    from ingest_platform.postgres.connection import libpq_dsn, with_database

    return with_database(libpq_dsn(warehouse), DEMO_DATABASE)
