"""The worked example of a migration: a small HR database and years of historical CSV exports.

``create_hr_source(dsn, rows)`` makes schema ``hr`` in the database of `dsn`: ``departments``,
``jobs``, ``hired_employees`` (foreign keys to both), a sequence that numbers new hires, an index,
a plpgsql function, a view of hires per year and month, comments and a grant to the role
``hr_reader`` (created when missing). ``write_hr_csvs(directory, rows)`` writes hires that are not
in the database as header-less CSV files ``id,name,datetime,department_id,job_id``: one UTF-8
with LF, one Latin-1, one with CRLF line ends; some fields are empty and about 1 % of the rows
name a department or job that does not exist (ids 900+).

Seeded: the same call makes the same rows. Rows are streamed (COPY and file writes in batches),
so 2,000,000 rows need little memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from psycopg import sql

from ingest_platform.postgres.connection import connect

SCHEMA = "hr"
READER_ROLE = "hr_reader"
DEPARTMENTS = [
    "Accounting", "Business Development", "Engineering", "Human Resources", "Legal",
    "Marketing", "Product Management", "Research and Development", "Sales", "Services",
    "Support", "Training",
]  # fmt: skip
JOB_WORDS = ["Analyst", "Engineer", "Manager", "Assistant", "Developer", "Designer", "Technician"]
JOB_LEVELS = ["Junior", "", "Senior", "Lead", "Principal"]
FIRST = ["Ana", "Björn", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hiroko", "Inès", "José"]
LAST = ["Smith", "García", "Müller", "Rossi", "Nowak", "Dubois", "Tanaka", "Silva", "Kim", "Øst"]
BATCH = 10_000
START = datetime(2015, 1, 1)
SPAN_SECONDS = 7 * 365 * 24 * 3600

DDL = """
CREATE SCHEMA hr;
COMMENT ON SCHEMA hr IS 'Human resources (demo-hr)';
CREATE TABLE hr.departments (id int PRIMARY KEY, department varchar(255) NOT NULL);
CREATE TABLE hr.jobs (id int PRIMARY KEY, job varchar(255) NOT NULL);
CREATE SEQUENCE hr.hire_id_seq;
CREATE TABLE hr.hired_employees (
    id int PRIMARY KEY DEFAULT nextval('hr.hire_id_seq'),
    name varchar(255),
    datetime timestamp,
    department_id int REFERENCES hr.departments (id),
    job_id int REFERENCES hr.jobs (id)
);
ALTER SEQUENCE hr.hire_id_seq OWNED BY hr.hired_employees.id;
CREATE INDEX hired_employees_datetime ON hr.hired_employees (datetime);
COMMENT ON TABLE hr.hired_employees IS 'One row per hire';
COMMENT ON COLUMN hr.hired_employees.datetime IS 'When the hire was recorded (UTC)';
CREATE FUNCTION hr.hires_in(year int) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT count(*) FROM hr.hired_employees h
            WHERE h.datetime >= make_date(year, 1, 1) AND h.datetime < make_date(year + 1, 1, 1));
END
$$;
CREATE VIEW hr.hires_per_month AS
    SELECT extract(year FROM datetime)::int AS year, extract(month FROM datetime)::int AS month,
           count(*) AS hires
    FROM hr.hired_employees GROUP BY 1, 2;
"""


def departments() -> list[tuple[int, str]]:
    return list(enumerate(DEPARTMENTS, start=1))


def jobs() -> list[tuple[int, str]]:
    titles = [f"{lv} {w}".strip() for w in JOB_WORDS for lv in JOB_LEVELS]
    return list(enumerate(titles, start=1))


def hires(first_id: int, count: int, seed: int, bad_parents: bool) -> Iterator[tuple]:
    """(id, name or None, datetime or None, department_id or None, job_id or None)."""
    rng = random.Random(seed)
    n_departments, n_jobs = len(DEPARTMENTS), len(jobs())
    for hire_id in range(first_id, first_id + count):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}" if rng.random() > 0.01 else None
        when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        department: int | None = rng.randint(1, n_departments)
        job: int | None = rng.randint(1, n_jobs)
        roll = rng.random()
        if roll < 0.01:
            department = None
        elif roll < 0.02:
            job = None
        elif bad_parents and roll < 0.025:
            department = 900 + rng.randrange(10)  # no such department
        elif bad_parents and roll < 0.03:
            job = 900 + rng.randrange(10)  # no such job
        yield hire_id, name, when if rng.random() > 0.005 else None, department, job


def ensure_reader_role(dsn: str) -> None:
    """The role the demo grants to, created when missing. A role belongs to the server, not to a
    database: two demo databases made at once on one server would both create it, so the check
    and the creation hold a lock."""
    with connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (READER_ROLE,))
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(READER_ROLE)))


def create_hr_source(dsn: str, rows: int, seed: int = 14, replace: bool = False) -> None:
    """Schema ``hr`` with `rows` hires in the database of `dsn` (dropped first if `replace`)."""
    ensure_reader_role(dsn)
    with connect(dsn) as conn:
        if replace:
            conn.execute("DROP SCHEMA IF EXISTS hr CASCADE")
        conn.execute(DDL)
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA hr TO {0}; GRANT SELECT ON hr.hires_per_month TO {0}"
            ).format(sql.Identifier(READER_ROLE))
        )
        with conn.cursor().copy("COPY hr.departments FROM STDIN") as copy:
            for row in departments():
                copy.write_row(row)
        with conn.cursor().copy("COPY hr.jobs FROM STDIN") as copy:
            for row in jobs():
                copy.write_row(row)
        with conn.cursor().copy("COPY hr.hired_employees FROM STDIN") as copy:
            batch: list[str] = []
            for row in hires(1, rows, seed, bad_parents=False):
                batch.append("\t".join(r"\N" if v is None else str(v) for v in row))
                if len(batch) >= BATCH:
                    copy.write("\n".join(batch) + "\n")
                    batch.clear()
            if batch:
                copy.write("\n".join(batch) + "\n")
        conn.execute("SELECT setval('hr.hire_id_seq', %s)", (max(rows, 1),))
        conn.execute("ANALYZE hr.hired_employees")


# (file name, encoding, line end): the historical exports as they came out of the backups.
CSV_FILES = (
    ("hired_employees_2019.csv", "utf-8", "\n"),
    ("hired_employees_2020_latin1.csv", "latin-1", "\n"),
    ("hired_employees_2021_crlf.csv", "utf-8", "\r\n"),
)


def write_hr_csvs(directory: Path, rows: int, first_id: int, seed: int = 41) -> list[Path]:
    """`rows` hires from id `first_id` on, split over the three CSV files."""
    directory.mkdir(parents=True, exist_ok=True)
    written, per_file = [], -(-rows // len(CSV_FILES))
    next_id = first_id
    for number, (name, encoding, newline) in enumerate(CSV_FILES):
        count = min(per_file, first_id + rows - next_id)
        path = directory / name
        with path.open("w", encoding=encoding, newline="") as out:
            batch: list[str] = []
            for hire_id, who, when, department, job in hires(next_id, count, seed + number, True):
                stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""
                batch.append(f"{hire_id},{who or ''},{stamp},{_text(department)},{_text(job)}")
                if len(batch) >= BATCH:
                    out.write(newline.join(batch) + newline)
                    batch.clear()
            if batch:
                out.write(newline.join(batch) + newline)
        next_id += count
        written.append(path)
    return written


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
