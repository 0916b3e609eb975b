"""The API's TOML: defaults, and a one-line error naming the key for each mistake."""

import pytest

from ingest_platform.api.config import (
    HR_TABLES,
    api_config_from_env,
    parse_api_config,
    secret_from_env,
)
from ingest_platform.errors import ConfigError


def test_default_is_the_hr_example():
    config = api_config_from_env({})
    assert config.tables == HR_TABLES and config.max_records == 1000
    assert config.table("hired_employees").defaults == (("datetime", "now()"),)  # type: ignore


def test_a_full_config():
    config = parse_api_config(
        'schema = "intake"\nmax_records = 500\nmax_body_mb = 1.5\nadmin_exact_count = 5000\n'
        '[[tables]]\ntable = "sales.orders"\nname = "orders-v2"\n'
        '[tables.defaults]\ncreated = "CURRENT_TIMESTAMP"\n'
    )
    [table] = config.tables
    assert (table.schema, table.table, table.name) == ("sales", "orders", "orders-v2")
    assert table.defaults == (("created", "CURRENT_TIMESTAMP"),)
    assert config.schema == "intake" and config.max_body_bytes == int(1.5 * 1024 * 1024)
    assert config.admin_exact_count == 5000


@pytest.mark.parametrize(
    "text, message",
    [
        ("tables = [", "API config: not valid TOML"),
        ("max_records = 10", "needs at least one [[tables]] entry"),
        ('max_records = 0\n[[tables]]\ntable = "a.b"', "max_records must be a number from 1"),
        ('max_records = true\n[[tables]]\ntable = "a.b"', "max_records must be a number"),
        ('admin_exact_count = 1\n[[tables]]\ntable = "a.b"',
         "admin_exact_count must be a number from 10"),
        ('colour = 1\n[[tables]]\ntable = "a.b"', "unknown key(s): colour"),
        ('[[tables]]\ntable = "orders"', "entry 1: table must be \"schema.table\""),
        ('[[tables]]\ntable = "a.b"\nowner = "x"', "entry 1: unknown key(s) owner"),
        ('[[tables]]\ntable = "a.b"\nname = "x/y"', "name 'x/y' must be letters"),
        ('[[tables]]\ntable = "a.b"\n[tables.defaults]\nc = "pg_sleep(1)"',
         "default of 'c' must be one of now(), current_timestamp"),
        ('[[tables]]\ntable = "a.b"\n[[tables]]\ntable = "c.b"', "name(s) used twice: b"),
    ],
)  # fmt: skip
def test_mistakes_are_named(text, message):
    with pytest.raises(ConfigError) as error:
        parse_api_config(text)
    assert message in str(error.value)


def test_missing_file_and_secret(tmp_path):
    with pytest.raises(ConfigError, match="INGEST_API_CONFIG=.*: cannot read it"):
        api_config_from_env({"INGEST_API_CONFIG": str(tmp_path / "none.toml")})
    with pytest.raises(ConfigError, match="INGEST_API_SECRET is not set"):
        secret_from_env({})
    with pytest.raises(ConfigError, match="INGEST_API_SECRET is too short: .* at least 32"):
        secret_from_env({"INGEST_API_SECRET": "short"})
    assert secret_from_env({"INGEST_API_SECRET": "k" * 32}) == "k" * 32
