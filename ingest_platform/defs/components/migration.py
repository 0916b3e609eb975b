"""A database migration as a component: the migrated schema and tables become assets."""

import dagster as dg
from pydantic import Field

from ingest_platform.defs.components.settings import owners_field, tags_field
from ingest_platform.defs.migration import MigrationSettings, build_migration_definitions
from ingest_platform.errors import ConfigError


class MigrationComponent(dg.Component, dg.Model, dg.Resolvable):
    """A PostgreSQL database moved to another server: the asset `migration/schema` (checked by
    `schema_matches_source`) and `migration/<schema>/<table>` per listed table (checked by
    `rows_match_source`). Without `source_dsn_env` it builds nothing, so a project can carry the
    YAML before a source exists."""

    source_dsn_env: str | None = Field(
        default=None,
        description="Environment variable with the source's DSN (e.g. INGEST_MIGRATE_SOURCE_DSN);"
        " unset: no assets.",
    )
    target_dsn_env: str = Field(
        default="INGEST_MIGRATE_TARGET_DSN",
        description="Environment variable with the target's DSN.",
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables shown as assets, `schema.table`; every table of `schemas` is copied.",
    )
    schemas: list[str] = Field(
        default_factory=list, description="Schemas to migrate; empty: every user schema."
    )
    grants: bool = Field(default=True, description="Carry privileges over (roles must exist).")
    replace: bool = Field(
        default=False,
        description="Drop and recreate the schemas on a target whose objects differ.",
    )
    jobs: int = Field(default=2, description="Tables copied at once.")
    owners: list[str] = owners_field("every migration asset")
    tags: dict[str, str] = tags_field("every migration asset")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.source_dsn_env:
            return dg.Definitions()
        if not self.tables or any(t.count(".") != 1 for t in self.tables):
            raise ConfigError(
                "Migration component: list the migrated tables as `schema.table` in `tables` "
                f"(got {self.tables or 'none'})."
            )
        settings = MigrationSettings(
            tables=self.tables,
            schemas=self.schemas,
            grants=self.grants,
            replace=self.replace,
            jobs=self.jobs,
            owners=self.owners,
            tags=self.tags,
        )
        return build_migration_definitions(settings, self.source_dsn_env, self.target_dsn_env)
