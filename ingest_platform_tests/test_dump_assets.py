"""The dump pipeline through Dagster: generated assets, the sensor, the I/O manager, the checks."""

from __future__ import annotations

import os
import shutil
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ingest_platform.defs.dumps import (
    COLUMNS_CHECK,
    KEY_CHECK,
    ROWS_CHECK,
    DumpTable,
    DumpTranslator,
    build_dump_definitions,
    evaluate_dump_directory,
    failure_message,
    run_request_for,
)
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.demo.dumps import write_demo_dumps
from ingest_platform.dumps.directory import describe_dump, scan_dump_dir
from ingest_platform.errors import DumpError
from ingest_platform.io_managers.multiprocess_copy import MultiprocessCopyIOManager
from ingest_platform.postgres.quarantine import QUARANTINE_TABLE

TRANSLATOR = DumpTranslator()


@pytest.fixture(scope="module")
def demo_dumps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dumps")
    write_demo_dumps(directory, rows=300)
    return directory


def dump_definitions(directory, pg_dsn="host=unused", translator=None) -> dg.Definitions:
    return dg.Definitions.merge(
        build_dump_definitions(scan_dump_dir(directory), translator),
        dg.Definitions(
            resources={
                "postgres": PostgresResource(dsn=pg_dsn),
                "dump_copy_io_manager": MultiprocessCopyIOManager(dsn=pg_dsn, processes=2),
            }
        ),
    )


def run_dump(defs: dg.Definitions, instance, dump) -> dg.ExecuteInProcessResult:
    """What the sensor's run request does, executed in this process."""
    request = run_request_for(dump, TRANSLATOR)
    instance.add_dynamic_partitions(TRANSLATOR.partitions_def(dump.app).name, [dump.version])
    return defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        asset_selection=list(request.asset_selection),
        raise_on_error=False,
    )


def test_assets_are_generated_per_application_table(demo_dumps):
    defs = dump_definitions(demo_dumps)
    dg.Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert keys == {
        dg.AssetKey(["dumps", "shop", t])
        for t in ("customer", "orders", "order_item", QUARANTINE_TABLE)
    }
    assert defs.resolve_job_def("ingest_shop_dump").partitions_def.name == "shop_versions"


def test_versions_load_through_dagster_with_metadata_and_passing_checks(demo_dumps, pg_dsn):
    defs = dump_definitions(demo_dumps, pg_dsn)
    by_version = {d.version: d for d in scan_dump_dir(demo_dumps).dumps}
    with dg.DagsterInstance.ephemeral() as instance:
        for version in ("1.0-eu", "2.0-eu", "1.0-us", "2.0-us"):
            result = run_dump(defs, instance, by_version[version])
            assert result.success, version
            checks = {
                (c.asset_key.path[-1], c.check_name): c.passed
                for c in result.get_asset_check_evaluations()
                if c.check_name != "column_schema_change"  # warns on 2.0: its test is below
            }
            assert checks and all(checks.values()), checks
            assert (("orders", ROWS_CHECK) in checks) and (("orders", COLUMNS_CHECK) in checks)
        orders = instance.get_latest_materialization_event(dg.AssetKey(["dumps", "shop", "orders"]))
        metadata = orders.asset_materialization.metadata
        assert metadata["rows"].value == 300
        assert metadata["child_table"].value == "shop.orders__v2.0-us"
        assert metadata["rows_per_second"].value > 0

    with psycopg.connect(pg_dsn) as conn:
        assert dict(
            conn.execute("SELECT _version, count(*) FROM shop.orders GROUP BY 1").fetchall()
        ) == {"1.0-eu": 300, "2.0-eu": 300, "1.0-us": 300, "2.0-us": 300}
        # version 2.0 added customer.country: older versions read NULL there
        assert conn.execute(
            "SELECT count(*) FROM shop.customer WHERE country IS NOT NULL AND _version LIKE '1.0%'"
        ).fetchone() == (0,)
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'shop' AND table_name = 'orders'"
            ).fetchall()
        )
        assert types["id"] == "bigint"  # widened by version 2.0


def test_sensor_waits_for_complete_files_then_requests_each_dump_once(demo_dumps, tmp_path):
    directory = tmp_path / "incoming"
    directory.mkdir()
    shutil.copy(demo_dumps / "shop_1.0-eu.zip", directory)
    known = {"shop": {"customer", "orders"}}
    log = dg.get_dagster_logger()

    first = evaluate_dump_directory(None, directory, known, TRANSLATOR, log, settle_seconds=0)
    assert first.run_requests == []  # seen once: it may still be being copied
    second = evaluate_dump_directory(
        first.cursor, directory, known, TRANSLATOR, log, settle_seconds=0
    )
    [request] = second.run_requests
    assert request.partition_key == "1.0-eu"
    assert set(request.asset_selection) == {
        TRANSLATOR.asset_key("shop", "customer"),
        TRANSLATOR.asset_key("shop", "orders"),
        TRANSLATOR.get_quarantine_spec("shop").key,  # reports what the version quarantined
    }
    assert second.dynamic_partitions_requests[0].partition_keys == ["1.0-eu"]
    third = evaluate_dump_directory(
        second.cursor, directory, known, TRANSLATOR, log, settle_seconds=0
    )
    assert (
        third.run_requests == []
    )  # the cursor remembers it, also after a restart (it is all in the cursor)


def test_sensor_asks_for_a_reload_when_a_dump_brings_a_new_table(demo_dumps, tmp_path):
    directory = tmp_path / "incoming"
    directory.mkdir()
    shutil.copy(demo_dumps / "shop_2.0-eu.zip", directory)  # brings order_item
    known = {"shop": {"customer", "orders"}}
    log = dg.get_dagster_logger()
    first = evaluate_dump_directory(None, directory, known, TRANSLATOR, log, settle_seconds=0)
    second = evaluate_dump_directory(
        first.cursor, directory, known, TRANSLATOR, log, settle_seconds=0
    )
    assert second.run_requests == []
    assert (
        "order_item" in second.skip_reason.skip_message
        and "Reload" in second.skip_reason.skip_message
    )
    reloaded = evaluate_dump_directory(
        second.cursor,
        directory,
        {"shop": {"customer", "orders", "order_item"}},
        TRANSLATOR,
        log,
        settle_seconds=0,
    )
    [request] = reloaded.run_requests
    assert TRANSLATOR.asset_key("shop", "order_item") in request.asset_selection


def test_a_failed_version_leaves_earlier_versions_and_shows_nothing(demo_dumps, pg_dsn, tmp_path):
    defs = dump_definitions(demo_dumps, pg_dsn)
    good = describe_dump(demo_dumps / "shop_1.0-eu.zip")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_dump(defs, instance, good).success
        broken_path = tmp_path / "shop_1.0-eu.zip"
        broken_path.write_bytes((demo_dumps / "shop_1.0-eu.zip").read_bytes()[:-200])  # truncated
        with pytest.raises(DumpError):
            describe_dump(broken_path)
        broken = type(good)(broken_path, good.app, "9.9-eu", good.tables)
        result = run_dump(defs, instance, broken)
    assert not result.success
    message = failure_message(result.get_step_failure_events()[0])
    assert "shop_1.0-eu.zip" in message
    with psycopg.connect(pg_dsn) as conn:
        assert dict(
            conn.execute("SELECT _version, count(*) FROM shop.orders GROUP BY 1").fetchall()
        ) == {"1.0-eu": 300}


def test_a_dump_waiting_for_a_reload_is_not_read_again(demo_dumps, tmp_path):
    # The sensor keeps what it read in its cursor: an encrypted dump is not decrypted every tick.
    directory = tmp_path / "incoming"
    directory.mkdir()
    path = directory / "shop_2.0-eu.zip"
    shutil.copy(demo_dumps / "shop_2.0-eu.zip", path)
    known = {"shop": {"customer", "orders"}}
    log = dg.get_dagster_logger()
    first = evaluate_dump_directory(None, directory, known, TRANSLATOR, log, settle_seconds=0)
    second = evaluate_dump_directory(
        first.cursor, directory, known, TRANSLATOR, log, settle_seconds=0
    )
    assert second.run_requests == []
    stat = path.stat()
    path.write_bytes(b"\0" * stat.st_size)  # unreadable now, same size and mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reloaded = evaluate_dump_directory(
        second.cursor,
        directory,
        {"shop": {"customer", "orders", "order_item"}},
        TRANSLATOR,
        log,
        settle_seconds=0,
    )
    [request] = reloaded.run_requests
    assert request.partition_key == "2.0-eu"
    assert TRANSLATOR.asset_key("shop", "order_item") in request.asset_selection


def test_a_run_launched_without_tags_loads_the_listed_file(demo_dumps, pg_dsn, tmp_path):
    # A run launched from the UI has no dump path tag: the listing loaded with the definitions
    # maps (app, version) to the file; a version it does not list fails with advice.
    defs = dump_definitions(demo_dumps, pg_dsn)
    job = defs.resolve_job_def("ingest_shop_dump")
    orders = [TRANSLATOR.asset_key("shop", "orders")]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shop_versions", ["1.0-eu", "7.0-eu"])
        # One table of a version never loaded: staged, not visible, and its checks say why.
        alone = job.execute_in_process(
            instance=instance, partition_key="1.0-eu", asset_selection=orders, raise_on_error=False
        )
        assert not alone.success
        [rows_check] = [
            e for e in alone.get_asset_check_evaluations() if e.check_name == "rows_match_file"
        ]
        description = rows_check.description or ""
        assert "loaded from shop_1.0-eu.zip (" in description and "but not visible" in description
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT to_regclass('shop.orders')").fetchone() == (None,)
        result = job.execute_in_process(instance=instance, partition_key="1.0-eu")
        assert result.success
        # Once the version is visible, one table of it reloads from the same dump on its own.
        again = job.execute_in_process(
            instance=instance, partition_key="1.0-eu", asset_selection=orders, raise_on_error=False
        )
        assert again.success
        missing = job.execute_in_process(
            instance=instance,
            partition_key="7.0-eu",
            asset_selection=orders,
            raise_on_error=False,
        )
    assert not missing.success
    assert "reload the code location" in failure_message(missing.get_step_failure_events()[0])
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM shop.orders WHERE _version = '1.0-eu'"
        ).fetchone() == (300,)


class OwnedDumps(DumpTranslator):
    """A user's translator: one method overridden, the rest of the spec kept."""

    def get_asset_spec(self, record: DumpTable) -> dg.AssetSpec:
        return (
            super()
            .get_asset_spec(record)
            .replace_attributes(group_name="warehouse", owners=["team:data"])
            .merge_attributes(tags={"tier": "gold"})
        )


def test_a_user_translator_changes_the_whole_spec(demo_dumps):
    defs = dump_definitions(demo_dumps, translator=OwnedDumps())
    node = defs.resolve_asset_graph().get(dg.AssetKey(["dumps", "shop", "orders"]))
    assert node.group_name == "warehouse" and node.owners == ["team:data"]
    assert node.tags["tier"] == "gold" and node.tags["ingest/app"] == "shop"
    assert node.partitions_def.name == "shop_versions" and "postgres" in node.kinds


def test_no_dumps_yet_says_how_to_get_some(tmp_path):
    defs = build_dump_definitions(scan_dump_dir(tmp_path))
    [spec] = defs.resolve_all_asset_specs()
    assert "ingest-platform demo-dumps" in spec.description


def test_standard_metadata_and_partitioned_checks_run_on_their_own(demo_dumps, pg_dsn):
    secret_dsn = pg_dsn + " password=s3cret-pw"  # trust auth ignores it; it must not leak
    defs = dump_definitions(demo_dumps, secret_dsn)
    dump = describe_dump(demo_dumps / "shop_1.0-eu.zip")
    orders = dg.AssetKey(["dumps", "shop", "orders"])
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_dump(defs, instance, dump).success
        event = instance.get_latest_materialization_event(orders)
        metadata = event.asset_materialization.metadata
        assert metadata["dagster/row_count"].value == 300
        assert metadata["dagster/table_name"].value == "shop.orders"
        host = conninfo_to_dict(pg_dsn)["host"]  # a TCP host, or the embedded server's socket dir
        assert metadata["dagster/uri"].value.startswith(f"postgresql://{quote(str(host), safe='')}")
        assert metadata["dagster/uri"].value.endswith("/shop.orders")
        columns = {c.name: c for c in metadata["dagster/column_schema"].value.columns}
        assert columns["id"].type == "integer" and columns["id"].constraints.nullable
        assert "s3cret" not in repr(metadata)
        assert isinstance(metadata["rows_per_second"], dg.FloatMetadataValue)

        # Rows changed behind the platform's back: the check, run on its own, finds it.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM shop.orders WHERE _version = '1.0-eu' AND id < 4")
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection=set(),
            asset_check_selection={
                dg.AssetCheckKey(orders, ROWS_CHECK),
                dg.AssetCheckKey(orders, COLUMNS_CHECK),
                dg.AssetCheckKey(orders, KEY_CHECK),
            },
        )
        checked = job.execute_in_process(
            instance=instance, partition_key="1.0-eu", raise_on_error=False
        )
        [evaluation] = [
            e for e in checked.get_asset_check_evaluations() if e.check_name == ROWS_CHECK
        ]
        assert not evaluation.passed and evaluation.partition == "1.0-eu"
        # The resync: materialize the partition again (the UI's Materialize, or the CLI's ingest).
        assert run_dump(defs, instance, dump).success
        again = job.execute_in_process(instance=instance, partition_key="1.0-eu")
        assert all(e.passed for e in again.get_asset_check_evaluations())


def test_a_failed_blocking_check_stops_the_mirror_in_the_same_run(demo_dumps, pg_dsn):
    defs = dump_definitions(demo_dumps, pg_dsn)
    dump = describe_dump(demo_dumps / "shop_1.0-eu.zip")
    orders = dg.AssetKey(["dumps", "shop", "orders"])
    mirrored = []

    @dg.asset(
        key=["bigquery", "shop", "orders"],
        deps=[orders],
        partitions_def=(TRANSLATOR.partitions_def("shop")),
    )
    def mirror():
        mirrored.append(True)

    defs = dg.Definitions.merge(defs, dg.Definitions(assets=[mirror]))
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shop_versions", ["1.0-eu"])
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            partition_key="1.0-eu",
            tags=run_request_for(dump, TRANSLATOR).tags,
            asset_selection=[*run_request_for(dump, TRANSLATOR).asset_selection, mirror.key],
            raise_on_error=False,
        )
        assert result.success and mirrored == [True]  # a good load: the mirror runs
        mirrored.clear()
        # The next load goes wrong: every new orders child table drops the row with id 1.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION public.drop_one() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN IF NEW.id = 1 THEN RETURN NULL; END IF; RETURN NEW; END$$"
            )
            conn.execute(
                "CREATE FUNCTION public.add_drop_one() RETURNS event_trigger LANGUAGE plpgsql AS "
                "$$DECLARE t record; BEGIN FOR t IN SELECT * FROM "
                "pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP "
                "IF t.object_identity LIKE 'shop.\"orders__v%' THEN EXECUTE format("
                "'CREATE TRIGGER drop_one BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION "
                "public.drop_one()', t.object_identity); END IF; END LOOP; END$$"
            )
            conn.execute(
                "CREATE EVENT TRIGGER add_drop_one ON ddl_command_end "
                "EXECUTE FUNCTION public.add_drop_one()"
            )
        try:
            result = job.execute_in_process(
                instance=instance,
                partition_key="1.0-eu",
                tags=run_request_for(dump, TRANSLATOR).tags,
                asset_selection=[orders, mirror.key],
                raise_on_error=False,
            )
        finally:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("DROP EVENT TRIGGER add_drop_one")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[ROWS_CHECK] is False
    assert mirrored == []  # the blocking check stopped the mirror


def test_schema_change_check_reports_a_version_that_adds_a_column(demo_dumps, pg_dsn):
    """`column_schema_change` compares the parent's column schema of the last two loads."""
    defs = dump_definitions(demo_dumps, pg_dsn)
    by_version = {d.version: d for d in scan_dump_dir(demo_dumps).dumps}
    customer = dg.AssetKey(["dumps", "shop", "customer"])
    check = dg.AssetCheckKey(customer, "column_schema_change")
    assert check in defs.resolve_asset_graph().asset_check_keys
    with dg.DagsterInstance.ephemeral() as instance:
        evaluations = {}
        for version in ("1.0-eu", "2.0-eu", "2.0-us"):
            result = run_dump(defs, instance, by_version[version])
            assert result.success, version
            evaluations[version] = {
                (e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()
            }
        first = evaluations["1.0-eu"][(customer, "column_schema_change")]
        assert first.passed  # one load: nothing to compare with
        changed = evaluations["2.0-eu"][(customer, "column_schema_change")]
        assert not changed.passed and changed.severity == dg.AssetCheckSeverity.WARN
        assert "Added columns: country" in changed.description
        same = evaluations["2.0-us"][(customer, "column_schema_change")]
        assert same.passed, same.description


def test_a_version_without_a_table_is_not_a_missing_partition_of_it(demo_dumps, pg_dsn):
    """Version 1.0 has no order_item: its runs record the partition with 0 rows (no failure, no
    child table), so after all versions nothing of order_item is Missing, and materializing a
    "missing" version of it (as the UI would, without the sensor's tags) succeeds."""
    defs = dump_definitions(demo_dumps, pg_dsn)
    app_tables = scan_dump_dir(demo_dumps).tables_by_app()["shop"]
    order_item = dg.AssetKey(["dumps", "shop", "order_item"])
    versions = ("1.0-eu", "2.0-eu", "1.0-us", "2.0-us")
    by_version = {d.version: d for d in scan_dump_dir(demo_dumps).dumps}
    with dg.DagsterInstance.ephemeral() as instance:
        for version in versions:
            request = run_request_for(by_version[version], TRANSLATOR, app_tables=app_tables)
            assert order_item in request.asset_selection
            instance.add_dynamic_partitions("shop_versions", [version])
            result = defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance,
                partition_key=version,
                tags=request.tags,
                asset_selection=list(request.asset_selection),
                raise_on_error=False,
            )
            assert result.success, version
        assert instance.get_materialized_partitions(order_item) == set(versions)
        absent = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=order_item, asset_partitions=["1.0-eu"]), limit=1
        ).records[0]
        metadata = absent.asset_materialization.metadata
        assert metadata["dagster/row_count"].value == 0
        assert metadata["absent_in_version"].value is True

        # "Materialize missing" from the UI: a run without the sensor's tags, for a version
        # that lacks the table, succeeds and requests nothing that fails.
        again = defs.resolve_job_def("ingest_shop_dump").execute_in_process(
            instance=instance,
            partition_key="1.0-us",
            asset_selection=[order_item],
            raise_on_error=False,
        )
        assert again.success
    with psycopg.connect(pg_dsn) as conn:
        assert dict(
            conn.execute("SELECT _version, count(*) FROM shop.order_item GROUP BY 1").fetchall()
        ) == {"2.0-eu": 300, "2.0-us": 300}
