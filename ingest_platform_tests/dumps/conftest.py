"""Fixtures: the real dumps opened once per session (the ZIPs come from the top conftest)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mssql_dump(mssql_zip):
    from ingest_platform.dumps import open_dump

    return open_dump(mssql_zip, dialect="mssql")


@pytest.fixture(scope="session")
def mysql_dump(mysql_zip):
    from ingest_platform.dumps import open_dump

    return open_dump(mysql_zip, dialect="mysql")
