import dagster as dg

from ingest_platform import definitions


def test_definitions_load_and_validate():
    assert isinstance(definitions.defs, dg.Definitions)
    dg.Definitions.validate_loadable(definitions.defs)


def test_resources_come_from_the_environment(monkeypatch):
    from ingest_platform.defs.resources import resources_from_env

    resources = resources_from_env(
        {
            "INGEST_BQ_EMULATOR_HOST": "127.0.0.1:9050",
            "INGEST_BQ_EMULATOR_GRPC_HOST": "127.0.0.1:9060",
        }
    )
    assert resources["bigquery"].emulator_rest_endpoint == "http://127.0.0.1:9050"
    assert resources["bigquery"].project == "ingest-local"
    real = resources_from_env({"INGEST_BQ_PROJECT": "acme-analytics", "INGEST_BQ_LOCATION": "EU"})
    assert (
        real["bigquery"].project,
        real["bigquery"].location,
        real["bigquery"].emulator_rest_endpoint,
    ) == ("acme-analytics", "EU", None)
