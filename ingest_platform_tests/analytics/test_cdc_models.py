"""The CDC worked examples: a tiny change log -> CDC (real pipeline) -> change histories mirrored
to BigQuery (the emulator) -> the models, checked by hand and proved against PostgreSQL."""

import datetime as dt
import shutil
import uuid

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from ingest_platform.analytics.models import read_model
from ingest_platform.analytics.run import check_sources, materialize, prove
from ingest_platform.bigquery.mirror import (
    MirrorTarget,
    ensure_dataset,
    ensure_mirror_table,
    mirror_changes,
)
from ingest_platform.bigquery.source import source_for_table
from ingest_platform.cdc.config import DEMO_TABLES, CdcConfig
from ingest_platform.cdc.pipeline import run_all
from ingest_platform.defs.analytics import SHIPPED_MODELS, build_analytics_definitions
from ingest_platform.defs.bigquery_mirror import (
    HASHES_CHECK,
    MirrorTranslator,
    build_cdc_mirror_definitions,
)
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.demo import cdc_app
from ingest_platform.errors import SchemaError
from ingest_platform.postgres.connection import ensure_database, with_database
from ingest_platform_tests.conftest import unique_name

pytestmark = pytest.mark.postgres

CONFIG = CdcConfig(tables=DEMO_TABLES)
D27, D28 = dt.date(2026, 11, 27), dt.date(2026, 11, 28)
# The change log's ids in a fresh source follow the order of the writes below.
WHEN = {
    1: "2026-11-27 10:00:00+00",  # project 1 added
    2: "2026-11-27 11:00:00+00",  # project 2 added
    3: "2026-11-27 23:30:00+00",  # inventory 1 added (already the 28th east of UTC)
    4: "2026-11-28 09:00:00+00",  # project 1 changed
    5: "2026-11-28 12:00:00+00",  # project 2 deleted
    6: "2026-11-28 13:00:00+00",  # inventory 1 changed (merged by a second run)
}
CHANGES_PER_DAY = [
    (D27, "inventory", "added", 1),
    (D27, "project", "added", 2),
    (D28, "inventory", "changed", 1),
    (D28, "project", "changed", 1),
    (D28, "project", "deleted", 1),
]


@pytest.fixture
def source_dsn(pg_server_dsn):
    database = unique_name("cdcsrc")
    ensure_database(pg_server_dsn, database)
    dsn = with_database(pg_server_dsn, database)
    cdc_app.create_demo_source(dsn)
    yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def dated(conn, ids):
    for change_id in ids:
        conn.execute(
            "UPDATE models_logging_change SET date_created = %s WHERE id = %s",
            (WHEN[change_id], change_id),
        )


def mirror_histories(conn, client, resource, prefix):
    """Every change history to `<prefix>cdc.<table>__changes`, as the mirror assets do."""
    for table in CONFIG.tables:
        source = source_for_table(conn, "cdc", table.changes_table)
        target = MirrorTarget(client.project, prefix + "cdc", table.changes_table)
        ensure_dataset(client, target.project, target.dataset)
        ensure_mirror_table(client, target, source.columns)
        with resource.get_write_client() as write_client:
            mirror_changes(
                conn,
                client,
                write_client,
                source,
                target,
                change_column="_change_id",
                stamp_column="_mirrored_at",
            )


@pytest.fixture
def histories(source_dsn, pg_dsn, bigquery_resource):
    """Six changes in two CDC runs, each run's histories mirrored; (dsn, prefix, mirror times)."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        with conn.transaction():
            writer = cdc_app.ChangeWriter(conn)
            p1 = writer.add("project", {"code": "P1", "name": "one"})
            p2 = writer.add("project", {"code": "P2", "name": "two"})
            i1 = writer.add("inventory", {"project_id": p1, "sku": "S1"})
            writer.change("project", p1, {"name": "uno"})
            writer.delete("project", p2)
        dated(conn, range(1, 6))
    with (
        psycopg.connect(pg_dsn, autocommit=True) as conn,
        bigquery_resource.get_client() as client,
    ):
        before = dt.datetime.now(dt.UTC)
        run_all(source_dsn, pg_dsn, CONFIG)
        mirror_histories(conn, client, bigquery_resource, prefix)
        with psycopg.connect(source_dsn, autocommit=True) as source:
            cdc_app.ChangeWriter(source).change("inventory", i1, {"quantity": 5})
            dated(source, [6])
        run_all(source_dsn, pg_dsn, CONFIG)
        mirror_histories(conn, client, bigquery_resource, prefix)
        after = dt.datetime.now(dt.UTC)
    return pg_dsn, prefix, (before, after)


def shipped(name: str):
    return read_model(SHIPPED_MODELS / f"{name}.sql")


def bq_rows(client, table_id: str) -> list[tuple]:
    ref = "`" + table_id.replace(".", "`.`") + "`"
    query = f"SELECT * FROM {ref} ORDER BY day, table_name, action"
    return [tuple(r.values()) for r in client.query(query)]


def test_the_merges_keep_every_change_once_and_the_mirror_stamps_its_arrival(
    histories, bigquery_resource
):
    dsn, prefix, (before, after) = histories
    with psycopg.connect(dsn) as conn:
        history = conn.execute(
            "SELECT _change_id, _action, object_id, changed_at, merged_at IS NOT NULL, "
            "_mirrored_at FROM cdc.project__changes ORDER BY 1"
        ).fetchall()
    assert [(i, a, o, m, s) for i, a, o, _, m, s in history] == [
        (1, "added", "1", True, None),
        (2, "added", "2", True, None),
        (4, "changed", "1", True, None),
        (5, "deleted", "2", True, None),
    ]
    with bigquery_resource.get_client() as client:
        stamps = list(
            client.query(
                f"SELECT _change_id, _mirrored_at FROM `{client.project}.{prefix}cdc."
                "inventory__changes` ORDER BY 1"
            )
        )
    assert [r[0] for r in stamps] == [3, 6]
    # Stamped once, when the MERGE inserted the row; the second run's MERGE left row 3's stamp.
    assert all(before <= r[1] <= after for r in stamps), stamps
    assert stamps[0][1] < stamps[1][1]


def test_changes_per_day_by_action_as_computed_by_hand_and_proved(histories, bigquery_resource):
    dsn, prefix, _ = histories
    model = shipped("cdc_changes_per_day")
    # A session east of UTC: the model's days stay UTC days (inventory's 23:30 is the 27th).
    with (
        psycopg.connect(dsn, autocommit=True, options="-c TimeZone=Asia/Tokyo") as conn,
        bigquery_resource.get_client() as client,
    ):
        check_sources(conn, client, model, prefix)
        run = materialize(client, model, prefix)
        assert bq_rows(client, run.table_id) == CHANGES_PER_DAY
        comparison = prove(conn, client, model, run.table_id)
        assert comparison.passed, comparison.markdown()

        # A change lost on the way to BigQuery: the proof names its day, table and action.
        client.query(
            f"DELETE FROM `{client.project}.{prefix}cdc.project__changes` WHERE _change_id = 4"
        ).result()
        run = materialize(client, model, prefix)
        comparison = prove(conn, client, model, run.table_id)
    assert not comparison.passed
    keys = {tuple(d.key.values()) for d in comparison.differences}
    assert keys == {(D28.isoformat(), "project", "changed")}, comparison.markdown()


def test_mirror_lag_per_day_as_computed_by_hand_and_its_counts_proved(histories, bigquery_resource):
    dsn, prefix, _ = histories
    model = shipped("cdc_mirror_lag")
    assert model.unproved == ("mirrored", "avg_lag_seconds", "max_lag_seconds")
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        # Arrival times by hand: change n reached BigQuery 10 * n seconds after it was made.
        for table in ("project", "inventory"):
            client.query(
                f"UPDATE `{client.project}.{prefix}cdc.{table}__changes` "
                "SET _mirrored_at = TIMESTAMP_ADD(changed_at, INTERVAL _change_id * 10 SECOND) "
                "WHERE TRUE"
            ).result()
        run = materialize(client, model, prefix)
        assert bq_rows(client, run.table_id) == [
            (D27, "inventory", "added", 1, 1, 30.0, 30.0),
            (D27, "project", "added", 2, 2, 15.0, 20.0),
            (D28, "inventory", "changed", 1, 1, 60.0, 60.0),
            (D28, "project", "changed", 1, 1, 40.0, 40.0),
            (D28, "project", "deleted", 1, 1, 50.0, 50.0),
        ]
        # PostgreSQL has no arrival times (its lag is NULL): the proof compares the counts.
        comparison = prove(conn, client, model, run.table_id)
        assert comparison.passed, comparison.markdown()
        client.query(
            f"DELETE FROM `{client.project}.{prefix}cdc.project__changes` WHERE _change_id = 1"
        ).result()
        run = materialize(client, model, prefix)
        assert not prove(conn, client, model, run.table_id).passed


def test_dagster_mirrors_the_histories_and_the_model_reads_them(
    source_dsn, pg_dsn, bigquery_resource, tmp_path
):
    """The change histories' mirror assets (histories=True) stamp their rows and pass their
    checks; the model's asset depends on them (found in its SQL) and its proof passes."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    with psycopg.connect(source_dsn, autocommit=True) as conn, conn.transaction():
        writer = cdc_app.ChangeWriter(conn)
        p1 = writer.add("project", {"code": "P1", "name": "one"})
        writer.change("project", p1, {"name": "uno"})
    run_all(source_dsn, pg_dsn, CONFIG)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(SHIPPED_MODELS / "cdc_changes_per_day.sql", models)
    defs = dg.Definitions.merge(
        build_cdc_mirror_definitions(
            CONFIG.tables, translator=MirrorTranslator(prefix=prefix), histories=True
        ),
        build_analytics_definitions(models, prefix),
        dg.Definitions(
            resources={"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
        ),
    )
    model = dg.AssetKey(["analytics", "cdc_changes_per_day"])
    histories = [dg.AssetKey(["bigquery", "cdc", t.changes_table]) for t in CONFIG.tables]
    graph = defs.resolve_asset_graph()
    assert set(graph.get(model).parent_keys) == set(histories)
    assert graph.get(histories[0]).parent_keys == {dg.AssetKey(["cdc", "project"])}
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[*histories, model]
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks), [(c.asset_key, c.check_name) for c in checks]
    assert {c.asset_key for c in checks if c.check_name == HASHES_CHECK} == set(histories)
    with bigquery_resource.get_client() as client:
        [row] = client.query(
            f"SELECT COUNT(*), COUNTIF(_mirrored_at IS NULL) FROM "
            f"`{client.project}.{prefix}cdc.project__changes`"
        )
        assert tuple(row.values()) == (2, 0)


def test_a_history_without_the_stamp_column_is_refused_naming_it(pg_dsn, bigquery_resource):
    with psycopg.connect(pg_dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        conn.execute("CREATE SCHEMA cdc")
        conn.execute("CREATE TABLE cdc.x__changes (_change_id bigint PRIMARY KEY, _action text)")
        conn.execute("INSERT INTO cdc.x__changes VALUES (1, 'added')")
        source = source_for_table(conn, "cdc", "x__changes")
        target = MirrorTarget(client.project, f"t{uuid.uuid4().hex[:8]}_cdc", "x__changes")
        ensure_dataset(client, target.project, target.dataset)
        ensure_mirror_table(client, target, source.columns)
        with (
            bigquery_resource.get_write_client() as write_client,
            pytest.raises(SchemaError) as error,
        ):
            mirror_changes(
                conn, client, write_client, source, target,
                change_column="_change_id", stamp_column="_mirrored_at",
            )  # fmt: skip
        assert str(error.value).startswith('cdc.x__changes: column "_mirrored_at" is missing')
        assert list(client.query(f"SELECT COUNT(*) FROM `{target.table_id}`"))[0][0] == 0
