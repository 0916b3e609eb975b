"""The admin's ETL log pages on a long log: how long a list page takes on 10 million rows, against
the ``count(*)`` a stock SQLAdmin list page would run over the whole table.

    .venv/bin/python benchmarks/admin.py [--rows 10000000] [--dsn DSN]

A database made for the run (dropped after) gets the HR example (the API's tables) and
``"_ingest_meta".etl_log`` filled with `--rows` rows: 8 kinds, 40 tables, one rare table with 10
rows, one row every 3 s up to now. After VACUUM (ANALYZE), the API app (in process, Starlette's test
client: the same app uvicorn serves, minus the socket) signs in and loads each page 3 times;
the table shows the median, whether the total was exact or PostgreSQL's estimate, and the total.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, say_load

from ingest_platform.api import auth, store
from ingest_platform.api.app import create_app
from ingest_platform.api.config import HR_TABLES, ApiConfig
from ingest_platform.migration.demo_hr import create_hr_source
from ingest_platform.postgres import etl_log
from ingest_platform.postgres.connection import ensure_database, with_database

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SECRET = "bench-secret-" + "b" * 60
PASSWORD = "bench-password-1"
FILL = """
INSERT INTO "_ingest_meta".etl_log (kind, table_name, rows, started, finished)
SELECT (ARRAY['dump_version','cdc_merge','cdc_resync','bigquery_mirror','ingest','api_batch',
              'migration','csv_import'])[i %% 8 + 1],
       CASE WHEN i %% (%(rows)s / 10) = 0 THEN 'app.rare' ELSE 'app.t' || (i %% 40) END,
       i %% 1000, t, t
FROM generate_series(1, %(rows)s) i, LATERAL (SELECT now() - (%(rows)s - i) * interval '3 s' AS t) w
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    options = parser.parse_args()
    database = f"bench_admin_{uuid.uuid4().hex[:8]}"
    ensure_database(options.dsn, database)
    dsn = with_database(options.dsn, database)
    try:
        create_hr_source(dsn, 100)
        with psycopg.connect(dsn) as conn:
            etl_log.ensure_table(conn)
            store.ensure_tables(conn, "_ingest_api")
            store.add_user(conn, "_ingest_api", "admin", auth.hash_password(PASSWORD), ["*"])
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL, {"rows": options.rows})
            # As autovacuum leaves an insert-only table: statistics and the visibility map.
            conn.execute('VACUUM (ANALYZE) "_ingest_meta".etl_log')
        print(f"filled {options.rows:,} log rows in {time.perf_counter() - started:.0f} s")
        say_load("before")
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute('SELECT count(*) FROM "_ingest_meta".etl_log')
            full_count = time.perf_counter() - started
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        pages = [
            ("newest first", ""),
            ("page 2", "?page=2"),
            ("table app.t7 (1/40)", "?table_name=app.t7"),
            ("table app.rare (10 rows)", "?table_name=app.rare"),
            ("kind cdc_merge (1/8)", "?kind=cdc_merge"),
            ("finished in the last hour", f"?finished_op=greater_than&finished={hour_ago}"),
        ]
        lines = []
        app = create_app(ApiConfig(tables=HR_TABLES), dsn, SECRET)
        with TestClient(app) as client:
            login = client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
            assert "/admin/login" not in str(login.url), "sign-in failed"
            for label, query in pages:
                times, text = [], ""
                for _ in range(3):
                    started = time.perf_counter()
                    response = client.get("/admin/etl-log/list" + query)
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text[:500]
                    text = response.text
                total = text.split(" items")[0].rsplit(" of ", 1)[-1].strip()
                estimated = "PostgreSQL's estimate" in text
                lines.append(
                    [
                        label,
                        f"{statistics.median(times) * 1000:,.0f}",
                        "estimate" if estimated else "exact",
                        f"{int(total):,}" if total.isdigit() else total,
                    ]
                )
        say_load("after")
        print()
        print_table(["ETL log page", "ms (median of 3)", "total is", "total"], lines, {0, 2})
        print(
            f"\nFor comparison, SELECT count(*) over the {options.rows:,}-row log (what a stock "
            f"SQLAdmin list page runs on every view): {full_count * 1000:,.0f} ms"
        )
    finally:
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
