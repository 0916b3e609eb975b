"""The REST intake API's rejects as a component: the asset `api/rejects` and its check."""

import dagster as dg
from pydantic import Field

from ingest_platform.api.config import ApiConfig, api_config_from_env
from ingest_platform.defs.api import build_api_definitions
from ingest_platform.defs.components.settings import owners_field, tags_field


class ApiRejectsComponent(dg.Component, dg.Model, dg.Resolvable):
    """The asset `api/rejects` (the records the REST API refused) and its check
    `reject_share_below_limit`."""

    config_file: str | None = Field(
        default=None,
        description="The API's TOML file (api/config.py): its schema and reject_share_limit. "
        "Default: the HR example's settings.",
    )
    reject_share_limit: float | None = Field(
        default=None,
        description="Overrides the config file's reject_share_limit (0..1).",
    )
    owners: list[str] = owners_field("the API's assets")
    tags: dict[str, str] = tags_field("the API's assets")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        environ = {"INGEST_API_CONFIG": self.config_file} if self.config_file else {}
        config: ApiConfig = api_config_from_env(environ)
        if self.reject_share_limit is not None:
            from dataclasses import replace

            config = replace(config, reject_share_limit=self.reject_share_limit)
        return build_api_definitions(config, self.owners, self.tags)
