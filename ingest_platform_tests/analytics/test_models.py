"""Analytical models: files -> BigQuery (the emulator) -> proved against PostgreSQL (real)."""

import shutil
import uuid

import dagster as dg
import psycopg
import pytest

from ingest_platform.analytics.models import ModelError, load_models, read_model
from ingest_platform.analytics.run import check_sources, materialize, prove
from ingest_platform.bigquery.arrow_rows import ArrowBatchEncoder
from ingest_platform.bigquery.mirror import (
    MirrorTarget,
    ensure_dataset,
    ensure_mirror_table,
    write_source,
)
from ingest_platform.bigquery.source import source_for_table
from ingest_platform.bigquery.writer import PendingStreamWriter
from ingest_platform.defs.analytics import SHIPPED_MODELS, build_analytics_definitions
from ingest_platform.defs.resources import PostgresResource

pytestmark = pytest.mark.postgres

HR = """
CREATE SCHEMA hr;
CREATE TABLE hr.departments (id int PRIMARY KEY, department varchar(255));
CREATE TABLE hr.jobs (id int PRIMARY KEY, job varchar(255));
CREATE TABLE hr.hired_employees (id int PRIMARY KEY, name varchar(255), datetime timestamp,
    department_id int REFERENCES hr.departments, job_id int REFERENCES hr.jobs);
INSERT INTO hr.departments VALUES (1, 'Sales'), (2, 'Support'), (3, 'Staff');
INSERT INTO hr.jobs VALUES (1, 'Analyst'), (2, 'Engineer');
INSERT INTO hr.hired_employees VALUES
  (1, 'a', '2021-01-15 10:00', 1, 1),   -- Sales Analyst Q1
  (2, 'b', '2021-02-01 09:00', 1, 1),   -- Sales Analyst Q1
  (3, 'c', '2021-05-20 08:00', 1, 2),   -- Sales Engineer Q2
  (4, 'd', '2021-08-03 12:00', 1, 1),   -- Sales Analyst Q3
  (5, 'e', '2021-12-31 23:59', 2, 2),   -- Support Engineer Q4
  (6, 'f', '2020-12-31 23:59', 2, 2),   -- 2020: not counted
  (7, 'g', '2022-01-01 00:00', 3, 1),   -- 2022: not counted
  (8, 'h', '2021-11-11 11:00', 3, 1);   -- Staff Analyst Q4
"""

SHOP = """
CREATE SCHEMA shop;
CREATE TABLE shop.customer (id int, name text, country text, _version text NOT NULL);
INSERT INTO shop.customer VALUES
  (1, 'x', NULL, '1.0-eu'), (2, 'y', NULL, '1.0-eu'), (1, 'x', NULL, '1.0-us'),
  (1, 'x', 'DE', '2.0-eu'), (2, 'y', 'FR', '2.0-eu'), (3, 'z', 'DE', '2.0-eu'),
  (1, 'x', 'US', '2.0-us');
CREATE TABLE shop.orders (id bigint, customer_id int, _version text NOT NULL);
INSERT INTO shop.orders VALUES (1, 1, '1.0-eu'), (1, 1, '2.0-eu'), (2, 3, '2.0-eu');
CREATE TABLE shop.order_item (id bigint, order_id bigint, _version text NOT NULL);
INSERT INTO shop.order_item VALUES (1, 1, '2.0-eu'), (2, 2, '2.0-eu'), (3, 2, '2.0-us');
"""


@pytest.fixture
def warehouse(pg_dsn, bigquery_resource):
    """HR and shop tables in PostgreSQL, mirrored to BigQuery under a prefix of this test."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(HR)
        conn.execute(SHOP)
        with bigquery_resource.get_client() as client:
            for schema, table in [
                ("hr", "departments"),
                ("hr", "jobs"),
                ("hr", "hired_employees"),
                ("shop", "customer"),
                ("shop", "orders"),
                ("shop", "order_item"),
            ]:
                mirror(conn, client, bigquery_resource, prefix, schema, table)
    return pg_dsn, prefix


def mirror(conn, client, resource, prefix, schema, table):
    key = ["id"] if schema == "hr" else ["id", "_version"]
    source = source_for_table(conn, schema, table, key)
    target = MirrorTarget(client.project, prefix + schema, table)
    ensure_dataset(client, target.project, target.dataset)
    ensure_mirror_table(client, target, source.columns)
    encoder = ArrowBatchEncoder(source)
    with (
        resource.get_write_client() as write_client,
        PendingStreamWriter(write_client, target.path, encoder.schema) as writer,
    ):
        write_source(conn, source, writer, encoder)
        writer.commit()


def rows(client, table_id: str, order: str) -> list[tuple]:
    ref = "`" + table_id.replace(".", "`.`") + "`"
    return [tuple(r.values()) for r in client.query(f"SELECT * FROM {ref} ORDER BY {order}")]


def shipped(name: str):
    return read_model(SHIPPED_MODELS / f"{name}.sql")


def test_worked_examples_answer_as_computed_by_hand_and_match_postgres(
    warehouse, bigquery_resource
):
    dsn, prefix = warehouse
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        expected = {
            "hires_2021_by_quarter": (
                "department, job",
                [
                    ("Sales", "Analyst", 2, 0, 1, 0),
                    ("Sales", "Engineer", 0, 1, 0, 0),
                    ("Staff", "Analyst", 0, 0, 0, 1),
                    ("Support", "Engineer", 0, 0, 0, 1),
                ],
            ),
            # 2021: Sales 4, Support 1, Staff 1; mean 2 -> Sales only.
            "departments_above_mean_2021": ("id", [(1, "Sales", 4)]),
            "shop_rows_per_version": (
                "table_name, version, region",
                [
                    ("customer", "1.0", "eu", 2),
                    ("customer", "1.0", "us", 1),
                    ("customer", "2.0", "eu", 3),
                    ("customer", "2.0", "us", 1),
                    ("order_item", "2.0", "eu", 2),
                    ("order_item", "2.0", "us", 1),
                    ("orders", "1.0", "eu", 1),
                    ("orders", "2.0", "eu", 2),
                ],
            ),
            # Version 1.0 has no country: its customers count under NULL.
            "shop_customers_per_country": (
                "region, version, country",
                [
                    ("eu", "1.0", None, 2),
                    ("eu", "2.0", "DE", 2),
                    ("eu", "2.0", "FR", 1),
                    ("us", "1.0", None, 1),
                    ("us", "2.0", "US", 1),
                ],
            ),
        }
        for name, (order, answer) in expected.items():
            model = shipped(name)
            check_sources(conn, client, model, prefix)
            run = materialize(client, model, prefix)
            assert run.rows == len(answer), name
            assert rows(client, run.table_id, order) == answer, name
            comparison = prove(conn, client, model, run.table_id)
            assert comparison.passed, (name, comparison.markdown())


HR_AT_SCALE = """
CREATE SCHEMA hr;
CREATE TABLE hr.departments (id int PRIMARY KEY, department varchar(255));
CREATE TABLE hr.jobs (id int PRIMARY KEY, job varchar(255));
CREATE TABLE hr.hired_employees (id int PRIMARY KEY, name varchar(255), datetime timestamp,
    department_id int REFERENCES hr.departments, job_id int REFERENCES hr.jobs);
INSERT INTO hr.departments SELECT n, 'Department ' || n FROM generate_series(1, 12) n;
INSERT INTO hr.jobs SELECT n, 'Job ' || n FROM generate_series(1, 40) n;
-- 4,000 hires over 2020-2022, deterministic, some without a department or job (NULL).
INSERT INTO hr.hired_employees
SELECT n, 'Person ' || n,
       timestamp '2020-01-01' + (n * 7919 % 1096) * interval '1 day' + (n % 86400) * interval '1 s',
       CASE WHEN n % 97 = 0 THEN NULL ELSE 1 + (n * 31 % 12) END,
       CASE WHEN n % 89 = 0 THEN NULL ELSE 1 + (n * 17 % 40) END
FROM generate_series(1, 4000) n;
"""


def test_the_hr_models_at_a_few_thousand_rows_agree_with_postgres(pg_dsn, bigquery_resource):
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(HR_AT_SCALE)
        with bigquery_resource.get_client() as client:
            for table in ("departments", "jobs", "hired_employees"):
                mirror(conn, client, bigquery_resource, prefix, "hr", table)
            for name in ("hires_2021_by_quarter", "departments_above_mean_2021"):
                model = shipped(name)
                run = materialize(client, model, prefix)
                assert run.rows > 0, name
                comparison = prove(conn, client, model, run.table_id)
                assert comparison.passed, (name, comparison.markdown())
            per_quarter = rows(client, run.table_id.replace(name, "hires_2021_by_quarter"), "1")
            hired_2021 = conn.execute(
                "SELECT count(*) FROM hr.hired_employees WHERE datetime >= '2021-01-01'"
                " AND datetime < '2022-01-01' AND department_id IS NOT NULL AND job_id IS NOT NULL"
            ).fetchone()
            assert sum(sum(r[2:]) for r in per_quarter) == hired_2021[0]  # type: ignore[index]
            client.delete_dataset(f"{prefix}hr", delete_contents=True)


def test_the_check_fails_naming_the_key_when_a_mirror_row_is_changed(warehouse, bigquery_resource):
    dsn, prefix = warehouse
    model = shipped("hires_2021_by_quarter")
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        # Hire 8 moved from Staff to Sales in the mirror only.
        client.query(
            f"UPDATE `{client.project}.{prefix}hr.hired_employees` SET department_id = 1 "
            "WHERE id = 8"
        ).result()
        run = materialize(client, model, prefix)
        comparison = prove(conn, client, model, run.table_id)
    assert not comparison.passed
    keys = {tuple(d.key.values()) for d in comparison.differences}
    assert keys == {("Staff", "Analyst"), ("Sales", "Analyst")}, comparison.markdown()


def test_a_failed_bigquery_run_keeps_the_previous_table(warehouse, bigquery_resource, tmp_path):
    dsn, prefix = warehouse
    path = tmp_path / "jobs_count.sql"
    path.write_text("-- grain: job\nSELECT job, count(*) AS n FROM hr.jobs GROUP BY job\n")
    with bigquery_resource.get_client() as client:
        run = materialize(client, read_model(path), prefix)
        assert run.rows == 2
        path.write_text("-- grain: job\nSELECT job, nosuchcolumn AS n FROM hr.jobs\n")
        with pytest.raises(ModelError) as error:
            materialize(client, read_model(path), prefix)
        assert str(path) in str(error.value)
        assert "previous table" in str(error.value) and "unchanged" in str(error.value)
        assert sorted(rows(client, run.table_id, "job")) == [("Analyst", 1), ("Engineer", 1)]


def test_a_table_missing_in_postgres_or_bigquery_is_named_with_its_line(
    warehouse, bigquery_resource, tmp_path
):
    dsn, prefix = warehouse
    path = tmp_path / "missing.sql"
    path.write_text(
        "-- grain: id\nSELECT d.id\nFROM hr.departments d\nJOIN hr.nope n ON n.id = d.id\n"
    )
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        with pytest.raises(ModelError, match=rf"{path}:4: table hr.nope is not in the warehouse"):
            check_sources(conn, client, read_model(path), prefix)
        conn.execute("CREATE TABLE hr.nope (id int)")
        with pytest.raises(ModelError, match=rf"{path}:4: hr.nope has no BigQuery mirror"):
            check_sources(conn, client, read_model(path), prefix)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT a,\n  FROM (\n", r"bad.sql:2: does not parse as PostgreSQL SQL"),
        (
            "-- grain: id\nSELECT id\nFROM departments\n",
            r"bad.sql:3: table 'departments' has no schema",
        ),
        ("SELECT generate_series(1, 3) FROM hr.jobs", r"bad.sql: .*GenerateSeries.*no translation"),
        ("SELECT id FROM hr.jobs FOR UPDATE", r"bad.sql: Locking reads.*no translation"),
        ("-- grian: id\nSELECT id FROM hr.jobs", r"bad.sql:1: unknown header key 'grian'"),
        (
            "-- materialized: cube\nSELECT id FROM hr.jobs",
            r"bad.sql:1: materialized is table or view",
        ),
        ("DELETE FROM hr.jobs", r"bad.sql:1: a model is one SELECT"),
    ],
)
def test_a_bad_model_is_one_line_naming_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.sql").write_text(text)
    (tmp_path / "good.sql").write_text("SELECT id FROM hr.jobs")
    models, errors = load_models(tmp_path)
    assert [m.name for m in models] == ["good"]
    assert len(errors) == 1 and "\n" not in str(errors[0])
    assert pytest.importorskip("re").search(message, str(errors[0])), str(errors[0])


def test_filter_clauses_become_bigquery_aggregates(tmp_path):
    path = tmp_path / "f.sql"
    path.write_text(
        "SELECT count(*) FILTER (WHERE id > 1) AS a, sum(id) FILTER (WHERE id < 5) AS b "
        "FROM hr.jobs"
    )
    statement = read_model(path).bigquery_sql("p", "x_")
    assert "COUNTIF(id > 1)" in statement
    assert "SUM(IF(id < 5, id, NULL))" in statement
    assert "`p`.`x_hr`.`jobs`" in statement
    assert "FILTER" not in statement


def test_dagster_assets_depend_on_the_mirrors_and_a_broken_model_stays_apart(
    warehouse, bigquery_resource, tmp_path
):
    dsn, prefix = warehouse
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(SHIPPED_MODELS / "departments_above_mean_2021.sql", models)
    (models / "broken.sql").write_text("SELECT FROM WHERE")
    resources = {"postgres": PostgresResource(dsn=dsn), "bigquery": bigquery_resource}
    defs = dg.Definitions.merge(
        build_analytics_definitions(models, prefix), dg.Definitions(resources=resources)
    )
    graph = defs.resolve_asset_graph()
    good = dg.AssetKey(["analytics", "departments_above_mean_2021"])
    assert set(graph.get(good).parent_keys) == {
        dg.AssetKey(["bigquery", "hr", "departments"]),
        dg.AssetKey(["bigquery", "hr", "hired_employees"]),
    }
    spec = graph.get(good)
    assert "`hr`.`hired_employees`".replace("hr", f"{prefix}hr") in str(
        spec.metadata["bigquery_sql"].value
    )
    assert spec.freshness_policy is not None and spec.automation_condition is not None
    broken = dg.AssetKey(["analytics", "broken"])
    assert "broken.sql:1: does not parse" in graph.get(broken).description

    assets = [defs.get_assets_def(good)]
    result = dg.materialize(assets, resources=resources, selection=[good])
    assert result.success
    [materialization] = result.asset_materializations_for_node(assets[0].node_def.name)
    assert materialization.metadata["dagster/row_count"].value == 1
    [check] = result.get_asset_check_evaluations()
    assert check.passed, check.metadata

    failed = dg.materialize(
        [defs.get_assets_def(broken)], resources=resources, raise_on_error=False
    )
    assert not failed.success
    failure = failed.get_step_failure_events()[0].step_failure_data.error
    assert "broken.sql:1: does not parse" in failure.message


def test_an_unproved_column_missing_from_the_result_is_named(
    warehouse, bigquery_resource, tmp_path
):
    dsn, prefix = warehouse
    path = tmp_path / "jobs_count.sql"
    path.write_text(
        "-- grain: job\n-- unproved: lag\nSELECT job, count(*) AS n FROM hr.jobs GROUP BY job\n"
    )
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        run = materialize(client, read_model(path), prefix)
        with pytest.raises(ModelError) as error:
            prove(conn, client, read_model(path), run.table_id)
    message = str(error.value)
    assert message.startswith(f"{path}: unproved column(s) lag are not in the result (job, n)")
    assert "\n" not in message
    # An unproved column is left out: a BigQuery-only difference in it does not fail the proof.
    path.write_text(
        "-- grain: job\n-- unproved: n\nSELECT job, count(*) AS n FROM hr.jobs GROUP BY job\n"
    )
    with psycopg.connect(dsn, autocommit=True) as conn, bigquery_resource.get_client() as client:
        run = materialize(client, read_model(path), prefix)
        client.query(f"UPDATE `{run.table_id}` SET n = 99 WHERE TRUE").result()
        assert prove(conn, client, read_model(path), run.table_id).passed
