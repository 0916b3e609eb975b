"""Log-based CDC (kind = "logical"): pgoutput decoded from a slot into the change-log kind's
staging -> merged tables. Runs on a private embedded server started with wal_level = logical (or
on INGEST_TEST_PG_DSN's server when that one has wal_level = logical already)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest_platform.cdc import logical
from ingest_platform.cdc.config import CdcConfig, CdcTable, LogicalSource, parse_cdc_config
from ingest_platform.cdc.pipeline import merge_staged
from ingest_platform.errors import ConfigError, IngestError, ServiceUnavailableError
from ingest_platform.local.embedded_postgres import start_embedded_postgres
from ingest_platform.migration.pg_tools import pg_bin
from ingest_platform.postgres.connection import ensure_database, scalar, with_database
from ingest_platform_tests.conftest import PROJECT_DIR, unique_name

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="session")
def logical_server_dsn() -> Iterator[str]:
    dsn = os.environ.get("INGEST_TEST_PG_DSN")
    if dsn:
        with psycopg.connect(dsn) as conn:
            if scalar(conn, "SHOW wal_level") == "logical":
                yield dsn
                return
    # A private server: restarting a shared one with wal_level = logical would disturb others.
    data_dir = Path(tempfile.mkdtemp(prefix="ingest_test_pglogical_")) / "data"
    try:
        embedded = start_embedded_postgres(
            data_dir, delete_on_stop=True, settings={"wal_level": "logical"}
        )
    except ServiceUnavailableError as error:
        pytest.skip(f"no PostgreSQL with wal_level = logical: {error}")
    yield embedded.dsn
    embedded.stop()
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@dataclass
class LogicalEnv:
    source_dsn: str
    warehouse_dsn: str
    config: CdcConfig

    @property
    def table(self) -> CdcTable:
        return self.config.tables[0]

    def source(self) -> psycopg.Connection:
        return psycopg.connect(self.source_dsn, autocommit=True)

    def merged(self) -> dict:
        with psycopg.connect(self.warehouse_dsn, row_factory=psycopg.rows.dict_row) as conn:
            return {r["id"]: r for r in conn.execute("SELECT * FROM cdc.doc ORDER BY id")}

    def run(self):
        return logical.run_logical_table(
            self.source_dsn, self.warehouse_dsn, self.config, self.table
        )


@pytest.fixture
def env(logical_server_dsn) -> Iterator[LogicalEnv]:
    server = logical_server_dsn
    source_db, warehouse_db = unique_name("lsrc"), unique_name("lwh")
    slot = unique_name("slot")
    for database in (source_db, warehouse_db):
        ensure_database(server, database)
    source = with_database(server, source_db)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, title text, body text, n int)")
        conn.execute("INSERT INTO doc VALUES (1, 'one', 'b1', 1), (2, 'two', 'b2', 2)")
        conn.execute(
            "CREATE PUBLICATION pub FOR TABLE doc WITH (publish = 'insert, update, delete')"
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    config = CdcConfig(
        tables=(CdcTable(source_table="doc"),),
        logical=LogicalSource(slot=slot, publication="pub"),
    )
    yield LogicalEnv(source, with_database(server, warehouse_db), config)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )
        for database in (source_db, warehouse_db):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def slot_position(env: LogicalEnv) -> int:
    with env.source() as conn:
        return scalar(
            conn,
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (env.config.logical.slot,),
        )


def test_insert_update_delete_flow_with_soft_delete(env):
    staged, merged = env.run()  # the initial snapshot, then nothing decoded
    assert {k: (r["title"], r["is_deleted"]) for k, r in env.merged().items()} == {
        1: ("one", False),
        2: ("two", False),
    }
    with env.source() as conn:
        conn.execute("INSERT INTO doc VALUES (3, 'three', 'b3', 3)")
        conn.execute("UPDATE doc SET title = 'ONE', n = NULL WHERE id = 1")
        conn.execute("DELETE FROM doc WHERE id = 2")
        with conn.transaction():  # several changes of one key in one batch: the last wins
            conn.execute("INSERT INTO doc VALUES (4, 'four', 'b4', 4)")
            conn.execute("UPDATE doc SET n = 44 WHERE id = 4")
    staged, merged = env.run()
    assert staged.changes == {"added": 2, "changed": 2, "deleted": 1}
    assert merged.merged and merged.counts.soft_deleted == 1 and merged.counts.inserted == 2
    assert env.merged()[3]["is_deleted"] is False
    with env.source() as conn:
        conn.execute("UPDATE doc SET id = 5 WHERE id = 3")  # a key change: 3 gone, 5 there
    staged, merged = env.run()
    assert (merged.counts.soft_deleted, merged.counts.inserted) == (1, 1)
    rows = env.merged()
    assert {k: (r["title"], r["n"], r["is_deleted"]) for k, r in rows.items()} == {
        1: ("ONE", None, False),
        2: ("two", 2, True),
        3: ("three", 3, True),
        4: ("four", 44, False),
        5: ("three", 3, False),
    }
    assert rows[5]["_last_change_id"] > rows[2]["_last_change_id"]
    assert slot_position(env) == merged.watermark  # confirmed after the merge
    assert merged.last_change_at is not None
    staged, merged = env.run()  # nothing new
    assert staged.staged_rows == 0 and merged.counts.rows_merged == 0


def test_unchanged_toast_value_keeps_its_merged_value(env):
    big = "".join(f"{i:05d}" for i in range(4000))  # 20 kB, not compressible to < 2 kB inline
    with env.source() as conn:
        conn.execute("ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL")
        conn.execute("UPDATE doc SET body = %s WHERE id = 1", (big,))
    env.run()  # the initial snapshot includes it
    with env.source() as conn:
        conn.execute("INSERT INTO doc VALUES (7, 'seven', %s, 7)", (big + "7",))
    env.run()
    with env.source() as conn:
        conn.execute("UPDATE doc SET title = 'uno' WHERE id = 1")  # body not in the WAL
        conn.execute("UPDATE doc SET n = 70 WHERE id = 7")
        conn.execute("UPDATE doc SET n = 71 WHERE id = 7")  # two images of 7, both without body
    with env.source() as conn:
        peeked = logical.peek(conn, env.config.logical, 1000)
    assert any("body" in c.unchanged for t in peeked.transactions for c in t.changes)
    staged, merged = env.run()
    assert merged.counts.updated == 2
    rows = env.merged()
    assert (rows[1]["title"], rows[1]["body"]) == ("uno", big)
    assert (rows[7]["n"], rows[7]["body"]) == (71, big + "7")


def test_crash_between_merge_and_confirm_applies_once(env):
    env.run()
    with env.source() as conn:
        conn.execute("UPDATE doc SET n = n + 10 WHERE id = 1")
    before = slot_position(env)
    # A process that stages and merges, then dies (SIGKILL) before it confirms the slot.
    script = (
        "import os, signal, sys\n"
        "from ingest_platform.cdc import logical\n"
        "from ingest_platform.cdc.config import CdcConfig, CdcTable, LogicalSource\n"
        "from ingest_platform.cdc.pipeline import merge_staged\n"
        "s, w, slot = sys.argv[1:4]\n"
        "c = CdcConfig(tables=(CdcTable(source_table='doc'),), "
        "logical=LogicalSource(slot=slot, publication='pub'))\n"
        "logical.stage_logical(s, w, c, c.tables[0])\n"
        "merge_staged(w, c, c.tables[0])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script, env.source_dsn, env.warehouse_dsn, env.config.logical.slot],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
    )
    assert process.returncode == -9, process.stderr
    assert slot_position(env) == before  # merged, not confirmed
    first = env.merged()[1]
    assert first["n"] == 11
    with env.source() as conn:
        conn.execute("UPDATE doc SET title = 'later' WHERE id = 2")
    staged, merged = env.run()
    # The crashed batch is not applied again: only the later change is staged.
    assert staged.changes == {"added": 0, "changed": 1, "deleted": 0}
    assert staged.staged_rows == 1
    rows = env.merged()
    assert rows[1]["_last_change_id"] == first["_last_change_id"] and rows[1]["n"] == 11
    assert rows[2]["title"] == "later"
    assert slot_position(env) == merged.watermark


def test_failing_merge_leaves_slot_and_merged_table(env):
    env.run()
    with env.source() as conn:
        conn.execute("UPDATE doc SET n = 100 WHERE id = 2")
    before = slot_position(env)
    logical.stage_logical(env.source_dsn, env.warehouse_dsn, env.config, env.table)
    with psycopg.connect(env.warehouse_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE cdc.doc ADD CONSTRAINT small CHECK (n < 50)")
    with pytest.raises(psycopg.errors.CheckViolation):
        merge_staged(env.warehouse_dsn, env.config, env.table)
    assert slot_position(env) == before and env.merged()[2]["n"] == 2
    with psycopg.connect(env.warehouse_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE cdc.doc DROP CONSTRAINT small")
    env.run()
    assert env.merged()[2]["n"] == 100


def test_retained_wal_over_the_limit_fails_with_an_action(env):
    env.run()
    health = logical.slot_health(env.source_dsn, env.config.logical)
    assert health.retained_bytes > 0
    tight = LogicalSource(env.config.logical.slot, "pub", max_retained_wal_mb=0.01)
    with env.source() as conn:  # WAL the slot has not consumed
        conn.execute(
            "INSERT INTO doc SELECT g, repeat('x', 200), 'b', g FROM generate_series(10, 2000) g"
        )
    health = logical.slot_health(env.source_dsn, tight)
    assert not health.passed
    message = health.describe()
    assert "over the limit of 0 MB" in message and "pg_drop_replication_slot" in message
    assert "cdc_sync" in message
    assert logical.slot_health(env.source_dsn, env.config.logical).passed  # 1024 MB default


def test_missing_slot_publication_and_refused_credentials(env):
    env.run()
    gone = CdcConfig(tables=env.config.tables, logical=LogicalSource("no_such_slot", "pub"))
    with pytest.raises(IngestError) as error:
        logical.stage_logical(env.source_dsn, env.warehouse_dsn, gone, env.table)
    message = str(error.value)
    assert "\n" not in message and "no_such_slot" in message
    assert "pg_create_logical_replication_slot" in message
    nopub = CdcConfig(
        tables=env.config.tables, logical=LogicalSource(env.config.logical.slot, "nopub")
    )
    with pytest.raises(IngestError) as error:
        logical.stage_logical(env.source_dsn, env.warehouse_dsn, nopub, env.table)
    message = str(error.value)
    assert "\n" not in message and "'nopub'" in message and "CREATE PUBLICATION" in message
    with env.source() as conn:
        conn.execute("CREATE ROLE cdc_reader LOGIN PASSWORD 'sekrit-pw'")
    try:
        dsn = env.source_dsn + " user=cdc_reader password=wrong-pw-123 host=127.0.0.1"
        with pytest.raises(IngestError) as error:
            logical.stage_logical(dsn, env.warehouse_dsn, env.config, env.table)
        message = str(error.value)
        assert "\n" not in message.strip() and "wrong-pw-123" not in message
    finally:
        with env.source() as conn:
            conn.execute("DROP ROLE cdc_reader")


def test_config_kind_logical():
    config = parse_cdc_config(
        'kind = "logical"\n[logical]\nslot = "s"\npublication = "p"\nmax_retained_wal_mb = 64\n'
        '[[tables]]\nsource_table = "doc"\n'
    )
    assert config.logical == LogicalSource("s", "p", 64.0)
    assert config.tables[0].name == "doc"
    with pytest.raises(ConfigError, match="needs a \\[logical\\] table with slot and publication"):
        parse_cdc_config('kind = "logical"\n[[tables]]\nsource_table = "doc"\n')
    with pytest.raises(ConfigError, match="entry 1 needs source_table"):
        parse_cdc_config(
            'kind = "logical"\n[logical]\nslot = "s"\npublication = "p"\n'
            '[[tables]]\napp_label = "a"\nmodel = "b"\n'
        )


@pytest.mark.slow
def test_dagster_job_checks_and_sensor(env):
    import dagster as dg

    from ingest_platform.defs.cdc import (
        JOB_NAME,
        MATCHES_SOURCE_CHECK,
        SENSOR_NAME,
        SLOT_WAL_CHECK,
        STAGING_EMPTY_CHECK,
        CdcSourceResource,
        build_cdc_definitions,
    )
    from ingest_platform.defs.resources import PostgresResource

    resources = {
        "postgres": PostgresResource(dsn=env.warehouse_dsn),
        "cdc_source": CdcSourceResource(dsn=env.source_dsn),
    }
    defs = dg.Definitions.merge(
        build_cdc_definitions(env.config, source=resources["cdc_source"]),
        dg.Definitions(resources={"postgres": resources["postgres"]}),
    )
    dg.Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert dg.AssetKey(["cdc_source", f"slot.{env.config.logical.slot}"]) in keys
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    job = defs.resolve_job_def(JOB_NAME)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = sensor(context)
        assert len(first.run_requests) == 1  # never merged: the initial snapshot is due
        assert job.execute_in_process(instance=instance).success
        with env.source() as conn:
            conn.execute("UPDATE doc SET n = 9 WHERE id = 2")
            conn.execute("DELETE FROM doc WHERE id = 1")
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor(context)
        assert len(result.run_requests) == 1
        run = job.execute_in_process(instance=instance)
        assert run.success
        evaluations = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert {MATCHES_SOURCE_CHECK, SLOT_WAL_CHECK, STAGING_EMPTY_CHECK} <= set(evaluations)
        assert all(e.passed for e in evaluations.values()), evaluations
        rows = env.merged()
        assert rows[1]["is_deleted"] and rows[2]["n"] == 9
        assert slot_position(env) >= rows[2]["_last_change_id"]  # confirmed after the merge
    bad = build_cdc_definitions(
        CdcConfig(
            tables=env.config.tables,
            logical=LogicalSource(env.config.logical.slot, "pub", max_retained_wal_mb=0.0001),
        ),
        source=resources["cdc_source"],
    )
    defs = dg.Definitions.merge(bad, dg.Definitions(resources={"postgres": resources["postgres"]}))
    merged_key = dg.AssetKey(["cdc", "doc"])
    checks_job = dg.define_asset_job(
        "wal_check", selection=dg.AssetSelection.checks_for_assets(merged_key)
    )
    good = dg.Definitions.merge(
        build_cdc_definitions(env.config, source=resources["cdc_source"]),
        dg.Definitions(resources={"postgres": resources["postgres"]}, jobs=[checks_job]),
    )
    with env.source() as conn:  # changed, not merged yet: left out of matches_source
        conn.execute("UPDATE doc SET n = 10 WHERE id = 2")
        conn.execute("INSERT INTO doc VALUES (3, 'three', 'b3', 3)")  # merged below
    job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    with env.source() as conn:
        conn.execute("UPDATE doc SET n = 11 WHERE id = 2")
    with dg.instance_for_test() as instance:
        run = good.resolve_job_def("wal_check").execute_in_process(instance=instance)
    [match] = [e for e in run.get_asset_check_evaluations() if e.check_name == MATCHES_SOURCE_CHECK]
    assert match.passed and match.metadata["excluded_pending_keys"].value == 1
    assert match.metadata["source_rows"].value == 1  # row 3 compared, row 2 left out
    with env.source() as conn:
        conn.execute("INSERT INTO doc SELECT g, 'x', 'b', g FROM generate_series(100, 600) g")
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[checks_job]))
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("wal_check").execute_in_process(
            instance=instance, raise_on_error=False
        )
    [wal] = [e for e in run.get_asset_check_evaluations() if e.check_name == SLOT_WAL_CHECK]
    assert not wal.passed
    assert "over the limit" in wal.description and "pg_drop_replication_slot" in wal.description


def history(env: LogicalEnv, table: str = "doc") -> list[tuple]:
    with psycopg.connect(env.warehouse_dsn) as conn:
        return conn.execute(
            sql.SQL("SELECT _change_id, _action, object_id FROM cdc.{} ORDER BY _change_id").format(
                sql.Identifier(f"{table}__changes")
            )
        ).fetchall()


def test_change_history_has_every_decoded_change_once(env):
    env.run()  # the initial snapshot writes no history, as the change-log kind's resync
    with env.source() as conn:
        conn.execute("INSERT INTO doc VALUES (3, 'three', 'b3', 3)")
        with conn.transaction():  # two changes of one key: two history rows, one merged image
            conn.execute("UPDATE doc SET n = 10 WHERE id = 1")
            conn.execute("UPDATE doc SET n = 11 WHERE id = 1")
        conn.execute("DELETE FROM doc WHERE id = 2")
    env.run()
    assert history(env) == [
        (1, "added", "3"),
        (2, "changed", "1"),
        (3, "changed", "1"),
        (4, "deleted", "2"),
    ]
    with env.source() as conn:
        conn.execute("UPDATE doc SET title = 'x' WHERE id = 3")
    env.run()
    env.run()  # nothing new: nothing recorded
    assert history(env)[4:] == [(5, "changed", "3")]  # ids go on growing: the mirror's cursor
    with psycopg.connect(env.warehouse_dsn) as conn:
        # The shape cdc_changes_per_day reads: commit times, today in this test.
        per_day = conn.execute(
            "SELECT (changed_at AT TIME ZONE 'UTC')::date = (now() AT TIME ZONE 'UTC')::date, "
            "_action, count(*), count(merged_at) FROM cdc.doc__changes GROUP BY 1, 2 ORDER BY 2"
        ).fetchall()
    assert per_day == [(True, "added", 1, 1), (True, "changed", 3, 3), (True, "deleted", 1, 1)]


def test_several_tables_one_pass_and_one_confirm_across_a_crash(env):
    from ingest_platform.cdc.pipeline import run_all

    with env.source() as conn:
        conn.execute("CREATE TABLE tag (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO tag VALUES (1, 'a')")
        conn.execute("ALTER PUBLICATION pub ADD TABLE tag")
    config = CdcConfig(
        tables=(CdcTable(source_table="doc"), CdcTable(source_table="tag")),
        logical=env.config.logical,
    )
    results = run_all(env.source_dsn, env.warehouse_dsn, config)
    assert set(results) == {"doc", "tag"}
    with env.source() as conn, conn.transaction():  # one transaction changing both tables
        conn.execute("UPDATE doc SET n = 20 WHERE id = 2")
        conn.execute("INSERT INTO tag VALUES (2, 'b')")
        conn.execute("UPDATE tag SET label = 'A' WHERE id = 1")
    with env.source() as conn:
        conn.execute("DELETE FROM doc WHERE id = 1")
    before = slot_position(env)
    # A run that merged doc and died before tag's merge and the confirm.
    doc, tag = config.tables
    logical.stage_logical(env.source_dsn, env.warehouse_dsn, config, doc)
    merge_staged(env.warehouse_dsn, config, doc)
    assert slot_position(env) == before  # tag is behind: the slot stays
    assert len(history(env, "doc")) == 2
    with env.source() as conn:
        conn.execute("UPDATE tag SET label = 'B' WHERE id = 2")
    results = run_all(env.source_dsn, env.warehouse_dsn, config)
    # doc's batch is not applied again; tag gets both its batches in this one pass.
    assert results["doc"][0].changes == {"added": 0, "changed": 0, "deleted": 0}
    assert results["tag"][0].changes == {"added": 1, "changed": 2, "deleted": 0}
    assert [r[1:] for r in history(env, "doc")] == [("changed", "2"), ("deleted", "1")]
    assert [r[1:] for r in history(env, "tag")] == [
        ("added", "2"),
        ("changed", "1"),
        ("changed", "2"),
    ]
    with psycopg.connect(env.warehouse_dsn) as conn:
        tags = dict(conn.execute("SELECT id, label FROM cdc.tag WHERE NOT is_deleted"))
        marks = dict(conn.execute("SELECT table_name, horizon_id FROM cdc._cdc_watermark"))
    assert tags == {1: "A", 2: "B"}
    assert env.merged()[1]["is_deleted"] and env.merged()[2]["n"] == 20
    assert marks["doc"] == marks["tag"] == slot_position(env)  # one decode, one confirm


def test_dagster_stages_the_slots_tables_in_one_step_from_one_decoding(env, monkeypatch):
    import dagster as dg

    from ingest_platform.defs.cdc import (
        JOB_NAME,
        MATCHES_SOURCE_CHECK,
        CdcSourceResource,
        build_cdc_definitions,
    )
    from ingest_platform.defs.resources import PostgresResource

    with env.source() as conn:
        conn.execute("CREATE TABLE tag (id int PRIMARY KEY, label text)")
        conn.execute("ALTER PUBLICATION pub ADD TABLE tag")
    config = CdcConfig(
        tables=(CdcTable(source_table="doc"), CdcTable(source_table="tag")),
        logical=env.config.logical,
    )
    source = CdcSourceResource(dsn=env.source_dsn)
    defs = dg.Definitions.merge(
        build_cdc_definitions(config, source=source),
        dg.Definitions(resources={"postgres": PostgresResource(dsn=env.warehouse_dsn)}),
    )
    job = defs.resolve_job_def(JOB_NAME)
    stages = [name for name in job.graph.node_dict if name.startswith("stage")]
    assert stages == [f"stage_slot_{env.config.logical.slot}"]
    assert job.execute_in_process().success  # the initial snapshots
    with env.source() as conn, conn.transaction():
        conn.execute("UPDATE doc SET n = 30 WHERE id = 2")
        conn.execute("INSERT INTO tag VALUES (1, 'a')")
    peeks: list[int] = []
    real_peek = logical.peek
    monkeypatch.setattr(logical, "peek", lambda *a, **k: peeks.append(1) or real_peek(*a, **k))
    run = job.execute_in_process()
    assert run.success
    # One decoding stages both tables; each table's matches_source check peeks once more.
    source_checks = [
        e for e in run.get_asset_check_evaluations() if e.check_name == MATCHES_SOURCE_CHECK
    ]
    assert len(source_checks) == 2 and len(peeks) == 1 + 2
    staged = {
        e.asset_key.path[-1]: e.materialization.metadata["staged_rows"].value
        for e in run.get_asset_materialization_events()
        if e.asset_key.path[-1].endswith("__staging")
    }
    assert staged == {"doc__staging": 1, "tag__staging": 1}
    assert env.merged()[2]["n"] == 30
    # A run of one table's assets stages that table only.
    with env.source() as conn:
        conn.execute("UPDATE tag SET label = 'b' WHERE id = 1")
    keys = [dg.AssetKey(["cdc", "tag__staging"]), dg.AssetKey(["cdc", "tag"])]
    run = job.execute_in_process(asset_selection=keys)
    assert {e.asset_key for e in run.get_asset_materialization_events()} == set(keys)
    with psycopg.connect(env.warehouse_dsn) as conn:
        assert conn.execute("SELECT label FROM cdc.tag").fetchall() == [("b",)]


def test_source_check_starts_again_when_a_merge_lands_between_its_snapshots(env):
    from ingest_platform.cdc import checks
    from ingest_platform.cdc import source as src
    from ingest_platform.cdc import warehouse as wh

    env.run()
    with env.source() as conn:
        conn.execute("UPDATE doc SET n = 50 WHERE id = 1")

    def attempt(merge_in_between: bool):
        with (
            psycopg.connect(env.warehouse_dsn) as wconn,
            psycopg.connect(env.source_dsn) as sconn,
        ):
            for conn in (wconn, sconn):
                src.set_session(conn)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            horizon = wh.read_watermark(wconn, "cdc", "doc").horizon_id  # warehouse snapshot
            if merge_in_between:
                env.run()  # merged and confirmed after the snapshot: the peek misses n = 50
            return checks.compare_in_snapshot(
                env.source_dsn, wconn, sconn, env.config, env.table, horizon
            )

    quiet = attempt(merge_in_between=False)
    assert quiet.passed and quiet.excluded_keys == 1  # key 1: changed, not merged yet
    assert attempt(merge_in_between=True) is None  # not a mismatch: compare again
    report = checks.compare_with_source(env.source_dsn, env.warehouse_dsn, env.config, env.table)
    assert report.passed and report.excluded_keys == 0 and report.source_rows == 2


def test_cli_cdc_sync_prints_what_it_merged(env, tmp_path, monkeypatch, capsys):
    from ingest_platform.local.cli import main

    path = tmp_path / "cdc.toml"
    path.write_text(
        f'kind = "logical"\n[logical]\nslot = "{env.config.logical.slot}"\npublication = "pub"\n'
        '[[tables]]\nsource_table = "doc"\n'
    )
    monkeypatch.setenv("INGEST_CDC_SOURCE_DSN", env.source_dsn)
    monkeypatch.delenv("INGEST_CDC_CONFIG", raising=False)
    args = ["cdc", "sync", "--config", str(path), "--dsn", env.warehouse_dsn]
    assert main(args) == 0  # the initial snapshot
    with env.source() as conn:
        conn.execute("INSERT INTO doc VALUES (3, 'three', 'b3', 3)")
        conn.execute("UPDATE doc SET n = 9 WHERE id = 1")
        conn.execute("UPDATE doc SET n = 10 WHERE id = 1")
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[1:3]
    assert header.split()[:7] == [
        "table", "added", "changed", "deleted", "inserted", "updated", "soft-deleted"
    ]  # fmt: skip
    assert row.split()[:7] == ["doc", "1", "2", "0", "1", "1", "0"]
    assert row.split()[7] == str(slot_position(env))  # the watermark, the slot confirmed to it
    assert "retains" in out and env.source_dsn not in out
    assert main([*args, "--table", "nope"]) == 1
    error = capsys.readouterr().err
    assert "No tracked CDC table named 'nope'" in error and error.count("\n") == 1


def test_values_with_tabs_newlines_backslashes_and_nulls_arrive_intact(env):
    env.run()
    odd = 'a\tb\nc\\d\re "q" \\N'
    with env.source() as conn:
        conn.execute("INSERT INTO doc VALUES (8, %s, NULL, NULL)", (odd,))
        conn.execute("UPDATE doc SET body = %s WHERE id = 1", ("\\N",))  # text, not NULL
    env.run()
    rows = env.merged()
    assert (rows[8]["title"], rows[8]["body"], rows[8]["n"]) == (odd, None, None)
    assert rows[1]["body"] == "\\N"
    assert history(env)[0][2] == "8"


def slot_holder(env: LogicalEnv) -> subprocess.Popen:
    """pg_recvlogical streaming from the slot: another backend holding it, as a step of the same
    job running at once in another process does while it decodes. Its status reports (which
    would move the slot) are 100 s apart: it is killed long before."""
    command = [pg_bin("pg_recvlogical"), "-d", env.source_dsn, "--slot", env.config.logical.slot]
    command += ["--start", "-f", "/dev/null", "-s", "100", "-F", "100", "--no-loop"]
    command += ["-o", "proto_version=1", "-o", "publication_names=pub"]
    holder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and holder.poll() is None:
        with env.source() as conn:
            active = scalar(
                conn,
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (env.config.logical.slot,),
            )
        if active:
            return holder
        time.sleep(0.1)
    holder.kill()
    raise AssertionError(f"pg_recvlogical did not take the slot: {holder.communicate()[1]!r}")


def test_a_slot_another_backend_holds_is_waited_for_then_named(env):
    env.run()
    with env.source() as conn:
        conn.execute("UPDATE doc SET n = 7 WHERE id = 1")
    holder = slot_holder(env)
    try:
        with env.source() as conn, pytest.raises(logical.LogicalDecodingError) as error:
            logical.peek(conn, env.config.logical, 100, wait_seconds=1)
        assert str(error.value).startswith(
            f"slot '{env.config.logical.slot}' stayed in use by another process for 1 s "
        )
        assert "wait for the CDC sync that holds it" in str(error.value)
        # The holder goes after a second; a run started meanwhile waits for the slot, then merges.
        threading.Timer(1.0, holder.kill).start()
        started = time.monotonic()
        staged, merged = env.run()
        assert time.monotonic() - started >= 0.9
    finally:
        holder.kill()
        holder.wait()
    assert staged.changes == {"added": 0, "changed": 1, "deleted": 0}
    assert env.merged()[1]["n"] == 7
    assert slot_position(env) == merged.watermark
