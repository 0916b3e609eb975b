"""The CDC core against real PostgreSQL: sync, safe horizon, crash recovery, edge cases, evolution,
bad input."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from ingest_platform.cdc import checks, pipeline
from ingest_platform.cdc.config import CdcConfig, CdcTable
from ingest_platform.cdc.errors import ChangeLogError
from ingest_platform.demo import cdc_app
from ingest_platform.errors import SchemaError
from ingest_platform.postgres.connection import scalar


def run(env, table=None, wait=5.0):
    tables = [env.table(table)] if table else env.config.tables
    return {
        t.name: pipeline.run_table(env.source_dsn, env.warehouse_dsn, env.config, t, wait)
        for t in tables
    }


def assert_consistent(env):
    for table in env.config.tables:
        match = checks.compare_with_source(env.source_dsn, env.warehouse_dsn, env.config, table)
        assert match.passed, (table.name, match.describe())
        assert checks.live_deleted_objects(
            env.source_dsn, env.warehouse_dsn, env.config, table
        ).passed
        assert checks.staging_row_count(env.warehouse_dsn, env.config, table) == 0


def workload(env, steps, seed=3):
    with env.source() as conn:
        work = cdc_app.Workload(conn, random.Random(seed))
        for _ in range(steps):
            work.step()


def test_sync_merges_inserts_updates_soft_deletes_and_is_idempotent(cdc_env):
    results = run(cdc_env)
    assert results["pm_item"][1].counts.inserted == len(cdc_env.merged("pm_item"))
    assert_consistent(cdc_env)
    workload(cdc_env, 150)
    results = run(cdc_env)
    counts = {name: merge.counts for name, (_, merge) in results.items()}
    assert (
        sum(c.updated for c in counts.values()) > 0
        and sum(c.soft_deleted for c in counts.values()) > 0
    )
    assert_consistent(cdc_env)
    merged = cdc_env.merged("pm_item")
    deleted = [r for r in merged.values() if r["is_deleted"]]
    assert deleted and all(r["description"] is not None for r in deleted)  # last known values kept
    assert all(r["_last_change_id"] and r["_applied_at"] for r in merged.values())
    marks = {t.name: cdc_env.watermark(t.name) for t in cdc_env.config.tables}
    again = run(cdc_env)  # nothing new: no merge, nothing changes
    assert not any(merge.merged for _, merge in again.values())
    assert {t.name: cdc_env.watermark(t.name) for t in cdc_env.config.tables} == marks
    assert cdc_env.merged("pm_item") == merged
    assert pipeline.pending_tables(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config) == {}


def test_a_lower_id_committed_late_is_applied_once(cdc_env):
    run(cdc_env)
    with cdc_env.source() as slow, cdc_env.source() as fast:
        slow_writer, fast_writer = cdc_app.ChangeWriter(slow), cdc_app.ChangeWriter(fast)
        slow.execute("BEGIN")
        plan = slow.execute("SELECT min(id) FROM pm_plan").fetchone()[0]
        late = slow_writer.add(
            "pm_item", {"plan_id": plan, "description": "late", "qty": 1}
        )  # lower change id
        with fast.transaction():
            early = fast_writer.add("pm_item", {"plan_id": plan, "description": "early", "qty": 2})
        high_id = fast.execute("SELECT max(id) FROM models_logging_change").fetchone()[
            0
        ]  # the early one's
        stage, _ = run(cdc_env, "pm_item", wait=0.2)["pm_item"]
        assert slow.info.backend_pid in stage.blocked_by_pids
        assert cdc_env.watermark("pm_item") < high_id  # not past the open transaction's id
        slow.execute("COMMIT")
        ids = [
            r[0]
            for r in slow.execute(
                "SELECT id FROM models_logging_change WHERE object_id IN (%s, %s) "
                "AND content_type_id = %s ORDER BY id",
                (str(late), str(early), slow_writer.content_types["pm_item"]),
            )
        ]
    assert ids[0] < ids[1]  # the late commit has the lower id
    run(cdc_env, "pm_item")
    merged = cdc_env.merged("pm_item")
    assert merged[late]["description"] == "late" and merged[early]["description"] == "early"
    assert merged[late]["_last_change_id"] == ids[0]
    assert cdc_env.watermark("pm_item") >= ids[1]
    assert_consistent(cdc_env)


def assert_history_is_the_log(env, name: str) -> None:
    """The change history holds every change-log row of the table up to the watermark, once."""
    table = env.table(name)
    with env.source() as conn:
        log = conn.execute(
            "SELECT c.id, c.action, c.object_id, c.date_created FROM models_logging_change c "
            "JOIN django_content_type t ON t.id = c.content_type_id "
            "WHERE t.app_label = %s AND t.model = %s AND c.id <= %s ORDER BY c.id",
            (table.app_label, table.model, env.watermark(name)),
        ).fetchall()
    with env.warehouse() as conn:
        history = conn.execute(
            psycopg.sql.SQL(
                "SELECT _change_id, _action, object_id, changed_at FROM cdc.{} ORDER BY 1"
            ).format(psycopg.sql.Identifier(table.changes_table))
        ).fetchall()
    assert log and history == log


def strip_applied(rows):
    return {k: {c: v for c, v in r.items() if c != "_applied_at"} for k, r in rows.items()}


@pytest.mark.parametrize("crash", ["after_copy", "after_merge"])
def test_rerun_after_a_crash_converges(cdc_env, crash):
    run(cdc_env)
    workload(cdc_env, 80, seed=11)
    item = cdc_env.table("pm_item")
    before = cdc_env.watermark("pm_item")
    pipeline.stage_changes(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, item)
    assert checks.staging_row_count(cdc_env.warehouse_dsn, cdc_env.config, item) > 0
    if crash == "after_merge":
        merged = pipeline.merge_staged(
            cdc_env.warehouse_dsn, cdc_env.config, item, clear_staging=False
        )
        assert merged.merged and cdc_env.watermark("pm_item") > before
        assert checks.staging_row_count(cdc_env.warehouse_dsn, cdc_env.config, item) > 0
    else:
        assert cdc_env.watermark("pm_item") == before
    workload(cdc_env, 30, seed=12)  # the application keeps writing meanwhile
    run(cdc_env)
    first = strip_applied(cdc_env.merged("pm_item"))
    assert_consistent(cdc_env)
    run(cdc_env)
    assert strip_applied(cdc_env.merged("pm_item")) == first
    assert_history_is_the_log(cdc_env, "pm_item")


def test_merging_a_stale_staging_table_does_nothing(cdc_env):
    run(cdc_env)
    workload(cdc_env, 40)
    item = cdc_env.table("pm_item")
    pipeline.stage_changes(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, item)
    assert pipeline.merge_staged(cdc_env.warehouse_dsn, cdc_env.config, item).merged
    snapshot = cdc_env.merged("pm_item")
    again = pipeline.merge_staged(
        cdc_env.warehouse_dsn, cdc_env.config, item
    )  # a second merge of the same batch
    assert not again.merged and cdc_env.merged("pm_item") == snapshot


def test_edge_cases_within_one_batch(cdc_env):
    run(cdc_env)
    with cdc_env.source() as conn:
        writer = cdc_app.ChangeWriter(conn)
        plan = conn.execute("SELECT min(id) FROM pm_plan").fetchone()[0]
        with conn.transaction():
            transient = writer.add(
                "pm_item", {"plan_id": plan, "description": "transient", "qty": 1}
            )
        with conn.transaction():
            writer.delete("pm_item", transient)  # added then deleted
        reborn = conn.execute("SELECT min(id) FROM pm_item").fetchone()[0]
        with conn.transaction():
            writer.delete("pm_item", reborn)
        with conn.transaction():  # deleted then re-added, same key
            writer.add(
                "pm_item", {"id": reborn, "plan_id": plan, "description": "reborn", "qty": 3}
            )
        vanished = conn.execute("SELECT max(id) FROM pm_item").fetchone()[0]
        with conn.transaction():
            writer.change("pm_item", vanished, {"description": "changed before it vanished"})
        conn.execute(
            "DELETE FROM pm_item WHERE id = %s", (vanished,)
        )  # gone before the pull, delete not logged
    stage, merge = run(cdc_env, "pm_item")["pm_item"]
    merged = cdc_env.merged("pm_item")
    assert transient not in merged  # never seen alive: nothing to keep
    assert merged[reborn]["description"] == "reborn" and not merged[reborn]["is_deleted"]
    assert (
        merged[vanished]["is_deleted"]
        and merged[vanished]["description"] != "changed before it vanished"
    )
    assert stage.staged["gone"] == 1
    assert checks.compare_with_source(
        cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, cdc_env.table("pm_item")
    ).passed


def test_schema_evolution_adds_and_widens_and_stops_on_incompatible(cdc_env):
    run(cdc_env)
    with cdc_env.source() as conn:
        conn.execute(
            "ALTER TABLE pm_item ADD COLUMN priority smallint, ALTER COLUMN qty TYPE numeric(14, 3)"
        )
        writer = cdc_app.ChangeWriter(conn)
        some = conn.execute("SELECT min(id) FROM pm_item").fetchone()[0]
        with conn.transaction():
            writer.change("pm_item", some, {"priority": 2, "qty": 12345678901})
    stage, _ = run(cdc_env, "pm_item")["pm_item"]
    assert 'add column "priority" smallint' in stage.schema_changes
    assert 'widen column "qty" from numeric(10,3) to numeric(14,3)' in stage.schema_changes
    merged = cdc_env.merged("pm_item")
    assert merged[some]["priority"] == 2 and merged[some]["qty"] == 12345678901
    assert_consistent(cdc_env)
    mark = cdc_env.watermark("pm_item")
    with cdc_env.source() as conn:
        conn.execute("ALTER TABLE pm_item ALTER COLUMN done TYPE text")
        with conn.transaction():
            cdc_app.ChangeWriter(conn).change("pm_item", some, {"done": "maybe"})
    with pytest.raises(SchemaError, match='column "done".*text.*boolean.*incompatible'):
        run(cdc_env, "pm_item")
    assert cdc_env.watermark("pm_item") == mark and cdc_env.merged("pm_item") == merged


def _log(conn, table, object_id, action="changed", content_type=None):
    writer = cdc_app.ChangeWriter(conn)
    if content_type is not None:
        writer.content_types[table] = content_type
    return writer.log(table, object_id, action, {}, "bad")


@pytest.mark.parametrize("bad", ["object_id", "content_type", "action"])
def test_bad_change_rows_name_their_ids_and_change_nothing(cdc_env, bad):
    run(cdc_env)
    workload(cdc_env, 20)
    with cdc_env.source() as conn:
        if bad == "object_id":
            ids = [_log(conn, "pm_item", "12abc"), _log(conn, "pm_item", "99999999999999999999")]
            expected = "does not cast"
        elif bad == "content_type":
            other = conn.execute(
                "INSERT INTO django_content_type (app_label, model) VALUES ('auth', 'user') "
                "RETURNING id"
            ).fetchone()[0]
            ids = [_log(conn, "pm_item", "1", content_type=other)]
            expected = "unknown content type"
        else:
            ids = [_log(conn, "pm_item", "1", action="moved")]
            expected = "unknown action"
    before = {
        t.name: (cdc_env.watermark(t.name), cdc_env.merged(t.name)) for t in cdc_env.config.tables
    }
    with pytest.raises(ChangeLogError, match=expected) as error:
        run(cdc_env, "pm_item")
    assert set(ids) <= set(error.value.change_ids) and str(ids[0]) in str(error.value)
    assert "watermark did not move" in str(error.value)
    assert (cdc_env.watermark("pm_item"), cdc_env.merged("pm_item")) == before["pm_item"]
    assert (
        checks.staging_row_count(cdc_env.warehouse_dsn, cdc_env.config, cdc_env.table("pm_item"))
        == 0
    )


def test_a_composite_key_is_named_in_key_order(cdc_env):
    """Declared (b, a) over columns (a, b): the error names the key as declared."""
    with cdc_env.source() as conn:
        conn.execute("CREATE TABLE pairs (a bigint, b bigint, body text, PRIMARY KEY (b, a))")
        ct = conn.execute(
            "INSERT INTO django_content_type (app_label, model) VALUES ('core', 'pairs') RETURNING "
            "id"
        ).fetchone()[0]
        _log(conn, "pm_item", "1", action="added", content_type=ct)
    config = CdcConfig(
        tables=cdc_env.config.tables
        + (CdcTable(app_label="core", model="pairs", source_table="pairs"),)
    )
    with pytest.raises(ChangeLogError, match=r"composite primary key \(b, a\)"):
        pipeline.run_table(cdc_env.source_dsn, cdc_env.warehouse_dsn, config, config.table("pairs"))


def test_source_table_without_primary_key_is_an_error(cdc_env):
    with cdc_env.source() as conn:
        conn.execute("CREATE TABLE notes (id bigint, body text)")
        ct = conn.execute(
            "INSERT INTO django_content_type (app_label, model) VALUES ('core', 'notes') RETURNING "
            "id"
        ).fetchone()[0]
        conn.execute("INSERT INTO notes VALUES (1, 'x')")
        change = _log(conn, "pm_item", "1", action="added", content_type=ct)
    config = CdcConfig(
        tables=cdc_env.config.tables
        + (CdcTable(app_label="core", model="notes", source_table="notes"),)
    )
    with pytest.raises(ChangeLogError, match="notes.*has no primary key") as error:
        pipeline.run_table(cdc_env.source_dsn, cdc_env.warehouse_dsn, config, config.table("notes"))
    assert change in error.value.change_ids
    with cdc_env.warehouse() as conn:
        assert conn.execute("SELECT to_regclass('cdc.notes')").fetchone()[0] is None
        assert (
            conn.execute(
                "SELECT horizon_id FROM cdc._cdc_watermark WHERE table_name = 'notes'"
            ).fetchone()[0]
            == 0
        )


@pytest.mark.parametrize("path", ["merge", "on_conflict"])
def test_merge_counts_and_index_lookups(cdc_env, path):
    """Both merge statements (MERGE where the server has it and counts tuples, INSERT .. ON
    CONFLICT otherwise) count exactly, also when batches are joined by index lookups (batches
    small against their tables); merged tables leave room for HOT updates."""
    from ingest_platform.cdc import source as src
    from ingest_platform.cdc import warehouse as wh

    if path == "on_conflict":  # a warehouse that does not count tuples cannot use MERGE's counts
        cdc_env.warehouse_dsn = psycopg.conninfo.make_conninfo(
            cdc_env.warehouse_dsn, options="-c track_counts=off"
        )
    with cdc_env.warehouse() as conn:
        counting = "off" if path == "on_conflict" else "on"
        assert conn.execute("SHOW track_counts").fetchone()[0] == counting
    cdc_app.seed(cdc_env.source_dsn, projects=60, rng=random.Random(8))  # tables >> batches
    results = run(cdc_env)
    assert results["pm_item"][1].counts.inserted == len(cdc_env.merged("pm_item"))
    for conn in (cdc_env.source(), cdc_env.warehouse()):
        with conn:
            conn.execute("ANALYZE")  # statistics, so the lookup rule applies
    workload(cdc_env, 40, seed=5)
    before = {
        t.name: {k: r["is_deleted"] for k, r in cdc_env.merged(t.name).items()}
        for t in cdc_env.config.tables
    }
    results = run(cdc_env)
    for name, (stage, merge) in results.items():
        staged, counts, old = stage.staged, merge.counts, before[name]
        assert src.few_of(sum(stage.changes.values()), len(old)), name  # index lookups
        after = cdc_env.merged(name)
        live = staged["added"] + staged["changed"] - staged["gone"]
        assert counts.inserted + counts.updated == live, name
        assert (
            counts.soft_deleted + counts.skipped_unknown_deleted
            == staged["deleted"] + staged["gone"]
        ), name
        assert counts.inserted == len(after) - len(old), name
        assert counts.soft_deleted == sum(
            1
            for k, r in after.items()
            if r["is_deleted"] and k in old and r["_last_change_id"] > stage.watermark
        ), name
    assert sum(m.counts.soft_deleted for _, m in results.values()) > 0
    assert_consistent(cdc_env)
    options = "SELECT reloptions FROM pg_class WHERE oid = 'cdc.pm_item'::regclass"
    with cdc_env.warehouse() as conn:
        assert f"fillfactor={wh.MERGED_FILLFACTOR}" in conn.execute(options).fetchone()[0]
        conn.execute(
            "ALTER TABLE cdc.pm_item RESET (fillfactor)"
        )  # a merged table made before the setting
    workload(cdc_env, 5, seed=6)
    run(cdc_env, "pm_item")
    with cdc_env.warehouse() as conn:
        assert f"fillfactor={wh.MERGED_FILLFACTOR}" in conn.execute(options).fetchone()[0]
        conn.execute("ALTER TABLE cdc.pm_item SET (fillfactor = 70)")  # a table's own setting stays
    workload(cdc_env, 5, seed=7)
    run(cdc_env, "pm_item")
    with cdc_env.warehouse() as conn:
        assert "fillfactor=70" in conn.execute(options).fetchone()[0]
    assert_consistent(cdc_env)


def test_a_reader_blocking_a_schema_change_is_terminated_after_the_configured_delay(
    cdc_env, caplog
):
    # The same lock terminator as ingest()'s migrations (postgres.locks), set by the CDC config.
    cdc_env.config = CdcConfig(tables=cdc_env.config.tables, terminate_blockers_after=0.2)
    run(cdc_env, "pm_item")
    with cdc_env.source() as conn:
        conn.execute("ALTER TABLE pm_item ADD COLUMN priority smallint")
        some = conn.execute("SELECT min(id) FROM pm_item").fetchone()[0]
        with conn.transaction():
            cdc_app.ChangeWriter(conn).change("pm_item", some, {"priority": 3})
    reader = psycopg.connect(cdc_env.warehouse_dsn)
    reader.execute("SELECT count(*) FROM cdc.pm_item")  # idle in transaction, holding ACCESS SHARE
    reader_pid = reader.info.backend_pid
    with caplog.at_level("WARNING", logger="ingest_platform"):
        stage, _ = run(cdc_env, "pm_item")["pm_item"]
    assert 'add column "priority" smallint' in stage.schema_changes
    assert any(f"Terminated backend {reader_pid} " in r.getMessage() for r in caplog.records)
    assert cdc_env.merged("pm_item")[some]["priority"] == 3
    with pytest.raises(psycopg.OperationalError):
        reader.execute("SELECT 1")
    reader.close()


def test_terminate_blockers_after_is_read_from_the_toml(tmp_path):
    from ingest_platform.cdc.config import parse_cdc_config
    from ingest_platform.errors import ConfigError

    tables = '[[tables]]\napp_label = "pm"\nmodel = "item"\n'
    assert parse_cdc_config(tables).terminate_blockers_after == 60.0
    assert (
        parse_cdc_config("terminate_blockers_after = 5\n" + tables).terminate_blockers_after == 5.0
    )
    assert (
        parse_cdc_config('terminate_blockers_after = "never"\n' + tables).terminate_blockers_after
        is None
    )
    with pytest.raises(ConfigError, match="terminate_blockers_after must be seconds"):
        parse_cdc_config("terminate_blockers_after = -1\n" + tables)


def test_matches_source_names_the_differing_keys(cdc_env):
    run(cdc_env)
    item = cdc_env.table("pm_item")
    with cdc_env.warehouse() as conn:
        gone, changed = conn.execute(
            "SELECT min(id), max(id) FROM cdc.pm_item WHERE NOT is_deleted"
        ).fetchone()
        conn.execute("DELETE FROM cdc.pm_item WHERE id = %s", (gone,))
        conn.execute("UPDATE cdc.pm_item SET description = 'x' WHERE id = %s", (changed,))
    match = checks.compare_with_source(
        cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, item
    )
    assert not match.passed and match.mismatched_buckets >= 1
    assert {(d.key["id"], d.status, d.detail) for d in match.differences} == {
        (str(gone), "missing in merged table", ""),
        (str(changed), "different", "columns: description"),
    }
    assert f"{changed} (different: columns: description)" in match.describe()


@pytest.mark.slow
def test_kill_9_mid_merge_then_rerun_converges(cdc_env):
    """A real process killed while its MERGE runs (held at the merged table's lock, so the kill
    lands inside the merge's transaction): nothing of it stays, and the next sync converges."""
    run(cdc_env)
    workload(cdc_env, 60, seed=13)
    item = cdc_env.table("pm_item")
    pipeline.stage_changes(cdc_env.source_dsn, cdc_env.warehouse_dsn, cdc_env.config, item)
    before = cdc_env.watermark("pm_item")
    merged_before = strip_applied(cdc_env.merged("pm_item"))
    code = (
        "import sys\n"
        "from ingest_platform.cdc import pipeline\n"
        "from ingest_platform.cdc.config import DEMO_TABLES, CdcConfig\n"
        "config = CdcConfig(tables=DEMO_TABLES)\n"
        "pipeline.merge_staged(sys.argv[1], config, config.table('pm_item'))\n"
    )

    def waiting_merges() -> int:
        with cdc_env.warehouse() as conn:
            return scalar(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            )

    with cdc_env.warehouse() as blocker:
        blocker.execute("BEGIN")
        blocker.execute('LOCK TABLE cdc."pm_item" IN SHARE MODE')  # the MERGE waits for it
        merger = subprocess.Popen([sys.executable, "-c", code, cdc_env.warehouse_dsn])
        try:
            deadline = time.monotonic() + 60
            while waiting_merges() == 0:
                assert merger.poll() is None and time.monotonic() < deadline, "no merge waited"
                time.sleep(0.1)
            os.kill(merger.pid, signal.SIGKILL)
            merger.wait(timeout=10)
        finally:
            merger.kill()
        blocker.execute("ROLLBACK")
    assert cdc_env.watermark("pm_item") == before
    assert strip_applied(cdc_env.merged("pm_item")) == merged_before
    run(cdc_env)
    assert_consistent(cdc_env)
    assert_history_is_the_log(cdc_env, "pm_item")
