"""`ingest-platform api [--host --port --workers]` serves the REST intake API (uvicorn);
`ingest-platform api user add|grant|remove|list` manages its users.

The warehouse is INGEST_PG_DSN (or --dsn); the tables come from INGEST_API_CONFIG (default: the HR
example). `user add NAME` asks for the password twice (getpass: not echoed), or reads one line from
standard input with --password-stdin; a password never appears in arguments (`ps`), logs or
messages. Adding an existing user replaces its password and tables.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

from ingest_platform.api.config import SECRET_VARIABLE
from ingest_platform.errors import ConfigError
from ingest_platform.local.ports import choose_port

MIN_PASSWORD = 8


def register(subparsers, say) -> None:
    api = subparsers.add_parser("api", help="serve the REST intake API, or manage its users")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default 8000, or a free one if taken)")
    api.add_argument("--dsn", help="warehouse DSN (default $INGEST_PG_DSN)")
    api.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes (2): one Python process's lock holds a 1000-record batch's "
        "parsing, validation and answer; two keep both cores busy",
    )
    api.set_defaults(run=lambda options: run_api(options, say))
    actions = api.add_subparsers(dest="action")
    user = actions.add_parser("user", help="add, remove or list API users")
    user_actions = user.add_subparsers(dest="user_action", required=True)
    add = user_actions.add_parser("add", help="add a user (or replace its password and tables)")
    add.add_argument("name")
    add.add_argument(
        "--table",
        action="append",
        default=[],
        dest="tables",
        help="a table (URL name) the user may write; repeatable; '*' for all",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    grant = user_actions.add_parser("grant", help="let a user write more tables")
    grant.add_argument("name")
    grant.add_argument("tables", nargs="+", metavar="TABLE", help="URL names, or '*' for all")
    remove = user_actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    user_actions.add_parser("list", help="list users and the tables they may write")
    for parser in (add, grant, remove, user_actions.choices["list"]):
        parser.add_argument("--dsn", help="warehouse DSN (default $INGEST_PG_DSN)")
        parser.set_defaults(run=lambda options: run_user(options, say))


def _dsn(options) -> str:
    dsn = options.dsn or os.environ.get("INGEST_PG_DSN")
    if not dsn:
        raise ConfigError(
            "No warehouse DSN: give --dsn or set INGEST_PG_DSN (`ingest-platform services` "
            "prints it)."
        )
    return dsn


def run_api(options, say) -> int:
    import uvicorn

    from ingest_platform.api.app import create_app

    if options.workers < 1:
        raise ConfigError(f"--workers {options.workers}: give 1 or more server processes.")
    dsn = _dsn(options)
    app = create_app(dsn=dsn)  # here first: a bad config or secret stops before any worker
    port = choose_port(
        options.port or 8000, "the REST API", explicit=options.port is not None, say=say
    )
    say(
        f"REST API: http://{options.host}:{port}  (OpenAPI page: http://{options.host}:{port}/docs)"
    )
    if options.workers == 1:
        uvicorn.run(app, host=options.host, port=port, log_level="info")
        return 0
    # Worker processes build their own app from the environment (the DSN by environment,
    # never by command line: `ps`).
    os.environ["INGEST_PG_DSN"] = dsn
    uvicorn.run(
        "ingest_platform.api.app:create_app",
        factory=True,
        workers=options.workers,
        host=options.host,
        port=port,
        log_level="info",
    )
    return 0


def run_user(options, say) -> int:
    from ingest_platform.api import auth, store
    from ingest_platform.api.config import api_config_from_env
    from ingest_platform.postgres.connection import connect

    config = api_config_from_env()
    with connect(_dsn(options)) as conn:
        store.ensure_tables(conn, config.schema)
        if options.user_action == "list":
            for name, tables, created in store.list_users(conn, config.schema):
                print(f"{name}\t{','.join(tables) or '-'}\t{created:%Y-%m-%d %H:%M}")
            return 0
        if options.user_action == "remove":
            if not store.remove_user(conn, config.schema, options.name):
                raise ConfigError(f"No API user {options.name!r}: `api user list` lists them.")
            say(f"removed API user {options.name}")
            return 0
        known = {t.name for t in config.tables}
        unknown = [t for t in options.tables if t != "*" and t not in known]
        if options.user_action == "grant" and not unknown:
            if not store.grant(conn, config.schema, options.name, options.tables):
                raise ConfigError(f"No API user {options.name!r}: `api user list` lists them.")
            say(f"API user {options.name} may now also write: {', '.join(options.tables)}")
            return 0
        if unknown:
            raise ConfigError(
                f"Unknown table(s) {', '.join(unknown)}: the API exposes "
                f"{', '.join(sorted(known))}."
            )
        password = _password(options.password_stdin)
        store.add_user(
            conn, config.schema, options.name, auth.hash_password(password), options.tables
        )
    say(f"API user {options.name} may write: {', '.join(options.tables) or 'nothing yet'}")
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("The two passwords differ: nothing changed.")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(
            f"The password is shorter than {MIN_PASSWORD} characters: nothing changed."
        )
    return password


def start_api_beside_dagster(env: dict[str, str], say) -> subprocess.Popen | None:
    """`ingest-platform dev`'s REST API: a child `ingest-platform api` on port 8000 (or a free
    one), which prints its address itself; None, with a line saying why, without
    INGEST_API_SECRET. A child that cannot start (no HR tables, say) says so and exits; Dagster
    runs on."""
    if not env.get(SECRET_VARIABLE):
        say(f"REST API not started: set {SECRET_VARIABLE} to start it with `dev`.")
        return None
    port = choose_port(8000, "the REST API", explicit=False, say=say)
    return subprocess.Popen(
        [sys.executable, "-m", "ingest_platform.local.cli", "api", "--port", str(port)], env=env
    )
