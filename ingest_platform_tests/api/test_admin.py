"""The admin at /admin in headless Chromium (Debian's package, driven by Playwright): the login,
the rejects list, the users list without hashes; and over plain HTTP, no page without a session."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from ingest_platform_tests.api.conftest import PASSWORDS, Api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".ingest" / "screenshots"


def test_admin_pages_need_a_session(api: Api):
    for path in ("/admin/", "/admin/rejects/list", "/admin/users/list"):
        response = httpx.get(api.url + path, follow_redirects=False, timeout=10)
        assert response.status_code in (302, 303, 307), path
        assert "/admin/login" in response.headers["location"]


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("no Chromium here (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def test_admin_in_chromium(api: Api, browser):
    rejected = api.client().post(
        "/tables/hired_employees/records",
        json=[{"name": "admin-shown", "department_id": 999}],
    )
    assert rejected.status_code == 422
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
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
