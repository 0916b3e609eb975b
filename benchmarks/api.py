"""The REST intake API under load: 4 concurrent clients posting 1000-record batches of
`hr.hired_employees` for a fixed time, against a naive endpoint (SQLAlchemy ORM, one INSERT per
record) in the same run, interleaved rounds.

    .venv/bin/python benchmarks/api.py [--seconds 60] [--rounds 2] [--clients 4] [--dsn DSN]

Both servers are uvicorn processes on loopback (one worker each), in front of a database made for
the run with the HR example (100,000 hires) and dropped after. Our API (`ingest-platform api`)
checks the bearer token and the user's permission, validates every record, checks both foreign
keys set-based and writes the batch in one INSERT. The naive endpoint has no auth and no
validation beyond the ORM's; it adds one ORM object per record and flushes each (the insert of a
serial id needs its RETURNING), then commits.

Per method and round: accepted records/s, p50 and p99 request latency, errors; for ours also
whether the ids are unique and how many batches got gap-free ids. Requirement (issue 15):
>= 40,000 records/s with p99 < 250 ms and no errors, on 2 cores with PostgreSQL on the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
from fastapi import FastAPI, Request
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, say_load

from ingest_platform.local.ports import free_port
from ingest_platform.migration.demo_hr import create_hr_source, hires
from ingest_platform.postgres.connection import ensure_database, to_url, with_database

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SECRET = "bench-secret-" + "b" * 60
PASSWORD = "bench-password-1"
BATCH = 1000


@dataclass
class Run:
    method: str
    seconds: float
    accepted: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    gap_free: int = 0
    batches: int = 0
    server_cpu: float = 0.0  # seconds of CPU: the server process, and its PostgreSQL backends
    database_cpu: float = 0.0

    def rate(self) -> float:
        return self.accepted / self.seconds

    def cpu_ms_per_batch(self, seconds: float) -> str:
        return f"{seconds / self.batches * 1000:.1f}" if self.batches else "-"

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0


def batches(count: int) -> list[bytes]:
    """`count` different JSON bodies of BATCH hires (no ids: the server numbers them)."""
    out = []
    for number in range(count):
        rows = hires(1, BATCH, seed=1000 + number, bad_parents=False)
        out.append(
            json.dumps(
                [
                    {"name": n, "datetime": w.isoformat() if w else None,
                     "department_id": d, "job_id": j}
                    for _, n, w, d, j in rows
                ]
            ).encode()
        )  # fmt: skip
    return out


def load(url: str, path: str, headers: dict, bodies: list[bytes], seconds: float, clients: int,
         method: str) -> Run:  # fmt: skip
    run = Run(method, seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            sent = number
            while time.monotonic() < deadline:
                body = bodies[sent % len(bodies)]
                sent += clients
                started = time.perf_counter()
                try:
                    response = http.post(
                        path, content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.HTTPError:
                    with lock:
                        run.errors += 1
                    continue
                took = time.perf_counter() - started
                with lock:
                    run.latencies.append(took)
                    if response.status_code != 201:
                        run.errors += 1
                        continue
                    ids = [a["id"] for a in response.json()["accepted"]]
                    run.accepted += len(ids)
                    run.ids.extend(ids)
                    run.batches += 1
                    run.gap_free += ids == list(range(ids[0], ids[0] + len(ids)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.monotonic() - started
    return run


def cpu_seconds(server: subprocess.Popen, dsn: str) -> tuple[float, float]:
    """CPU used so far by the server's processes and by the backends of the benchmark's database
    (its pooled connections): rates move with the machine's other load, CPU per batch less."""
    process = psutil.Process(server.pid)
    own = sum(
        times.user + times.system
        for times in [process.cpu_times()] + [p.cpu_times() for p in process.children(True)]
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        ]
    database = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:  # a backend gone since the query, or another user's /proc
            continue
        database += times.user + times.system
    return own, database


def wait_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server at {url} exited ({server.returncode})")
        try:
            httpx.get(f"{url}/openapi.json", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not start")


def serve_naive(port: int, dsn: str) -> None:
    """The peer: a FastAPI endpoint that inserts each record through the SQLAlchemy ORM."""
    from datetime import datetime

    import uvicorn
    from sqlalchemy import DateTime, Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class HiredEmployee(Base):
        __tablename__ = "hired_employees"
        __table_args__ = {"schema": "hr"}
        # Not annotated: `datetime` the column would shadow `datetime` the type.
        id = mapped_column(Integer, primary_key=True)
        name = mapped_column(String(255))
        datetime = mapped_column(DateTime)
        department_id = mapped_column(Integer)  # the database checks the foreign keys
        job_id = mapped_column(Integer)

    engine = create_engine(to_url(dsn).replace("postgresql://", "postgresql+psycopg://", 1))
    app = FastAPI()

    @app.post("/records", status_code=201)
    async def records(request: Request):
        payload = await request.json()

        def write():
            accepted = []
            with Session(engine) as session:
                for index, record in enumerate(payload):
                    when = record.get("datetime")
                    row = HiredEmployee(
                        **{**record, "datetime": datetime.fromisoformat(when) if when else None}
                    )
                    session.add(row)
                    session.flush()  # one INSERT ... RETURNING id per record
                    accepted.append({"index": index, "id": row.id})
                session.commit()
            return {"accepted": accepted, "rejected": []}

        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(write)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="our server's processes")
    parser.add_argument("--dsn", default=os.environ.get("INGEST_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--serve-naive", nargs=2, metavar=("PORT", "DSN"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_naive:
        serve_naive(int(options.serve_naive[0]), options.serve_naive[1])
        return 0
    database = f"bench_api_{uuid.uuid4().hex[:8]}"
    ensure_database(options.dsn, database)
    dsn = with_database(options.dsn, database)
    servers: list[subprocess.Popen] = []
    try:
        create_hr_source(dsn, 100_000)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "INGEST_PG_DSN": dsn,
            "INGEST_API_SECRET": SECRET,
        }
        env.pop("INGEST_API_CONFIG", None)
        subprocess.run(
            [sys.executable, "-m", "ingest_platform.local.cli", "api", "user", "add", "bench",
             "--table", "hired_employees", "--password-stdin"],
            input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True,
        )  # fmt: skip
        ours_port, naive_port = free_port(), free_port()
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ingest_platform.local.cli",
                    "api",
                    "--port",
                    str(ours_port),
                    "--workers",
                    str(options.workers),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
        servers.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve-naive", str(naive_port), dsn],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
        ours, naive = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{naive_port}"
        wait_up(ours, servers[0])
        wait_up(naive, servers[1])
        token = httpx.post(f"{ours}/token", data={"username": "bench", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        bodies = batches(16)
        say_load("before")
        runs: list[Run] = []
        for number in range(options.rounds):
            order = [("ours", ours, "/tables/hired_employees/records", headers),
                     ("naive ORM", naive, "/records", {})]  # fmt: skip
            if number % 2:
                order.reverse()
            for method, url, path, auth in order:
                server = servers[0 if method == "ours" else 1]
                server_before, database_before = cpu_seconds(server, dsn)
                run = load(url, path, auth, bodies, options.seconds, options.clients, method)
                server_after, database_after = cpu_seconds(server, dsn)
                run.server_cpu = server_after - server_before
                run.database_cpu = database_after - database_before
                runs.append(run)
                print(
                    f"  round {number + 1}: {method}: {run.rate():,.0f} records/s, "
                    f"p99 {run.quantile(0.99):.0f} ms, errors {run.errors}",
                    flush=True,
                )
        say_load("after")
        best = {
            m: max((r for r in runs if r.method == m), key=Run.rate) for m in ("ours", "naive ORM")
        }
        print(
            f"\n{options.clients} clients x {BATCH}-record batches, our server {options.workers} "
            f"processes, {options.seconds:.0f} s per "
            f"method and round, best of {options.rounds} rounds:"
        )
        lines = []
        for method, run in best.items():
            unique = len(set(run.ids)) == len(run.ids)
            lines.append(
                [method, f"{run.rate():,.0f}", f"{run.quantile(0.5):.0f}",
                 f"{run.quantile(0.99):.0f}", str(run.errors), str(run.batches),
                 "yes" if unique else "NO", f"{run.gap_free}/{run.batches}",
                 run.cpu_ms_per_batch(run.server_cpu), run.cpu_ms_per_batch(run.database_cpu)]
            )  # fmt: skip
        print_table(
            ["method", "records/s", "p50 ms", "p99 ms", "errors", "batches", "ids unique",
             "gap-free batches", "server CPU ms/batch", "PostgreSQL CPU ms/batch"],
            lines, left={0},
        )  # fmt: skip
        ratio = best["ours"].rate() / max(best["naive ORM"].rate(), 1e-9)
        print(f"\nours / naive ORM: {ratio:.1f}x")
        ok = (
            best["ours"].rate() >= 40_000
            and best["ours"].quantile(0.99) < 250
            and best["ours"].errors == 0
        )
        print(
            "requirement (>= 40,000 records/s, p99 < 250 ms, no errors): "
            + ("PASS" if ok else "FAIL")
        )
        return 0
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


if __name__ == "__main__":
    sys.exit(main())
