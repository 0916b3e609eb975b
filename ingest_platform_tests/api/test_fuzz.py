"""Schemathesis fuzzes every operation of the API's OpenAPI schema (valid and invalid records,
forms, tokens): no answer is a 5xx. Its own module, so its random records land in a database of
their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingest_platform_tests.api.conftest import Api

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.slow
def test_fuzzing_the_openapi_schema_finds_no_server_error(api: Api):
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    token = api.client().headers["Authorization"]
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{api.url}/openapi.json", "-H", f"Authorization: {token}",
         "--checks", "not_a_server_error", "--max-examples", "40", "--no-color"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "generated" in done.stdout
    assert "Internal Server Error" not in api.log.read_text()
