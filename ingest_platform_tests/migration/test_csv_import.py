"""Historical CSV import: staging, set-based checks, fail/quarantine, idempotence, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_platform.errors import FormatError
from ingest_platform.local.cli import main
from ingest_platform.migration import demo_hr
from ingest_platform.migration.csv_import import CsvOptions, RejectedRows, import_csv
from ingest_platform.postgres.connection import connect, scalar

QUARANTINE = CsvOptions(on_reject="quarantine")
FK = "hired_employees_"


@pytest.fixture
def hr(pg_dsn) -> str:
    demo_hr.create_hr_source(pg_dsn, 100)
    return pg_dsn


def rows(dsn: str) -> int:
    with connect(dsn) as conn:
        return scalar(conn, "SELECT count(*) FROM hr.hired_employees")


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_demo_files_fail_listing_every_reject_then_quarantine_then_skip(hr, tmp_path):
    files = demo_hr.write_hr_csvs(tmp_path, 900, 101)
    utf8 = [f for f in files if "latin1" not in f.name]
    with pytest.raises(RejectedRows) as error:
        import_csv(hr, "hr", "hired_employees", utf8)
    rejects = error.value.result.rejects
    assert rejects and all("foreign key" in r.reason for r in rejects)
    message = str(error.value)
    assert message.count("\n") == len(rejects)  # every rejected row, one line each
    first = rejects[0]
    assert f"{first.file}, line {first.line}: foreign key hired_employees_" in message
    assert rows(hr) == 100  # nothing loaded
    result = import_csv(hr, "hr", "hired_employees", utf8, QUARANTINE)
    assert result.loaded + len(rejects) == 600
    latin1 = [f for f in files if "latin1" in f.name]
    import_csv(hr, "hr", "hired_employees", latin1, CsvOptions("latin-1", on_reject="quarantine"))
    with connect(hr) as conn:
        assert scalar(conn, "SELECT count(*) FROM hr.hired_employees WHERE name LIKE 'Bj_rn %'")
        assert scalar(conn, "SELECT count(*) FROM hr.hired_employees WHERE name LIKE 'Björn %'")
        assert scalar(conn, "SELECT count(*) FROM ingest_import.rejects") >= len(rejects)
    before = rows(hr)
    again = import_csv(hr, "hr", "hired_employees", files, QUARANTINE)
    assert again.skipped_files == [str(f) for f in files] and rows(hr) == before


def test_each_kind_of_bad_row_is_named(hr, tmp_path):
    bad = write(
        tmp_path / "bad.csv",
        "1001,Ann,2021-11-07T02:48:42Z,1,1\r\n"
        "1002,Bob,2021-13-45T02:48:42Z,1,1\r\n"  # bad date
        "1003,Cy,2021-11-07T02:48:42Z,1\r\n"  # wrong column count
        "1001,Dup,2021-11-07T02:48:42Z,1,1\r\n"  # duplicate key within the file
        "50,Old,2021-11-07T02:48:42Z,1,1\r\n"  # key already in the table
        "1004,Eve,,99,1\r\n"  # missing department; empty datetime is NULL
        ",Nil,,1,1\r\n",  # NULL in the primary key
    )
    with pytest.raises(RejectedRows) as error:
        import_csv(hr, "hr", "hired_employees", [bad])
    found = {r.line: r.reason for r in error.value.result.rejects}
    assert found[2].startswith("column datetime: not a valid timestamp")
    assert found[3] == "4 fields, the table has 5 columns"
    assert found[4] == "key hired_employees_pkey: repeats an earlier line"
    assert found[5] == "key hired_employees_pkey: already in hr.hired_employees"
    assert found[6].startswith("foreign key hired_employees_department_id_fkey: no hr.departments")
    assert found[7] == "column id: empty, but NOT NULL"
    assert 1 not in found and rows(hr) == 100
    result = import_csv(hr, "hr", "hired_employees", [bad], QUARANTINE)
    assert result.loaded == 1 and len(result.rejects) == 6
    with connect(hr) as conn:
        raw = scalar(conn, "SELECT raw FROM ingest_import.rejects WHERE line = 3")
    assert raw == "1003,Cy,2021-11-07T02:48:42Z,1"


def test_max_rejects_loads_nothing(hr, tmp_path):
    bad = write(tmp_path / "two.csv", "1001,A,,99,1\n1002,B,,98,1\n1003,C,,1,1\n")
    with pytest.raises(RejectedRows, match="2 rows rejected, more than --max-rejects 1"):
        import_csv(hr, "hr", "hired_employees", [bad], CsvOptions(on_reject="quarantine",
                   max_rejects=1))  # fmt: skip
    assert rows(hr) == 100


def test_bad_encoding_is_rejected_by_line(hr, tmp_path):
    latin = write(tmp_path / "latin.csv", "1001,Bj\xf6rn,,1,1\n1002,Ann,,1,1\n".encode("latin-1"))
    with pytest.raises(RejectedRows, match=r"latin.csv, line 1: bytes that are not utf-8"):
        import_csv(hr, "hr", "hired_employees", [latin])
    assert rows(hr) == 100


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty"), (b"PK\x03\x04\x00\x00binary", "not a CSV text file")],
)
def test_empty_or_binary_file_is_refused(hr, tmp_path, content, message):
    path = write(tmp_path / "odd.csv", content)
    with pytest.raises(FormatError, match=f"odd.csv: {message}"):
        import_csv(hr, "hr", "hired_employees", [path])
    assert rows(hr) == 100


def test_cli_import_csv_with_header(hr, tmp_path, capsys):
    path = write(tmp_path / "h.csv", "id;name;datetime;department_id;job_id\n1001;Zoë;;2;3\n")
    args = ["import-csv", "hr.hired_employees", str(path), "--target", hr, "--delimiter", ";"]
    assert main([*args, "--header"]) == 0
    assert "1 rows loaded from 1 file(s), 0 rejected" in capsys.readouterr().out
    assert main([*args, "--header"]) == 0
    assert "imported before (same bytes), skipped" in capsys.readouterr().out
    assert main(["import-csv", "hr.nope", str(path), "--target", hr]) == 1
    assert "Table hr.nope does not exist" in capsys.readouterr().err


def test_fast_and_full_checks_agree(hr, tmp_path):
    """Missing parents only: the fast path (one scan, one insert). A bad date as well: the full
    per-check marking. Both reject the same rows for the same reasons, and a row repeating the
    key of a row rejected for its parent loads (it repeats nothing loaded)."""
    common = "3001,Orphan,,99,1\n3001,Kept,,1,1\n3002,Also,,1,98\n3003,Fine,,2,2\n"
    fast = import_csv(hr, "hr", "hired_employees", [write(tmp_path / "f.csv", common)], QUARANTINE)
    full_file = write(tmp_path / "g.csv", common.replace("300", "400") + "4004,D,2021-02-30,1,1\n")
    full = import_csv(hr, "hr", "hired_employees", [full_file], QUARANTINE)
    assert (fast.checks, full.checks) == ("fast", "full")
    assert (fast.loaded, full.loaded) == (2, 2)
    found = [(r.line, r.reason, r.value) for r in fast.rejects]
    assert found == [
        (1, f"foreign key {FK}department_id_fkey: no hr.departments row with id =", "99"),
        (3, f"foreign key {FK}job_id_fkey: no hr.jobs row with id =", "98"),
    ]
    assert [(r.line, r.reason, r.value) for r in full.rejects][:2] == found
    assert full.rejects[2].line == 5 and full.rejects[2].reason.startswith("column datetime")
    assert fast.rows_by_file == {str(tmp_path / "f.csv"): 2}
    with connect(hr) as conn:
        names = conn.execute(
            "SELECT id, name FROM hr.hired_employees WHERE id > 3000 ORDER BY id"
        ).fetchall()
        recorded = conn.execute(
            "SELECT file, rows, rejects FROM ingest_import.files ORDER BY file"
        ).fetchall()
    assert names == [(3001, "Kept"), (3003, "Fine"), (4001, "Kept"), (4003, "Fine")]
    assert recorded == [(str(tmp_path / "f.csv"), 2, 2), (str(full_file), 2, 3)]
