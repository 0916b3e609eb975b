"""Distinct BigQuery names for PostgreSQL tables and columns that BigQuery would confuse."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingest_platform.bigquery.mirror import MirrorTarget, dump_source
from ingest_platform.bigquery.types import bq_column_names, bq_table_names
from ingest_platform.consistency.compare import (
    BigQuerySide,
    PostgresSide,
    compare_counts,
    compare_hashes,
)
from ingest_platform.defs.bigquery_mirror import (
    COUNTS_CHECK,
    HASHES_CHECK,
    MirrorTranslator,
    build_mirror_definitions,
)
from ingest_platform.defs.resources import PostgresResource
from ingest_platform.dumps.directory import DumpCatalog, DumpFile
from ingest_platform.errors import SchemaError
from ingest_platform_tests.bigquery.helpers import make_dump_table

PAIRS = [("1x", "_1x"), ("Item", "item"), ("a b", "a_b")]


@pytest.mark.parametrize("pair", PAIRS)
def test_table_names_are_distinct_even_without_case(pair):
    names = bq_table_names(pair)
    assert len({n.lower() for n in names.values()}) == 2, names
    assert names == bq_table_names(reversed(pair))  # stable: the order does not matter


def test_names_that_fit_are_kept_and_the_others_hashed():
    names = bq_table_names(["_1x", "1x", "item", "Item", "orders", "Orders2"])
    assert names["_1x"] == "_1x" and names["item"] == "item" and names["Orders2"] == "Orders2"
    assert names["1x"].startswith("_1x_") and names["Item"].startswith("Item_")


def test_column_names_are_distinct():
    assert bq_column_names(["Odd Name", "Odd_Name", "odd_name"]) == [
        "Odd_Name",
        "Odd_Name_2",
        "odd_name_3",
    ]


def test_a_remaining_collision_is_refused_at_definition_time():
    """A table literally named like another's hashed form would share its BigQuery table."""
    taken = bq_table_names(["a b"])["a b"]
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("s_1.zip"), app="s", version="1", tables=["a b", taken])]
    )
    with pytest.raises(SchemaError) as raised:
        build_mirror_definitions(catalog, MirrorTranslator(prefix="p_"))
    message = str(raised.value)
    assert "\n" not in message and "'a b'" in message and repr(taken) in message
    assert "BigQuery dataset p_s" in message


def test_colliding_looking_tables_each_mirror_to_their_own(pg_dsn, bigquery_resource, bq_dataset):
    """`1x`/`_1x`, `Item`/`item`, `a b`/`a_b`: all six mirrored, every check green, and each
    BigQuery table holds its own table's rows (one row naming the PostgreSQL table)."""
    tables = [name for pair in PAIRS for name in pair]
    with psycopg.connect(pg_dsn) as conn:
        for table in tables:
            make_dump_table(
                conn, "shop", table, [("id", "integer"), ("origin", "text")],
                {"1.0": [(1, table)]}, ["id"],
            )  # fmt: skip
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("shop_1.0.zip"), app="shop", version="1.0", tables=tables)]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix=bq_dataset + "_"))
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shop_versions", ["1.0"])
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.groups("shop_bigquery"),
        partition_key="1.0",
        resources=resources,
        instance=instance,
    )
    assert result.success
    evaluations = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name in (COUNTS_CHECK, HASHES_CHECK)
    ]
    assert len(evaluations) == 2 * len(tables) and all(e.passed for e in evaluations)
    names = bq_table_names(tables)
    with bigquery_resource.get_client() as client:
        for table in tables:
            ref = f"`{bq_dataset}_shop.{names[table]}`"
            rows = [tuple(r) for r in client.query(f"SELECT origin FROM {ref}").result()]
            assert rows == [(table,)], (table, names[table])
        client.delete_dataset(f"{bq_dataset}_shop", delete_contents=True)


HOSTILE = ["%s", "%(x)s", 'a"b', "Robert'); DROP TABLE x;--", "kunde_ü_客户"]


def test_hostile_column_names_mirror_and_check(pg_dsn, bigquery_resource, bq_dataset):
    """Columns named `%s`, `%(x)s`, ... mirror, their checks pass, and a difference in such a
    column is found and named (the checks' bisection statements run too)."""
    columns = [("id", "integer")] + [(name, "text") for name in HOSTILE]
    rows = [(i, *(f"{name}-{i}" for name in HOSTILE)) for i in range(1, 4)]
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(conn, "shop", "odd", columns, {"1.0": rows}, ["id"])
    catalog = DumpCatalog(
        dumps=[DumpFile(path=Path("shop_1.0.zip"), app="shop", version="1.0", tables=["odd"])]
    )
    defs = build_mirror_definitions(catalog, MirrorTranslator(prefix=bq_dataset + "_"))
    resources = {"postgres": PostgresResource(dsn=pg_dsn), "bigquery": bigquery_resource}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shop_versions", ["1.0"])
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.groups("shop_bigquery"),
        partition_key="1.0",
        resources=resources,
        instance=instance,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks[COUNTS_CHECK].passed and checks[HASHES_CHECK].passed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute('UPDATE shop."odd__v1.0" SET "%s" = \'changed\' WHERE id = 2')
    with psycopg.connect(pg_dsn) as conn, bigquery_resource.get_client() as client:
        source = dump_source(conn, "shop", "odd", "1.0", bignumeric=False)
        target = MirrorTarget(client.project, f"{bq_dataset}_shop", "odd")
        hashes = compare_hashes(
            PostgresSide(conn, source), BigQuerySide(client, target.ref, source)
        )
        counts = compare_counts(
            PostgresSide(conn, source), BigQuerySide(client, target.ref, source)
        )
    assert counts.passed and not hashes.passed
    assert [d.key for d in hashes.differences] == [{"_version": "1.0", "id": "2"}]
    assert "%s" in hashes.differences[0].detail, hashes.differences[0].detail
    with bigquery_resource.get_client() as client:
        client.delete_dataset(f"{bq_dataset}_shop", delete_contents=True)
