"""The widening rules, as a table: (parent type, version type) -> the parent's new type or None."""

from __future__ import annotations

import pytest

from ingest_platform.postgres.type_widening import PgType, common_type, parse_pg_type


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("int", "integer"),
        ("INT4", "integer"),
        ("int8", "bigint"),
        ("int2", "smallint"),
        ("decimal(10,2)", "numeric(10,2)"),
        ("numeric(18)", "numeric(18,0)"),
        ("Numeric ( 10 , 2 )", "numeric(10,2)"),
        ("character varying(50)", "varchar(50)"),
        ("character(10)", "char(10)"),
        ("char", "char(1)"),
        ("bpchar", "bpchar"),
        ("float", "double precision"),
        ("float(10)", "real"),
        ("float8", "double precision"),
        ("timestamp(3) without time zone", "timestamp(3)"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamp(7)", "timestamp(6)"),
        ("time(3) with time zone", "timetz(3)"),
        ("bool", "boolean"),
        ("integer[]", "integer[]"),
        ("public.citext", "public.citext"),
        ("interval day to second", "interval day to second"),
    ],
)
def test_spellings_become_canonical(spelling, canonical):
    assert str(parse_pg_type(spelling)) == canonical


@pytest.mark.parametrize(
    "spelling", ['"char"', "int; DROP TABLE x", "int)--", "varchar(10", "text'"]
)
def test_unsafe_or_odd_spellings_are_refused(spelling):
    with pytest.raises(ValueError):
        parse_pg_type(spelling)


WIDENING = [
    # parent, version, result
    ("smallint", "integer", "integer"),
    ("integer", "bigint", "bigint"),
    ("bigint", "integer", "bigint"),  # narrower: no change
    ("smallint", "bigint", "bigint"),
    ("integer", "numeric(5,2)", "numeric(12,2)"),  # 10 integer digits + scale 2
    ("bigint", "numeric(20,0)", "numeric(20,0)"),
    ("numeric(10,2)", "numeric(12,4)", "numeric(12,4)"),
    ("numeric(12,2)", "numeric(10,4)", "numeric(14,4)"),  # max(p-s) + max(s)
    ("numeric(12,4)", "numeric(10,2)", "numeric(12,4)"),
    ("numeric(10,2)", "numeric", "numeric"),
    ("numeric(999,0)", "numeric(10,9)", "numeric"),  # over 1000 digits: unconstrained
    ("real", "double precision", "double precision"),
    ("double precision", "real", "double precision"),
    ("varchar(50)", "varchar(100)", "varchar(100)"),
    ("varchar(100)", "varchar(50)", "varchar(100)"),
    ("varchar(100)", "text", "text"),
    ("text", "varchar(10)", "text"),
    ("varchar(10)", "varchar", "varchar"),
    ("char(10)", "varchar(5)", "varchar(10)"),
    ("char(10)", "char(20)", "char(20)"),
    ("char(10)", "text", "text"),
    ("date", "timestamp", "timestamp"),
    ("timestamp(3)", "date", "timestamp(3)"),
    ("timestamp(3)", "timestamp(6)", "timestamp(6)"),
    ("timestamp(3)", "timestamp", "timestamp"),
    ("timestamptz(0)", "timestamptz(3)", "timestamptz(3)"),
    ("time(2)", "time(4)", "time(4)"),
    ("uuid", "uuid", "uuid"),
    # incompatible on purpose
    ("integer", "text", None),
    ("varchar(15)", "bigint", None),
    ("timestamp", "timestamptz", None),
    ("date", "timestamptz", None),
    ("bytea", "text", None),
    ("boolean", "integer", None),
    ("integer", "double precision", None),
    ("numeric(10,2)", "real", None),
    ("date", "text", None),
    ("integer[]", "bigint[]", None),
    ("jsonb", "json", None),
]


@pytest.mark.parametrize(("parent", "version", "result"), WIDENING)
def test_common_type(parent, version, result):
    common = common_type(parse_pg_type(parent), parse_pg_type(version))
    assert (str(common) if common else None) == result


@pytest.mark.parametrize(("a", "b", "result"), WIDENING)
def test_common_type_is_symmetric(a, b, result):
    assert common_type(parse_pg_type(a), parse_pg_type(b)) == common_type(
        parse_pg_type(b), parse_pg_type(a)
    )


def test_no_change_returns_the_parent_type_itself():
    parent = parse_pg_type("bigint")
    assert common_type(parent, parse_pg_type("smallint")) is parent
    assert common_type(parse_pg_type("varchar(9)"), parse_pg_type("varchar(9)")) == PgType(
        "varchar", (9,)
    )
