"""The REST intake API over HTTP: bad input of every kind gets the right status, a message naming
the record and field, and nothing of a rejected record is stored."""

from __future__ import annotations

import itertools
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import psutil
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from ingest_platform.api.login_limit import LoginLimiter
from ingest_platform.local.api_command import start_api_beside_dagster
from ingest_platform_tests.api.conftest import PASSWORDS, SECRET, Api, cli

HIRES = "/tables/hired_employees/records"
GOOD_IDS = itertools.count(300)


def hires_named(api: Api, name: str) -> list[tuple]:
    return api.query(
        "SELECT id, name, datetime, department_id, job_id FROM hr.hired_employees WHERE name = %s",
        (name,),
    )


def rejects_of(api: Api, request_id: str) -> list[tuple]:
    return api.query(
        "SELECT record_index, record, field, reason FROM _ingest_api.rejects"
        " WHERE request_id = %s ORDER BY record_index",
        (request_id,),
    )


def test_good_batch_numbered_past_the_largest_id_and_datetime_defaults_to_now(api):
    before = datetime.now()
    records = [{"name": f"good-{i}", "department_id": 1, "job_id": 2} for i in range(3)]
    response = api.client().post(HIRES, json=records)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rejected"] == []
    ids = [a["id"] for a in body["accepted"]]
    assert [a["index"] for a in body["accepted"]] == [0, 1, 2]
    assert min(ids) > 5000 and ids == sorted(ids) and len(set(ids)) == 3
    stored = api.query(
        "SELECT id, name, datetime FROM hr.hired_employees WHERE id = ANY(%s) ORDER BY id", (ids,)
    )
    assert [(r[0], r[1]) for r in stored] == [(ids[i], f"good-{i}") for i in range(3)]
    assert all(r[2] >= before - timedelta(minutes=5) for r in stored)  # the column default


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "no bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, "not a valid bearer token"),
        (
            {"Authorization": "Bearer " + jwt.encode(
                {"sub": "alice", "iat": datetime.now(UTC) - timedelta(hours=2),
                 "exp": datetime.now(UTC) - timedelta(hours=1)}, SECRET, algorithm="HS256")},
            "expired",
        ),
        (
            {"Authorization": "Bearer " + jwt.encode(
                {"sub": "alice", "iat": datetime.now(UTC),
                 "exp": datetime.now(UTC) + timedelta(hours=1)}, "f" * 40, algorithm="HS256")},
            "signature is not valid",
        ),
        (
            {"Authorization": "Bearer " + jwt.encode(
                {"sub": "alice", "iat": datetime.now(UTC),
                 "exp": datetime.now(UTC) + timedelta(hours=1)}, SECRET, algorithm="HS512")},
            "not a valid bearer token",
        ),
    ],
    ids=["missing", "malformed", "expired", "forged", "other-algorithm"],
)  # fmt: skip
def test_bad_tokens_are_refused_and_nothing_is_stored(api, headers, message):
    client = api.client(None)
    response = client.post(HIRES, json=[{"name": "token-test"}], headers=headers)
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/tables", headers=headers).status_code == 401
    assert hires_named(api, "token-test") == []


def test_wrong_password_is_refused_without_echoing_it(api):
    response = api.client(None).post(
        "/token", data={"username": "alice", "password": "wrong-password-xyz"}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong user name or password"}
    unknown = api.client(None).post("/token", data={"username": "nobody", "password": "x" * 9})
    assert unknown.status_code == 401 and unknown.json() == response.json()
    missing = api.client(None).post("/token", data={"username": "alice"})
    assert missing.status_code == 422 and "password" in missing.json()["detail"]


def test_failed_logins_are_rate_limited_per_user_and_address(api):
    # A new connection per attempt: the server's worker processes take turns, and all count.
    for _ in range(3):
        wrong = api.client(None).post(
            "/token", data={"username": "carol", "password": "not-carols-1"}
        )
        assert wrong.status_code == 401
    limited = api.client(None).post(
        "/token", data={"username": "carol", "password": PASSWORDS["carol"]}
    )
    assert limited.status_code == 429
    assert "too many failed logins for 'carol'" in limited.json()["detail"]
    assert int(limited.headers["Retry-After"]) > 0
    # Another user from the same address is not affected.
    assert api.client("bob").get("/tables").status_code == 200


def test_processes_share_the_count_of_failed_logins_and_a_success_clears_it(api):
    # Two limiters on one database, as two worker processes (or two API servers) have.
    with ConnectionPool(api.dsn, min_size=1, max_size=2) as pool:
        first, second = (LoginLimiter(pool, "_ingest_api", 2, 60) for _ in range(2))
        key = ("dave\x00", "10.0.0.9")  # NUL: a name text cannot hold, counted all the same
        first.failed(key)
        assert second.retry_after(key) == 0
        second.failed(key)
        assert 55 < first.retry_after(key) <= 60
        assert second.retry_after(("dave\x00", "10.0.0.10")) == 0  # another address
        first.succeeded(key)
        assert second.retry_after(key) == 0


def test_no_write_permission_is_forbidden_and_nothing_is_stored(api):
    response = api.client("bob").post(HIRES, json=[{"name": "bob-was-here"}])
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "user 'bob' may not write 'hired_employees': an admin grants it with "
        "`ingest-platform api user grant bob hired_employees`"
    )
    assert hires_named(api, "bob-was-here") == []


def test_grant_lets_a_user_write_another_table_with_the_same_password(api):
    PASSWORDS["frank"] = "frank-password-5"
    add = cli(
        api.env, "api", "user", "add", "frank", "--table", "jobs", "--password-stdin",
        stdin=PASSWORDS["frank"] + "\n",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    client, records = api.client("frank"), [{"id": 950, "department": "granted"}]
    assert client.post("/tables/departments/records", json=records).status_code == 403
    done = cli(api.env, "api", "user", "grant", "frank", "departments")
    assert done.returncode == 0, done.stderr
    assert client.post("/tables/departments/records", json=records).status_code == 201
    assert api.client("frank").get("/tables").status_code == 200  # the password still works
    assert api.query("SELECT tables FROM _ingest_api.users WHERE name = 'frank'") == [
        (["departments", "jobs"],)
    ]
    nobody = cli(api.env, "api", "user", "grant", "nobody", "jobs")
    assert nobody.returncode == 1 and "No API user 'nobody'" in nobody.stderr


def test_unknown_table(api):
    response = api.client().post("/tables/salaries/records", json=[{"x": 1}])
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no table 'salaries' in this API; tables: ")


@pytest.mark.parametrize(
    "path, bad, field, reason",
    [
        (HIRES, {"name": "bad-unknown", "salary": 10}, "salary", "unknown field 'salary'"),
        (HIRES, {"name": "bad-id", "id": 7}, "id", "numbered by the server"),
        (HIRES, {"name": "bad-type", "job_id": "three"}, "job_id", "valid integer"),
        (HIRES, {"name": "bad-range", "job_id": 2**31}, "job_id", "less than or equal"),
        (HIRES, {"name": "bad-date", "datetime": "yesterday"}, "datetime", "valid datetime"),
        (HIRES, {"name": "x" * 256}, "name", "at most 255 characters"),
        (HIRES, {"name": "bad-nul\u0000"}, "name", "NUL character"),
        (HIRES, {"name": "bad-fk", "department_id": 999}, "department_id",
         "foreign key hired_employees_department_id_fkey: no row in hr.departments with id = 999"),
        (HIRES, {"name": "bad-fk2", "job_id": 901}, "job_id", "no row in hr.jobs with id = 901"),
        (HIRES, ["bad-not-object"], None, "must be a JSON object"),
        ("/tables/departments/records", {"id": 77, "department": None}, "department",
         "must not be null (NOT NULL)"),
        ("/tables/departments/records", {"id": 78}, "department", "is required"),
        ("/tables/departments/records", {"id": 1, "department": "bad-dup"}, "id",
         "unique key departments_pkey: a row of the table has id = 1"),
    ],
    ids=["unknown-field", "server-id", "wrong-type", "out-of-range", "bad-datetime", "too-long",
         "nul", "fk-department", "fk-job", "not-an-object", "null-not-null", "missing-required",
         "duplicate-unique"],
)  # fmt: skip
def test_bad_record_is_rejected_by_index_and_field_and_the_good_one_kept(
    api, path, bad, field, reason
):
    number = next(GOOD_IDS)
    good_name = f"good-beside-{field}-{number}"
    good = {"name": good_name} if path == HIRES else {"id": number, "department": good_name}
    client = api.client()
    response = client.post(path, json=[good, bad])
    assert response.status_code == 207, response.text
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0]
    [rejected] = body["rejected"]
    assert rejected["index"] == 1 and rejected["field"] == field
    assert rejected["reason"].startswith(f"record 1, field {field}: " if field else "record 1 ")
    assert reason in rejected["reason"]
    # The good record is stored, the bad one is not; the reject is logged as sent.
    table = "hired_employees" if path == HIRES else "departments"
    column = "name" if path == HIRES else "department"
    stored = api.query(f"SELECT {column} FROM hr.{table} WHERE {column} LIKE %s", ("bad-%",))
    assert stored == []
    assert api.query(f"SELECT count(*) FROM hr.{table} WHERE {column} = %s", (good_name,)) == [(1,)]
    [(index, record, logged_field, logged_reason)] = rejects_of(api, body["request_id"])
    assert (index, logged_field, logged_reason) == (1, field, rejected["reason"])
    # As sent; U+0000, which jsonb cannot hold, is logged as U+FFFD.
    assert record == json.loads(json.dumps(bad).replace("\\u0000", "\\ufffd"))


def test_duplicate_within_the_batch_keeps_the_first(api):
    response = api.client().post(
        "/tables/departments/records",
        json=[{"id": 901, "department": "first"}, {"id": 901, "department": "second"}],
    )
    assert response.status_code == 207
    assert "record 0 of this batch has id = 901" in response.json()["rejected"][0]["reason"]
    assert api.query("SELECT department FROM hr.departments WHERE id = 901") == [("first",)]


def test_atomic_batch_with_one_bad_record_stores_nothing(api):
    records = [{"name": "atomic-good"}, {"name": "atomic-bad", "department_id": 999}]
    response = api.client().post(HIRES + "?atomic=true", json=records)
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == [] and body["rejected"][0]["index"] == 1
    assert hires_named(api, "atomic-good") == [] and hires_named(api, "atomic-bad") == []
    assert len(rejects_of(api, body["request_id"])) == 1


def test_all_records_rejected_is_422(api):
    response = api.client().post(HIRES, json=[{"name": 1}, {"nope": True}])
    assert response.status_code == 422
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]


def test_quotes_and_sql_in_strings_are_stored_verbatim(api):
    names = [
        "Robert'); DROP TABLE hr.hired_employees;--",
        'say "hi" \\ back\\slash',
        "$$; SELECT pg_sleep(10); $$",
        "Øst 🚀 ' OR '1'='1",
    ]
    response = api.client().post(HIRES, json=[{"name": n} for n in names])
    assert response.status_code == 201, response.text
    ids = [a["id"] for a in response.json()["accepted"]]
    stored = api.query("SELECT name FROM hr.hired_employees WHERE id = ANY(%s) ORDER BY id", (ids,))
    assert [r[0] for r in stored] == names


def test_1001_records_is_413_naming_the_limit(api):
    count = api.query("SELECT count(*) FROM hr.hired_employees")
    response = api.client().post(HIRES, json=[{"name": "too-many"}] * 1001)
    assert response.status_code == 413
    assert response.json()["detail"] == "1001 records: at most 1000 per request; split the batch"
    assert api.query("SELECT count(*) FROM hr.hired_employees") == count


@pytest.mark.parametrize(
    "content, status, message",
    [
        (b"[]", 422, "the array is empty: send 1 to 1000 records"),
        (b"", 422, "the body is empty"),
        (b'{"name": "x"}', 422, "must be a JSON array"),
        (b'[{"name": "malformed"', 400, "the body is not valid JSON: Expecting"),
        (b'[{"name": "x",}]', 400, "line 1 column 15"),
        (b"\xff\xfe[", 400, "not UTF-8 JSON"),
        (b"[" * 100_000, 400, "nested too deeply"),
    ],
    ids=["empty-array", "empty-body", "object", "truncated", "trailing-comma", "not-utf8", "deep"],
)
def test_bad_bodies(api, content, status, message):
    response = api.client().post(
        HIRES, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert hires_named(api, "malformed") == []


def test_50_mb_body_is_refused_before_it_is_read(api):
    """Content-Length says 50 MB: 413 at once (sent over a raw socket that stops after the
    headers, so the answer cannot come from reading the body)."""
    host, port = api.url.removeprefix("http://").split(":")
    token = api.client().headers["Authorization"]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {HIRES} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n["
            ).encode()
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            answer += chunk
        answer_text = answer.decode()
    assert answer_text.startswith("HTTP/1.1 413 ")
    assert "the body is larger than 2 MB: send smaller batches" in answer_text


def test_chunked_body_over_the_limit_is_refused(api):
    def chunks():
        yield b'[{"name": "chunked"}'
        for _ in range(50):
            yield b', {"name": "chunked"}' * 5000  # about 100 KB each: 5 MB in all

        yield b"]"

    response = api.client().post(
        HIRES, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than 2 MB" in response.json()["detail"]
    assert hires_named(api, "chunked") == []


def test_openapi_documents_the_generated_models(api):
    schema = api.client(None).get("/openapi.json").json()
    body = schema["paths"][HIRES]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["maxItems"] == 1000 and body["minItems"] == 1
    record = body["items"]
    assert record["additionalProperties"] is False
    assert set(record["properties"]) == {"name", "datetime", "department_id", "job_id"}
    assert "DEFAULT now()" in record["properties"]["datetime"]["description"]
    departments = schema["paths"]["/tables/departments/records"]["post"]["requestBody"]
    items = departments["content"]["application/json"]["schema"]["items"]
    assert set(items["required"]) == {"id", "department"}


def test_no_password_hash_or_token_in_the_log_or_the_users_listing(api):
    client = api.client()  # logs in
    token = client.headers["Authorization"].removeprefix("Bearer ")
    client.post(HIRES, json=[{"name": "log-check", "job_id": "bad"}])
    [(hash_,)] = api.query("SELECT password_hash FROM _ingest_api.users WHERE name = 'alice'")
    assert hash_.startswith("$argon2id$")
    listing = cli(api.env, "api", "user", "list")
    assert listing.returncode == 0 and "alice\t*" in listing.stdout
    text = api.log.read_text() + listing.stdout + listing.stderr
    for secret in (PASSWORDS["alice"], hash_, token, SECRET):
        assert secret not in text
    assert "POST /token" in api.log.read_text()  # the log is the server's, and it is written


def test_removed_user_cannot_write_with_an_old_token(api):
    add = cli(
        api.env, "api", "user", "add", "dave", "--table", "jobs", "--password-stdin",
        stdin="dave-password-4\n",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    PASSWORDS["dave"] = "dave-password-4"
    client = api.client("dave")
    assert cli(api.env, "api", "user", "remove", "dave").returncode == 0
    response = client.post("/tables/jobs/records", json=[{"id": 555, "job": "ghost"}])
    assert response.status_code == 401 and "no longer exists" in response.json()["detail"]
    assert api.query("SELECT * FROM hr.jobs WHERE id = 555") == []


def test_cli_refuses_a_short_password_and_a_missing_secret(api):
    short = cli(api.env, "api", "user", "add", "eve", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "shorter than 8 characters" in short.stderr
    env = {k: v for k, v in api.env.items() if k != "INGEST_API_SECRET"}
    serve = cli(env, "api", "--port", "1")
    assert serve.returncode == 1
    assert "INGEST_API_SECRET is not set" in serve.stderr
    no_workers = cli(api.env, "api", "--port", "1", "--workers", "0")
    assert no_workers.returncode == 1
    assert "--workers 0: give 1 or more server processes." in no_workers.stderr
    assert "Traceback" not in no_workers.stderr
    unknown = cli(api.env, "api", "user", "add", "eve", "--table", "salaries", "--password-stdin",
                  stdin="long-enough-1\n")  # fmt: skip
    assert unknown.returncode == 1 and "Unknown table(s) salaries" in unknown.stderr


def test_concurrent_batches_get_unique_gap_free_ids(api):
    def post(number: int) -> list[int]:
        records = [{"name": f"concurrent-{number}-{i}"} for i in range(200)]
        response = api.client().post(HIRES, json=records)
        assert response.status_code == 201, response.text
        return [a["id"] for a in response.json()["accepted"]]

    with ThreadPoolExecutor(6) as pool:
        batches = list(pool.map(post, range(6)))
    for ids in batches:
        assert ids == list(range(ids[0], ids[0] + 200))
    every = [i for ids in batches for i in ids]
    assert len(set(every)) == len(every) == 1200
    stored = api.query(
        "SELECT count(*) FROM hr.hired_employees WHERE id = ANY(%s) AND name LIKE 'concurrent-%%'",
        (every,),
    )
    assert stored == [(1200,)]


def test_dev_starts_the_api_only_with_a_secret(api):
    lines: list[str] = []
    env = {k: v for k, v in api.env.items() if k != "INGEST_API_SECRET"}
    assert start_api_beside_dagster(env, lines.append) is None
    assert lines == ["REST API not started: set INGEST_API_SECRET to start it with `dev`."]
    child = start_api_beside_dagster(api.env, lines.append)
    assert child is not None
    try:
        deadline = time.monotonic() + 60
        listening: list = []
        while not listening and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            connections = psutil.Process(child.pid).net_connections("tcp")
            listening = [c for c in connections if c.status == psutil.CONN_LISTEN]
        assert listening, "the API started by dev does not listen"
        url = f"http://127.0.0.1:{listening[0].laddr.port}"
        # Up when it answers (uvicorn listens before the app's startup has finished).
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/tables", timeout=5).status_code == 401
    finally:
        child.terminate()
        child.wait(10)


def test_a_missing_table_or_a_role_without_rights_stops_the_start(api, tmp_path):
    config = tmp_path / "api.toml"
    config.write_text('[[tables]]\ntable = "hr.salaries"\n')
    missing = cli({**api.env, "INGEST_API_CONFIG": str(config)}, "api", "--port", "1")
    assert missing.returncode == 1
    assert "API table hr.salaries does not exist: create it" in missing.stderr
    api.query("DROP ROLE IF EXISTS api_nobody")
    api.query("CREATE ROLE api_nobody LOGIN")
    try:
        dsn = api.dsn + " user=api_nobody"
        refused = cli({**api.env, "INGEST_PG_DSN": dsn}, "api", "--port", "1")
        assert refused.returncode == 1
        assert "The API cannot prepare its tables: permission denied" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        api.query("DROP ROLE api_nobody")


def test_connections_the_server_closed_are_replaced(api):
    client = api.client()
    # Six requests held behind a lock grow the pool to six connections, all of which the
    # server then closes (as after earlier tests' concurrent requests, or a restart).
    with psycopg.connect(api.dsn) as blocker, ThreadPoolExecutor(6) as threads:
        blocker.execute("LOCK hr.hired_employees IN EXCLUSIVE MODE")
        posts = [
            threads.submit(api.client().post, HIRES, json=[{"name": f"before-terminate-{i}"}])
            for i in range(6)
        ]
        while len(api.query("SELECT 1 FROM pg_locks WHERE NOT granted")) < 6:
            time.sleep(0.05)
        blocker.commit()
        assert {post.result().status_code for post in posts} == {201}
    [(killed,)] = api.query(
        # The timeout waits until each backend has exited: without it, a backend still
        # exiting passes the pool's check and fails the request (503), a race of the test.
        "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert killed >= 6  # the API's pooled connections
    response = client.post(HIRES, json=[{"name": "after-terminate"}])
    assert response.status_code == 201, response.text
    assert len(hires_named(api, "after-terminate")) == 1
