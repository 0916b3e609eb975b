"""The FastAPI app: ``POST /token``, ``GET /tables``, ``POST /tables/{table}/records``.

``create_app()`` reads the configuration, refuses to start without ``INGEST_API_SECRET``, prepares
the database (``prepare``) and makes one documented route per exposed table, whose request body
schema is the model generated from the catalog. Every endpoint except ``/token`` and the
documentation (``/docs``, ``/openapi.json``) needs a bearer token.

Status codes of a batch: 201 every record accepted; 207 some accepted, some rejected (the good
ones are committed); 422 none accepted (with ``?atomic=true``: any rejected record rejects the
batch, nothing is stored). Whole-request problems: 400 the body is not JSON, 401 token, 403 no
write permission, 404 unknown table, 413 more records than ``max_records`` or a body larger than
``max_body_mb`` (refused before it is read), 422 not an array or an empty one, 429 too many failed
logins.
"""

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from ingest_platform.errors import ConfigError, first_line
from ingest_platform.postgres import etl_log
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import CONNECT_TIMEOUT, connect, libpq_dsn

from . import auth, store
from .config import ApiConfig, api_config_from_env, secret_from_env
from .login_limit import LoginLimiter
from .schema import TableShape, read_shape, request_model
from .store import Reject
from .writes import BatchResult, TableWriter

log = logging.getLogger("ingest_platform.api")


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class Accepted(BaseModel):
    index: int
    id: Any = None


class Rejected(BaseModel):
    index: int
    field: str | None = None
    constraint: str | None = None
    reason: str


class BatchResponse(BaseModel):
    request_id: str
    table: str
    accepted: list[Accepted]
    rejected: list[Rejected]


class Problem(BaseModel):
    detail: str


class ApiProblem(Exception):
    """An error response: status and a one-line message (never a secret or a stack)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


def prepare(dsn: str, config: ApiConfig) -> list[TableShape]:
    """The API's tables created, configured defaults set, each sequence moved past the table's
    largest id, and the shape of every exposed table. Runs when the app starts.

    The sequence moves under a SHARE lock on the table: inserts in flight finish first and new
    ones wait, so ``greatest(max(id), last_value)`` cannot go back below an id in use; the
    sequence only ever moves forward (``setval`` never lowers it here)."""
    with connect(dsn) as conn:
        store.ensure_tables(conn, config.schema)
        # The ETL log too (its admin page reads it; a batch writes to it): here, once, not in a
        # request.
        etl_log.ensure_table(conn)
        shapes = []
        for table in config.tables:
            shape = read_shape(conn, table)
            target = qualified(table.schema, table.table)
            for column, expression in table.defaults:
                current = shape.column(column)
                if current is None:
                    raise ConfigError(
                        f"API config: {table.label} has no column {column!r} for its default."
                    )
                if (current.default or "").lower() != expression.lower():
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                            target, sql.Identifier(column), sql.SQL(expression)
                        )
                    )
            if shape.sequence and shape.id_column:
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(target))
                conn.execute(
                    sql.SQL(
                        "SELECT setval(%(seq)s::regclass, m) FROM (SELECT max({id})::bigint AS m"
                        " FROM {t}) s WHERE m > (SELECT last_value FROM {seq})"
                    ).format(
                        id=sql.Identifier(shape.id_column),
                        t=target,
                        seq=sql.SQL(shape.sequence),  # pg_get_serial_sequence's quoted name
                    ),
                    {"seq": shape.sequence},
                )
            shapes.append(read_shape(conn, table) if table.defaults else shape)
        return shapes


@dataclass
class AppState:
    config: ApiConfig
    secret: str
    pool: ConnectionPool
    writers: dict[str, TableWriter]
    limiter: LoginLimiter


def create_app(
    config: ApiConfig | None = None, dsn: str | None = None, secret: str | None = None
) -> FastAPI:
    """The app, configured from the environment for what is not given."""
    config = config or api_config_from_env()
    secret = secret or secret_from_env()
    dsn = dsn or os.environ.get("INGEST_PG_DSN") or ""
    if not dsn:
        raise ConfigError(
            "INGEST_PG_DSN is not set: the API needs the warehouse (run it under "
            "`ingest-platform services` or set INGEST_PG_DSN)."
        )
    try:
        shapes = prepare(dsn, config)
    except psycopg.Error as error:  # not the owner of a table, no CREATE on the database, ...
        raise ConfigError(
            f"The API cannot prepare its tables: {first_line(error)}. It needs CREATE on the "
            "database, and ownership of the tables that get a configured default."
        ) from None
    writers = {s.name: TableWriter.build(s, request_model(s)) for s in shapes}
    pool = ConnectionPool(
        libpq_dsn(dsn),
        min_size=1,
        max_size=8,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
        check=lambda conn: _check_connection(pool, conn),
        timeout=10,
        open=False,
    )
    limiter = LoginLimiter(pool, config.schema, config.login_failures, config.login_window_seconds)
    state = AppState(config, secret, pool, writers, limiter)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="ingest_platform REST intake API",
        description=__doc__,
        version="1",
        lifespan=lifespan,
    )
    app.state.api = state
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    _handlers(app)
    _routes(app, state)
    from .admin import mount_admin  # SQLAlchemy and Jinja: only when serving

    mount_admin(app, dsn, config, secret, limiter, pool)
    return app


def _check_connection(pool: ConnectionPool, conn: psycopg.Connection) -> None:
    """One short round trip per request, so a connection the server closed (restart,
    pg_terminate_backend) is replaced when taken, not failed on.

    When one is dead, the others idle in the pool most likely went with it: all are replaced
    now. The pool alone would find them one per back-off (1, 2, 4, 8 s), and four dead
    connections would outlast the request's timeout (503).
    """
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        pool.check()
        raise


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def problem(request: Request, exc: ApiProblem):
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own body would echo the input (for /token: the password); name fields only.
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, 422)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException):
        return JSONResponse(
            {"detail": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(PoolTimeout)
    async def busy(request: Request, exc: PoolTimeout):
        return JSONResponse(
            {"detail": "the warehouse is busy or does not answer: try again shortly"},
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(psycopg.OperationalError)
    async def gone(request: Request, exc: psycopg.OperationalError):
        log.warning("PostgreSQL connection failed: %s", first_line(exc))
        return JSONResponse(
            {"detail": "the warehouse connection failed: try again shortly"},
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        return JSONResponse({"detail": str(exc)}, 413, headers={"Connection": "close"})


_bearer = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _routes(app: FastAPI, state: AppState) -> None:
    config = state.config

    def current_user(token: Annotated[str | None, Depends(_bearer)]) -> str:
        if not token:
            raise ApiProblem(401, "no bearer token: get one from POST /token", UNAUTHORIZED)
        try:
            return auth.user_of(token, state.secret)
        except auth.TokenError as error:
            raise ApiProblem(401, str(error), UNAUTHORIZED) from None

    @app.post(
        "/token",
        response_model=Token,
        responses={401: {"model": Problem}, 429: {"model": Problem}},
        summary="A bearer token for a user name and password (OAuth2 password form)",
    )
    def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
        key = (form.username, request.client.host if request.client else "")
        wait = state.limiter.retry_after(key)
        if wait:
            raise ApiProblem(
                429,
                f"too many failed logins for {form.username!r} from this address: try again in "
                f"{int(wait) + 1} s",
                {"Retry-After": str(int(wait) + 1)},
            )
        # A name PostgreSQL cannot hold (a NUL character) names no user: no query for it.
        hash_ = None
        if "\x00" not in form.username:
            with state.pool.connection() as conn:
                hash_ = store.password_hash(conn, config.schema, form.username)
        if not auth.verify_password(form.password, hash_):
            state.limiter.failed(key)
            raise ApiProblem(401, "wrong user name or password", UNAUTHORIZED)
        state.limiter.succeeded(key)
        return Token(
            access_token=auth.make_token(form.username, state.secret, config.token_minutes)
        )

    @app.get(
        "/tables",
        summary="The exposed tables and their fields",
        responses={401: {"model": Problem}},
    )
    def tables(user: Annotated[str, Depends(current_user)]) -> dict:
        return {
            name: {
                "table": w.shape.config.label,
                "id": w.shape.id_column,
                "fields": {
                    c.name: {"type": c.type, "not_null": c.not_null, "default": c.default}
                    for c in w.shape.columns
                },
            }
            for name, w in state.writers.items()
        }

    problems: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem} for code in (400, 401, 403, 404, 413)
    }
    for name, writer in state.writers.items():
        schema = writer.json_schema()
        app.add_api_route(
            f"/tables/{name}/records",
            _write_endpoint(state, name, current_user),
            methods=["POST"],
            status_code=201,
            summary=f"Add 1 to {config.max_records} records to {writer.shape.config.label}",
            response_model=BatchResponse,
            responses={
                207: {"model": BatchResponse, "description": "some records rejected"},
                422: {"model": BatchResponse, "description": "no record accepted"},
                **problems,
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": config.max_records,
                                "items": schema,
                            }
                        }
                    },
                }
            },
            name=f"write_{name}",
        )

    @app.post("/tables/{table}/records", include_in_schema=False)
    def unknown_table(table: str, user: Annotated[str, Depends(current_user)]):
        raise ApiProblem(
            404,
            f"no table {table!r} in this API; tables: {', '.join(state.writers) or 'none'}",
        )


def _write_endpoint(state: AppState, name: str, current_user: Callable) -> Callable:
    async def write(
        request: Request,
        user: Annotated[str, Depends(current_user)],
        atomic: Annotated[
            bool, Query(description="all or nothing: any rejected record rejects the batch")
        ] = False,
    ) -> Response:
        body = await request.body()
        status, result = await run_in_threadpool(_write, state, name, user, body, atomic)
        # BatchResponse's shape (the documented response_model), serialized in one call: one
        # pydantic model per accepted record, dumped and encoded again, was a fifth of the
        # server's CPU per 1000-record batch.
        return Response(
            to_json(result),
            status,
            headers={"X-Request-ID": result["request_id"]},
            media_type="application/json",
        )

    return write


def _write(
    state: AppState, name: str, user: str, body: bytes, atomic: bool
) -> tuple[int, dict[str, Any]]:
    """The status and the body (BatchResponse's fields) of one batch."""
    config, writer = state.config, state.writers[name]
    request_id = str(uuid.uuid4())
    with state.pool.connection() as conn:
        allowed = store.user_tables(conn, config.schema, user)
        if allowed is None:
            raise ApiProblem(401, f"user {user!r} no longer exists", UNAUTHORIZED)
        if name not in allowed and "*" not in allowed:
            raise ApiProblem(
                403,
                f"user {user!r} may not write {name!r}: an admin grants it with "
                f"`ingest-platform api user grant {user} {name}`",
            )
        good = writer.validate_body(body)
        rejects: list[Reject] = []
        records: list | None = None  # parsed again only when needed: a bad batch, a reject logged
        if good is None or not 1 <= len(good) <= config.max_records:
            records = _records(body, config.max_records)  # the whole-request errors (400, 413, 422)
            good, rejects = writer.validate(records)
        accepted: list[tuple[int, Any]] = []
        if good and not (atomic and rejects):
            if atomic:
                try:
                    with conn.transaction():  # a savepoint: undoes the data, keeps the log
                        result = writer.insert(conn, good, atomic)
                        if result.rejected:
                            raise _Rollback(result.rejected)
                except _Rollback as rollback:
                    result = BatchResult(rejected=rollback.rejects)
            else:  # the insert's own savepoints keep exactly the good records
                result = writer.insert(conn, good)
            accepted = result.accepted
            rejects += result.rejected
        rejects.sort(key=lambda r: r.index)
        if rejects and records is None:
            records = json.loads(body)
        store.log_request(
            conn, config.schema, request_id, user, name, len(records or good), len(accepted),
            rejects, records or [], atomic,
        )  # fmt: skip
        if accepted:  # in the records' transaction: the pool commits both when the block ends
            etl_log.record(
                conn,
                kind="api_batch",
                table=writer.shape.config.label,
                rows=len(accepted),
                version=request_id,
                detail={"user": user},
                ensure=False,  # created by prepare(): no DDL or catalog lookup in a request
            )
    status = 201 if not rejects else (207 if accepted else 422)
    return status, {
        "request_id": request_id,
        "table": name,
        "accepted": [{"index": i, "id": v} for i, v in accepted],
        "rejected": [
            {"index": r.index, "field": r.field, "constraint": r.constraint, "reason": r.reason}
            for r in rejects
        ],
    }


class _Rollback(Exception):
    def __init__(self, rejects):
        self.rejects = rejects


def _records(body: bytes, limit: int) -> list:
    if not body.strip():
        raise ApiProblem(422, f"the body is empty: send a JSON array of 1 to {limit} records")
    try:
        records = json.loads(body)
    except UnicodeDecodeError:
        raise ApiProblem(400, "the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise ApiProblem(
            400,
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    except RecursionError:
        raise ApiProblem(400, "the body is not valid JSON: nested too deeply") from None
    if not isinstance(records, list):
        raise ApiProblem(422, f"the body must be a JSON array of 1 to {limit} records")
    if not records:
        raise ApiProblem(422, f"the array is empty: send 1 to {limit} records")
    if len(records) > limit:
        raise ApiProblem(
            413, f"{len(records)} records: at most {limit} per request; split the batch"
        )
    return records


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for a body larger than `limit` bytes: at once from Content-Length, or as soon as a
    chunked body passes the limit (nothing more of it is read)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = JSONResponse(
                {"detail": self._message()}, 413, headers={"Connection": "close"}
            )
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the body is larger than {self.limit // (1024 * 1024)} MB: send smaller batches"
