"""Fixtures: the real dumps zipped once per session, and a helper to build small dumps."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest

REALDATA = Path("/work/shared/realdata")
MSSQL_DIR = REALDATA / "adventureworks_2025_mssql_bcp"
MYSQL_DIR = REALDATA / "ecoli_core_mysql_tab"

warnings.filterwarnings("ignore", message=".*unsupported syntax.*")


def zip_directory(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(source.iterdir()):
            archive.write(file, file.name)
    return target


def make_zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="session")
def mssql_zip(tmp_path_factory) -> Path:
    if not MSSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    return zip_directory(MSSQL_DIR, tmp_path_factory.mktemp("dumps") / "adventureworks_2025.zip")


@pytest.fixture(scope="session")
def mysql_zip(tmp_path_factory) -> Path:
    if not MYSQL_DIR.is_dir():
        pytest.skip("realdata not available")
    return zip_directory(MYSQL_DIR, tmp_path_factory.mktemp("dumps") / "ecoli_core_1.0.zip")


@pytest.fixture(scope="session")
def mssql_dump(mssql_zip):
    from ingest_platform.dumps import open_dump

    return open_dump(mssql_zip, dialect="mssql")


@pytest.fixture(scope="session")
def mysql_dump(mysql_zip):
    from ingest_platform.dumps import open_dump

    return open_dump(mysql_zip, dialect="mysql")
