"""The run-time descriptor and the `.proto` written by `ingest-platform proto`."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import psycopg
import pytest

from ingest_platform.bigquery.proto import row_descriptor
from ingest_platform.bigquery.types import map_column
from ingest_platform.errors import SchemaError
from ingest_platform.local.proto_command import register


def _parser():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), lambda message: None)
    return parser


def test_type_map():
    kinds = {
        t: (map_column("t", "c", t).bq_type, map_column("t", "c", t).kind)
        for t in [
            "smallint",
            "numeric(12,2)",
            "numeric(40,10)",
            "numeric",
            "money",
            "real",
            "boolean",
            "character varying(5)",
            "bytea",
            "date",
            "timestamp with time zone",
            "timestamp(3) without time zone",
            "time without time zone",
            "jsonb",
            "uuid",
            "text[]",
        ]
    }
    assert (
        kinds["numeric(12,2)"] == ("NUMERIC", "numeric")
        and kinds["numeric(40,10)"][0] == "BIGNUMERIC"
    )
    assert kinds["numeric"][0] == "BIGNUMERIC" and kinds["money"][0] == "NUMERIC"
    assert kinds["timestamp with time zone"] == ("TIMESTAMP", "timestamp")
    assert kinds["timestamp(3) without time zone"] == ("DATETIME", "datetime")
    assert (
        kinds["date"] == ("DATE", "date")
        and kinds["jsonb"] == ("JSON", "json")
        and kinds["uuid"][0] == "STRING"
    )
    assert (
        map_column("t", "c", "text[]").repeated
        and map_column("t", "c", "numeric", bignumeric=False).bq_type == "STRING"
    )
    with pytest.raises(SchemaError, match='"c"'):
        map_column("t", "c", "integer[][]")
    with pytest.raises(SchemaError, match="BIGNUMERIC"):
        map_column("t", "c", "numeric(80,2)")


def test_proto_command_writes_an_equivalent_proto(pg_dsn, tmp_path, monkeypatch):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            'CREATE SCHEMA shop; CREATE TABLE shop."order items" (id bigint, "unit price" '
            "numeric(10,2),"
            " at timestamptz, day date, tags text[], ok boolean)"
        )
    out = tmp_path / "items.proto"
    options = _parser().parse_args(["proto", "shop.order items", "-o", str(out), "--native-cdc"])
    assert options.run(options) == 0 if _set(monkeypatch, pg_dsn) else False
    text = out.read_text()
    assert 'syntax = "proto2";' in text and "message Order_itemsRow {" in text
    assert "optional int64 id = 1;" in text and "optional string unit_price = 2;" in text
    assert "optional int64 at = 3;" in text and "optional int32 day = 4;" in text
    assert "repeated string tags = 5;" in text and "optional bool ok = 6;" in text
    assert "optional string _CHANGE_TYPE = 7;" in text
    if shutil.which("protoc"):
        subprocess.run(
            ["protoc", f"--proto_path={tmp_path}", f"--python_out={tmp_path}", str(out)], check=True
        )


def _set(monkeypatch, dsn) -> bool:
    monkeypatch.setenv("INGEST_PG_DSN", dsn)
    return True


def test_descriptor_fields_follow_columns():
    columns = [
        map_column("t", n, t)
        for n, t in [("id", "bigint"), ("amount", "numeric(5,2)"), ("xs", "integer[]")]
    ]
    descriptor = row_descriptor("t", columns)
    assert [(f.name, f.number, f.label) for f in descriptor.field] == [
        ("id", 1, 1),
        ("amount", 2, 1),
        ("xs", 3, 3),
    ]
