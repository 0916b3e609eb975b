"""The admin at /admin in headless Chromium (Debian's package, driven by Playwright): the login,
the ETL log filtered by a table, the rejects, the users without hashes, the table configuration;
over plain HTTP, no page without a session; and in process, that a list page over more rows than
`admin_exact_count` shows an estimate and never counts more than the limit."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from ingest_platform.api.app import create_app
from ingest_platform.api.config import parse_api_config
from ingest_platform_tests.api.conftest import CONFIG, PASSWORDS, SECRET, Api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(
    os.environ.get("INGEST_TEST_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / ".ingest" / "screenshots"
)


def test_admin_pages_need_a_session(api: Api):
    for path in (
        "/admin/", "/admin/rejects/list", "/admin/users/list", "/admin/etl-log/list",
        "/admin/table-config",
    ):  # fmt: skip
        response = httpx.get(api.url + path, follow_redirects=False, timeout=10)
        assert response.status_code in (302, 303, 307), path
        assert "/admin/login" in response.headers["location"]


FILLED = 3000  # log rows of one fake table: more than the limit of the test config
LIMIT = 1000


@pytest.fixture(scope="module")
def long_log(api: Api) -> None:
    api.query(
        'INSERT INTO "_ingest_meta".etl_log (kind, table_name, rows, started)'
        " SELECT 'test_fill', 'test.filled', i, now() FROM generate_series(1, %s) i",
        (FILLED,),
    )
    api.query('ANALYZE "_ingest_meta".etl_log')


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("no Chromium here (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def test_admin_in_chromium(api: Api, browser, long_log):
    client = api.client()
    rejected = client.post(
        "/tables/hired_employees/records",
        json=[{"name": "admin-shown", "department_id": 999}],
    )
    assert rejected.status_code == 422
    stored = client.post(
        "/tables/departments/records", json=[{"id": 7001, "department": "Admin shown"}]
    )
    assert stored.status_code == 201, stored.text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(api.url + "/admin/rejects/list")
    assert "/admin/login" in page.url
    # bob may write one table only: not an admin.
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", PASSWORDS["bob"])
    page.click("button[type=submit]")
    assert "/admin/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.goto(api.url + "/admin/rejects/list")
    body = page.inner_text("body")
    assert "no row in hr.departments with id = 999" in body
    assert "hired_employees" in body and "department_id" in body
    page.screenshot(path=str(SCREENSHOTS / "admin_rejects.png"), full_page=True)
    page.goto(api.url + "/admin/users/list")
    body = page.inner_text("body")
    assert "alice" in body and "bob" in body
    assert "argon2" not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "admin_users.png"), full_page=True)
    page.goto(api.url + "/admin/requests/list")
    assert "hired_employees" in page.inner_text("body")
    # The ETL log: more rows than the config's admin_exact_count, so the total is an estimate;
    # then filtered by a table from the filter's choices.
    page.goto(api.url + "/admin/etl-log/list")
    assert "PostgreSQL's estimate" in page.inner_text("#count-estimate")
    page.screenshot(path=str(SCREENSHOTS / "admin_etl_log_estimate.png"), full_page=True)
    page.click('#filter-sidebar a:text-is("hr.departments")')
    assert "table_name=hr.departments" in page.url
    rows = page.inner_text("table")
    assert "api_batch" in rows and "hr.departments" in rows
    assert "hr.hired_employees" not in rows and "test.filled" not in rows
    assert stored.json()["request_id"] in rows  # the batch's row: version = request id
    assert not page.query_selector("#count-estimate")
    page.screenshot(path=str(SCREENSHOTS / "admin_etl_log.png"), full_page=True)
    page.goto(api.url + "/admin/table-config")
    tables = page.inner_text("#tables")
    assert "POST /tables/hired_employees/records" in tables and "datetime = now()" in tables
    permissions = page.inner_text("#permissions")
    bob = next(line for line in permissions.splitlines() if line.startswith("bob"))
    assert bob.split("\t")[1:4] == ["may write", "no", "no"], bob
    page.screenshot(path=str(SCREENSHOTS / "admin_table_config.png"), full_page=True)


def test_a_long_log_list_is_estimated_not_counted(api: Api, long_log):
    statements: list[tuple[str, dict]] = []

    def seen(conn, cursor, statement, parameters, *args):
        statements.append((statement, dict(parameters or {})))

    event.listen(Engine, "before_cursor_execute", seen)  # every engine: the admin's own
    config = parse_api_config(CONFIG)
    assert config.admin_exact_count == LIMIT
    try:
        with TestClient(create_app(config, api.dsn, SECRET)) as client:
            login = client.post(
                "/admin/login", data={"username": "alice", "password": PASSWORDS["alice"]}
            )
            assert login.status_code == 200 and "/admin/login" not in str(login.url)
            since = "?finished_op=greater_than&finished=2000-01-01T00:00"
            for query in ("", "?table_name=test.filled", "?kind=test_fill", since):
                page = client.get("/admin/etl-log/list" + query)
                assert page.status_code == 200, page.text
                note = re.search(r"About ([\d,]+) rows: PostgreSQL's estimate", page.text)
                assert note, query
                assert int(note.group(1).replace(",", "")) > LIMIT
                assert "More than\n    1,000 match" in page.text
            for query in ("?kind=no_such_kind", "?finished_op=less_than&finished=2000-01-01"):
                exact = client.get("/admin/etl-log/list" + query)
                assert exact.status_code == 200
                assert "PostgreSQL's estimate" not in exact.text
                assert "of 0 items" in exact.text
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    counts = [(s, p) for s, p in statements if "count(" in s.lower()]
    assert counts, statements
    for statement, parameters in counts:  # each reads at most LIMIT + 1 rows of its subquery
        assert "LIMIT" in statement, statement
        assert LIMIT + 1 in parameters.values() or f"LIMIT {LIMIT + 1}" in statement, statement
    assert not [s for s, _ in statements if "DISTINCT" in s.upper()]
