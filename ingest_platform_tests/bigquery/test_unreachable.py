"""BigQuery going away under a run (issue 20): every REST and gRPC call is bounded, each retry is
logged with what it waits for, and the run fails within INGEST_BQ_TIMEOUT with one line naming
the endpoint; a server back within the deadline lets the call succeed.

Real emulator processes, each test its own: killed (kill -9), stopped (SIGSTOP: it accepts
connections but never answers), started again on the same ports. The deadline is set low through
the environment, as an operator would, so that the tests stay quick."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingest_platform.bigquery.calls import READ_TIMEOUT_ENV, TIMEOUT_ENV, RetryPolicy
from ingest_platform.bigquery.clients import (
    EMULATOR_PROJECT,
    EmulatorEndpoints,
    emulator_bigquery_client,
    emulator_write_client,
)
from ingest_platform.bigquery.mirror import mirror_dump_version
from ingest_platform.defs.bigquery_mirror import MirrorTranslator, build_mirror_definitions
from ingest_platform.defs.dumps import failure_message
from ingest_platform.defs.resources import BigQueryResource, PostgresResource
from ingest_platform.dumps.directory import DumpCatalog, DumpFile
from ingest_platform.errors import ConfigError, ServiceUnavailableError
from ingest_platform.local.bigquery_emulator import EmulatorProcess, start_emulator
from ingest_platform.local.ports import free_port
from ingest_platform_tests.bigquery.helpers import make_dump_table, target

DEADLINE = 3.0
# What may come on top of the deadline on a loaded 2-core machine: the last try, the exception's
# way up, Dagster's step bookkeeping. The libraries' own default is 600 s.
SLACK = 12.0


@pytest.fixture
def emulator(tmp_path) -> Iterator[EmulatorProcess]:
    process = start_emulator(free_port(), free_port(), tmp_path / "bq", tmp_path / "emulator.log")
    yield process
    _resume(process)
    process.stop()


@pytest.fixture
def deadline(monkeypatch) -> float:
    monkeypatch.setenv(TIMEOUT_ENV, str(DEADLINE))
    return DEADLINE


def _endpoints(emulator: EmulatorProcess) -> EmulatorEndpoints:
    return EmulatorEndpoints(emulator.rest_endpoint, emulator.grpc_endpoint)


def _kill(emulator: EmulatorProcess) -> None:
    emulator.process.kill()
    emulator.process.wait()


def _resume(emulator: EmulatorProcess) -> None:
    if emulator.process.poll() is None:
        os.kill(emulator.process.pid, signal.SIGCONT)


def _table(pg_dsn: str, rows: int = 3000) -> None:
    with psycopg.connect(pg_dsn) as conn:
        versions = {"1": [(i, "x" * 100) for i in range(rows)]}
        make_dump_table(conn, "app", "t", [("id", "integer"), ("pad", "text")], versions, ["id"])


def _retries(caplog, api: str, endpoint: str) -> list[str]:
    prefix = f"BigQuery {api} at {endpoint} "
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def _assert_one_line(message: str, endpoint: str) -> None:
    assert "\n" not in message, message
    assert endpoint in message and TIMEOUT_ENV in message, message
    assert "RetryError" not in message and "Timeout of" not in message, message


class _Seen(logging.Handler):
    """Sets `event` when a log record contains `text`: waits on logs, not on the clock."""

    def __init__(self, text: str):
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@contextmanager
def _watch(text: str) -> Iterator[threading.Event]:
    handler = _Seen(text)
    logger = logging.getLogger("ingest_platform")
    logger.addHandler(handler)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)


def test_rest_calls_to_a_killed_emulator_give_up_at_the_deadline_naming_it(
    pg_dsn, emulator, deadline, caplog
):
    _table(pg_dsn)
    endpoints = _endpoints(emulator)
    client = emulator_bigquery_client(endpoints)
    client.create_dataset("mirror")
    _kill(emulator)
    with (
        psycopg.connect(pg_dsn) as conn,
        caplog.at_level(logging.WARNING, logger="ingest_platform"),
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        started = time.monotonic()
        mirror_dump_version(
            conn,
            client,
            emulator_write_client(endpoints),
            "app",
            "t",
            "1",
            target("mirror", "t"),
        )
    elapsed = time.monotonic() - started
    message = str(caught.value)
    _assert_one_line(message, emulator.rest_endpoint)
    assert f"kept failing for {deadline:.0f} s (connection refused)" in message
    assert deadline - 0.5 <= elapsed < deadline + SLACK
    retries = _retries(caplog, "REST API", emulator.rest_endpoint)
    assert len(retries) >= 3, caplog.text
    assert retries[0].startswith(
        f"BigQuery REST API at {emulator.rest_endpoint} unreachable (POST "
        "/projects/ingest-local/datasets: connection refused); retry 1 in 0.5 s, giving up at "
    ), retries[0]
    assert "retry 2 in 1.0 s" in retries[1]


def test_storage_write_to_an_emulator_killed_mid_append_gives_up_at_the_deadline(
    pg_dsn, emulator, deadline, caplog
):
    # ~35 requests of ~500 rows: more than the writer keeps in flight (4 streams x IN_FLIGHT), so
    # requests are still to be sent when the first answer kills the emulator (with 3,000 rows
    # every request could be answered into the client's buffers first: then only the finalize
    # would fail).
    _table(pg_dsn, rows=20_000)
    endpoints = _endpoints(emulator)
    client = emulator_bigquery_client(endpoints)
    client.create_dataset("mirror")
    killed: list[float] = []

    def kill_after_first_answer(requests: int) -> None:
        if requests == 1:
            _kill(emulator)
            killed.append(time.monotonic())

    with (
        psycopg.connect(pg_dsn) as conn,
        caplog.at_level(logging.WARNING, logger="ingest_platform"),
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        mirror_dump_version(
            conn,
            client,
            emulator_write_client(endpoints),
            "app",
            "t",
            "1",
            target("mirror", "t"),
            on_request=kill_after_first_answer,
            max_request_bytes=60_000,  # ~500 rows a request: the kill comes mid-append
        )
    elapsed = time.monotonic() - killed[0]
    message = str(caught.value)
    _assert_one_line(message, emulator.grpc_endpoint)
    assert "AppendRows to projects/ingest-local/datasets/mirror/tables/t kept failing" in message
    assert "Nothing of this run was committed" in message
    assert elapsed < deadline + SLACK
    retries = _retries(caplog, "Storage Write API", emulator.grpc_endpoint)
    assert retries and "unreachable (AppendRows to" in retries[0], caplog.text
    assert "retry 1 in 0.5 s (sending " in retries[0] and "giving up at" in retries[0]


def test_a_silent_emulator_is_given_up_on_after_the_read_timeout(
    pg_dsn, emulator, deadline, monkeypatch, caplog
):
    """SIGSTOP: the kernel still accepts connections, nothing answers. Each try waits the read
    timeout (1 s here), the retries stop at the deadline, for REST and for gRPC."""
    monkeypatch.setenv(READ_TIMEOUT_ENV, "1")
    endpoints = _endpoints(emulator)
    client = emulator_bigquery_client(endpoints)
    client.create_dataset("mirror")
    write_client = emulator_write_client(endpoints)
    os.kill(emulator.process.pid, signal.SIGSTOP)
    with caplog.at_level(logging.WARNING, logger="ingest_platform"):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as rest:
            client.get_dataset("mirror")
        rest_seconds = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as grpc:
            from ingest_platform.bigquery.writer import PendingStreamWriter

            with PendingStreamWriter(
                write_client, target("mirror", "t").path, _arrow_schema()
            ) as writer:
                writer.append_batch(_arrow_batch())
        grpc_seconds = time.monotonic() - started
    _assert_one_line(str(rest.value), emulator.rest_endpoint)
    assert "no answer in time" in str(rest.value)
    _assert_one_line(str(grpc.value), emulator.grpc_endpoint)
    assert "CreateWriteStream on projects/ingest-local/datasets/mirror/tables/t" in str(grpc.value)
    assert "DeadlineExceeded" in str(grpc.value)
    assert rest_seconds < deadline + 1 + SLACK and grpc_seconds < deadline + 1 + SLACK
    assert len(_retries(caplog, "REST API", emulator.rest_endpoint)) >= 1
    assert len(_retries(caplog, "Storage Write API", emulator.grpc_endpoint)) >= 1


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([pa.field("id", pa.int64())])


def _arrow_batch():
    import pyarrow as pa

    return pa.record_batch([pa.array([1, 2, 3])], schema=_arrow_schema())


def test_an_emulator_back_within_the_deadline_lets_the_mirror_finish(
    pg_dsn, emulator, tmp_path, monkeypatch, caplog
):
    """Killed before the run, started again (same ports, same data) once the first retry is
    logged: the run waits for it and mirrors every row once."""
    monkeypatch.setenv(TIMEOUT_ENV, "60")
    _table(pg_dsn)
    endpoints = _endpoints(emulator)
    # Retries every second at most (8 s by default): the test ends soon after the restart.
    client = emulator_bigquery_client(endpoints, retry=RetryPolicy(max_delay=1))
    client.create_dataset("mirror")
    _kill(emulator)
    rest_port = int(emulator.rest_endpoint.rsplit(":", 1)[1])
    grpc_port = int(emulator.grpc_endpoint.rsplit(":", 1)[1])
    restarted: list[EmulatorProcess] = []
    failed: list[BaseException] = []

    def restart(first_retry: threading.Event) -> None:
        try:
            if first_retry.wait(60):
                restarted.append(
                    start_emulator(rest_port, grpc_port, tmp_path / "bq", tmp_path / "again.log")
                )
        except BaseException as error:  # raised in the test below
            failed.append(error)

    with (
        _watch("retry 1 in") as first_retry,
        caplog.at_level(logging.WARNING, logger="ingest_platform"),
        psycopg.connect(pg_dsn) as conn,
    ):
        thread = threading.Thread(target=restart, args=(first_retry,), daemon=True)
        thread.start()
        try:
            result = mirror_dump_version(
                conn,
                client,
                emulator_write_client(endpoints),
                "app",
                "t",
                "1",
                target("mirror", "t"),
            )
            thread.join(60)
            assert not failed, failed
            assert restarted, "the emulator was not started again"
            count = list(
                client.query(
                    f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {target('mirror', 't').ref}"
                ).result()
            )[0]
        finally:
            thread.join(60)
            for process in restarted:
                process.stop()
    assert result.rows == 3000 and tuple(count.values()) == (3000, 3000)
    assert _retries(caplog, "REST API", emulator.rest_endpoint), caplog.text


def test_a_mirror_step_fails_within_the_deadline_with_one_line(pg_dsn, emulator, deadline):
    """The Dagster step: the emulator is gone, the run fails in seconds, not ten minutes, and the
    step's error is the one line naming the endpoint."""
    _table(pg_dsn)
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("app_1.zip"), app="app", version="1", tables=["t"])]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix="m_"))
    resources = {
        "postgres": PostgresResource(dsn=pg_dsn),
        "bigquery": BigQueryResource(
            project=EMULATOR_PROJECT,
            emulator_rest_endpoint=emulator.rest_endpoint,
            emulator_grpc_endpoint=emulator.grpc_endpoint,
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("app_versions", ["1"])
    _kill(emulator)
    started = time.monotonic()
    result = dg.materialize(
        defs.assets,
        selection=dg.AssetSelection.assets(dg.AssetKey(["bigquery", "app", "t"])),
        partition_key="1",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure_message(failure)
    _assert_one_line(message, emulator.rest_endpoint)
    rest = emulator.rest_endpoint
    assert f"ServiceUnavailableError: BigQuery REST API at {rest}: POST " in message
    assert elapsed < deadline + SLACK


def test_a_bad_timeout_setting_is_named(monkeypatch, bq_emulator):
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    client = emulator_bigquery_client(bq_emulator)
    with pytest.raises(ConfigError, match=f"{TIMEOUT_ENV} is 'soon'; set it to a number"):
        client.get_dataset("anything")


def test_a_cdc_mirror_killed_mid_append_waits_out_the_deadline_once(
    pg_dsn, emulator, deadline, caplog
):
    """mirror_changes drops its staging table when a run fails, but not when BigQuery does not
    answer: that would wait out the deadline a second time (the table expires by itself)."""
    from ingest_platform.bigquery.mirror import ensure_mirror_table, mirror_changes
    from ingest_platform.bigquery.source import source_for_table

    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "CREATE TABLE merged (id integer PRIMARY KEY, pad text, _last_change_id bigint, "
            "is_deleted boolean NOT NULL DEFAULT false)"
        )
        conn.execute(
            "INSERT INTO merged (id, pad, _last_change_id) "
            "SELECT i, repeat('x', 100), i FROM generate_series(1, 3000) i"
        )
        conn.commit()
        endpoints = _endpoints(emulator)
        client = emulator_bigquery_client(endpoints)
        client.create_dataset("mirror")
        mirror = target("mirror", "merged")
        source = source_for_table(conn, "public", "merged")
        ensure_mirror_table(client, mirror, source.columns)
        killed: list[float] = []

        def kill_after_first_answer(requests: int) -> None:
            if requests == 1:
                _kill(emulator)
                killed.append(time.monotonic())

        with (
            caplog.at_level(logging.WARNING, logger="ingest_platform"),
            pytest.raises(ServiceUnavailableError) as caught,
        ):
            mirror_changes(
                conn,
                client,
                emulator_write_client(endpoints),
                source.with_filters(),
                mirror,
                on_request=kill_after_first_answer,
                chunk_rows=500,
            )
    elapsed = time.monotonic() - killed[0]
    _assert_one_line(str(caught.value), emulator.grpc_endpoint)
    assert elapsed < deadline + SLACK
    assert not _retries(caplog, "REST API", emulator.rest_endpoint), caplog.text
