"""A small web admin at ``/admin`` (SQLAdmin): the rejects, the batches and the API users,
read-only, behind the API's own login.

Only users who may write every table (``*``) may sign in; the password is checked against the
same argon2 hash and counted by the same login rate limit as ``POST /token``. The session cookie
is signed with a key derived from ``INGEST_API_SECRET`` and lasts ``token_minutes``. Users are
managed with the CLI (``ingest-platform api user ...``); the admin never shows a password hash.

List pages stay fast on a large log: newest first by the primary key, and the total on the page
is PostgreSQL's estimate (``pg_class.reltuples``) once a table has more than 100,000 rows,
instead of a ``count(*)`` over all of it. Not here yet: the ETL transaction log (issue 15,
item 5) and a page of the table configuration.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy import ARRAY, BigInteger, Boolean, DateTime, Integer, Text, create_engine, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.requests import Request

from ingest_platform.postgres.connection import libpq_dsn, to_url

from . import auth, store
from .config import ApiConfig

EXACT_COUNT_UP_TO = 100_000


def mount_admin(app, dsn: str, config: ApiConfig, secret: str, limiter, pool) -> Admin:
    class Base(DeclarativeBase):
        pass

    schema = {"schema": config.schema}

    class Rejects(Base):  # the class name is the URL: /admin/rejects/list
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

        async def count(self, request: Request, stmt=None) -> int:
            if stmt is not None or request.query_params.get("search"):
                return await super().count(request, stmt)
            name = getattr(self.model, "__tablename__", "")
            with engine.connect() as conn:
                estimate = conn.execute(
                    text(
                        "SELECT greatest(reltuples, 0)::bigint FROM pg_class"
                        " WHERE oid = to_regclass(:t)"
                    ),
                    {"t": f'"{config.schema}"."{name}"'},
                ).scalar()
            if estimate and estimate > EXACT_COUNT_UP_TO:
                return int(estimate)
            return await super().count(request, stmt)

    class RejectsAdmin(ReadOnly, model=Rejects):
        name_plural = "Rejects"
        column_list = [
            Rejects.at, Rejects.username, Rejects.table_name, Rejects.record_index,
            Rejects.field, Rejects.reason,
        ]  # fmt: skip
        column_searchable_list = [Rejects.table_name, Rejects.username]
        column_default_sort = (Rejects.id, True)

    class RequestsAdmin(ReadOnly, model=Requests):
        name_plural = "Batches"
        column_list = [
            Requests.at, Requests.username, Requests.table_name, Requests.received,
            Requests.accepted, Requests.rejected, Requests.atomic,
        ]  # fmt: skip
        column_default_sort = (Requests.at, True)

    class UsersAdmin(ReadOnly, model=Users):
        name_plural = "API users"
        column_list = [Users.name, Users.tables, Users.created]

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

    engine = create_engine(
        to_url(libpq_dsn(dsn)).replace("postgresql://", "postgresql+psycopg://", 1),
        pool_pre_ping=True,
        pool_size=2,
    )
    session_key = hashlib.sha256(f"ingest-admin:{secret}".encode()).hexdigest()
    admin = Admin(
        app,
        engine,
        title="ingest_platform API",
        authentication_backend=Login(
            secret_key=session_key, max_age=int(config.token_minutes * 60), https_only=False
        ),
    )
    for view in (RejectsAdmin, RequestsAdmin, UsersAdmin):
        admin.add_view(view)
    return admin
