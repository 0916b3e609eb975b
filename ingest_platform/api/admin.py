"""A small web admin at ``/admin`` (SQLAdmin): the ETL transaction log, the rejects, the batches,
the API users and the table configuration, read-only, behind the API's own login.

Only users who may write every table (``*``) may sign in; the password is checked against the
same argon2 hash and counted by the same login rate limit as ``POST /token``. The session cookie
is signed with a key derived from ``INGEST_API_SECRET`` and lasts ``token_minutes``. Users are
managed with the CLI (``ingest-platform api user ...``); the admin never shows a password hash.

List pages stay fast on a log of millions of rows: newest first by the primary key (an index
scan), filters whose columns are indexed (the ETL log: table, kind, finish time), choices of a
filter read by a loose index scan instead of ``SELECT DISTINCT`` over the log, and a total that
is counted up to ``admin_exact_count`` rows and estimated above (``admin_count.py``): never a
``count(*)`` over the whole table. The page says when its total is an estimate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqladmin import Admin, BaseView, ModelView, expose
from sqladmin.authentication import AuthenticationBackend
from sqladmin.filters import AllUniqueStringValuesFilter, OperationColumnFilter, StaticValuesFilter
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Integer,
    Select,
    Subquery,
    Text,
    create_engine,
    text,
)  # fmt: skip
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, mapped_column
from starlette.requests import Request

from ingest_platform.postgres import etl_log
from ingest_platform.postgres.connection import libpq_dsn, to_url

from . import auth, store
from .admin_count import capped_count
from .config import ApiConfig

TEMPLATES = Path(__file__).parent / "admin_templates"
FILTER_CHOICES = 200  # distinct values a filter offers at most


class IndexedValuesFilter(AllUniqueStringValuesFilter):
    """A filter by one value of an indexed text column, whose choices are read by a loose index
    scan (one index probe per distinct value), not ``SELECT DISTINCT`` over the whole table."""

    def __init__(self, column: InstrumentedAttribute, engine: Engine, title: str | None = None):
        super().__init__(column, title=title)
        self.engine = engine

    async def lookups(self, request, model, run_query) -> list[tuple[str, str]]:
        values = await anyio.to_thread.run_sync(self._values)
        return [("__all", "All"), *((v, v) for v in values)]

    def _values(self) -> list[str]:
        column = self.column.property.columns[0]  # type: ignore[union-attr]
        quote = self.engine.dialect.identifier_preparer
        table, name = quote.format_table(column.table), quote.quote(column.name)
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"WITH RECURSIVE v(x) AS ("
                    f" (SELECT {name} FROM {table} ORDER BY {name} LIMIT 1)"
                    f" UNION ALL SELECT (SELECT {name} FROM {table} WHERE {name} > v.x"
                    f" ORDER BY {name} LIMIT 1) FROM v WHERE v.x IS NOT NULL)"
                    f" SELECT x FROM v WHERE x IS NOT NULL LIMIT :n"
                ),
                {"n": FILTER_CHOICES},
            )
            return [row[0] for row in rows]


def _utc(model: Any, attribute: str) -> str:
    """A time on a list page: UTC to the second (the microseconds and offset made columns wide)."""
    value = getattr(model, attribute)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def mount_admin(app, dsn: str, config: ApiConfig, secret: str, limiter, pool) -> Admin:
    class Base(DeclarativeBase):
        pass

    schema = {"schema": config.schema}
    engine = create_engine(
        to_url(libpq_dsn(dsn)).replace("postgresql://", "postgresql+psycopg://", 1),
        pool_pre_ping=True,
        pool_size=2,
        # The time filter's value has no offset: it is UTC, as the list pages show times.
        connect_args={"options": "-c TimeZone=UTC"},
    )

    class EtlLog(Base):  # the class name is the URL: /admin/etl-log/list
        __tablename__ = etl_log.TABLE
        __table_args__ = {"schema": etl_log.SCHEMA}
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        kind: Mapped[str] = mapped_column(Text)
        table_name: Mapped[str] = mapped_column(Text)
        version: Mapped[str | None] = mapped_column(Text)
        rows: Mapped[int] = mapped_column(BigInteger)
        started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
        finished: Mapped[datetime] = mapped_column(DateTime(timezone=True))
        run_id: Mapped[str | None] = mapped_column(Text)
        detail: Mapped[Any] = mapped_column(JSONB)

    class Rejects(Base):
        __tablename__ = "rejects"
        __table_args__ = schema
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
        request_id: Mapped[Any] = mapped_column(UUID)
        username: Mapped[str] = mapped_column(Text)
        table_name: Mapped[str] = mapped_column(Text)
        record_index: Mapped[int] = mapped_column(Integer)
        field: Mapped[str | None] = mapped_column(Text)
        constraint_name: Mapped[str | None] = mapped_column(Text)
        reason: Mapped[str] = mapped_column(Text)
        record: Mapped[Any] = mapped_column(JSONB)

    class Requests(Base):
        __tablename__ = "requests"
        __table_args__ = schema
        request_id: Mapped[Any] = mapped_column(UUID, primary_key=True)
        at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
        username: Mapped[str] = mapped_column(Text)
        table_name: Mapped[str] = mapped_column(Text)
        received: Mapped[int] = mapped_column(Integer)
        accepted: Mapped[int] = mapped_column(Integer)
        rejected: Mapped[int] = mapped_column(Integer)
        atomic: Mapped[bool] = mapped_column(Boolean)

    class Users(Base):
        __tablename__ = "users"
        __table_args__ = schema
        name: Mapped[str] = mapped_column(Text, primary_key=True)
        tables: Mapped[list[str]] = mapped_column(ARRAY(Text))
        created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
        # password_hash is not mapped: the admin cannot show it.

    class ReadOnly(ModelView):
        can_create = can_edit = can_delete = False
        can_export = False  # an export of a 10-million-row log would be one huge query
        page_size = 50
        list_template = "ingest_admin/list.html"  # says when the total is an estimate

        async def count(self, request: Request, stmt: Select | None = None) -> int:
            # SQLAdmin passes SELECT count(*) FROM (the page's filtered query): count that query
            # capped instead (a statement of another shape is counted as SQLAdmin would).
            query = self.list_query(request)
            if stmt is not None:
                froms = stmt.get_final_froms()
                if not (len(froms) == 1 and isinstance(froms[0], Subquery)):
                    return await super().count(request, stmt)
                query = froms[0].element  # type: ignore[assignment]
            table = self.model.__table__  # type: ignore[attr-defined]

            def count() -> int:
                with engine.connect() as conn:
                    counted = capped_count(conn, query, table, config.admin_exact_count)
                if counted.estimated:
                    request.state.count_estimate = counted.rows
                    request.state.count_limit = config.admin_exact_count
                return counted.rows

            return await anyio.to_thread.run_sync(count)

    class EtlLogAdmin(ReadOnly, model=EtlLog):
        name_plural = "ETL log"
        icon = "fa-solid fa-list"
        column_list = [
            EtlLog.id, EtlLog.finished, EtlLog.kind, EtlLog.table_name, EtlLog.rows,
            EtlLog.version, EtlLog.run_id,
        ]  # fmt: skip
        column_sortable_list = [EtlLog.id, EtlLog.finished]
        column_formatters = {EtlLog.finished: _utc}
        column_default_sort = (EtlLog.id, True)
        # Each filter has its index ("_ingest_meta".etl_log: table_name, kind, finished).
        column_filters = [
            IndexedValuesFilter(EtlLog.table_name, engine, title="Table"),
            IndexedValuesFilter(EtlLog.kind, engine, title="Kind"),
            OperationColumnFilter(EtlLog.finished, title="Finished (UTC, 2026-01-31T12:00)"),
        ]

    class RejectsAdmin(ReadOnly, model=Rejects):
        name_plural = "Rejects"
        column_list = [
            Rejects.at, Rejects.username, Rejects.table_name, Rejects.record_index,
            Rejects.field, Rejects.reason,
        ]  # fmt: skip
        column_searchable_list = [Rejects.table_name, Rejects.username]
        column_formatters = {Rejects.at: _utc}
        column_default_sort = (Rejects.id, True)
        column_filters = [
            StaticValuesFilter(
                Rejects.table_name, [(t.name, t.label) for t in config.tables], title="Table"
            )
        ]

    class RequestsAdmin(ReadOnly, model=Requests):
        name_plural = "Batches"
        column_list = [
            Requests.at, Requests.username, Requests.table_name, Requests.received,
            Requests.accepted, Requests.rejected, Requests.atomic,
        ]  # fmt: skip
        column_default_sort = (Requests.at, True)
        column_formatters = {Requests.at: _utc}

    class UsersAdmin(ReadOnly, model=Users):
        name_plural = "API users"
        column_list = [Users.name, Users.tables, Users.created]
        column_formatters = {
            Users.created: _utc,
            Users.tables: lambda model, attribute: ", ".join(model.tables),
        }

    class TableConfig(BaseView):
        name = "Table configuration"
        icon = "fa-solid fa-table"

        @expose("/table-config", methods=["GET"])
        async def table_config(self, request: Request):
            def users() -> list[tuple[str, list[str], datetime]]:
                with pool.connection() as conn:
                    return store.list_users(conn, config.schema)

            rows = await anyio.to_thread.run_sync(users)
            names = {t.name for t in config.tables}
            return await self.templates.TemplateResponse(
                request,
                "ingest_admin/table_config.html",
                {
                    "config": config,
                    "users": [
                        {
                            "name": name,
                            "all": "*" in tables,
                            "tables": set(tables),
                            "unknown": sorted(set(tables) - names - {"*"}),
                        }
                        for name, tables, _ in rows
                    ],
                },
            )

    class Login(AuthenticationBackend):
        async def login(self, request: Request) -> bool:
            form = await request.form()
            name, password = str(form.get("username", "")), str(form.get("password", ""))
            key = (name, request.client.host if request.client else "")
            if limiter.retry_after(key):
                return False
            with pool.connection() as conn:
                hash_ = store.password_hash(conn, config.schema, name)
                tables = store.user_tables(conn, config.schema, name) or []
            if not auth.verify_password(password, hash_) or "*" not in tables:
                limiter.failed(key)
                return False
            limiter.succeeded(key)
            request.session.update({"user": name})
            return True

        async def logout(self, request: Request) -> bool:
            request.session.clear()
            return True

        async def authenticate(self, request: Request) -> bool:
            name = request.session.get("user")
            if not name:
                return False
            with pool.connection() as conn:  # a removed user's session ends at once
                tables = store.user_tables(conn, config.schema, name)
            return tables is not None and "*" in tables

    session_key = hashlib.sha256(f"ingest-admin:{secret}".encode()).hexdigest()
    admin = Admin(
        app,
        engine,
        title="ingest_platform API",
        templates_dir=str(TEMPLATES),
        authentication_backend=Login(
            secret_key=session_key, max_age=int(config.token_minutes * 60), https_only=False
        ),
    )
    for view in (EtlLogAdmin, RejectsAdmin, RequestsAdmin, UsersAdmin):
        admin.add_view(view)
    admin.add_base_view(TableConfig)
    return admin
