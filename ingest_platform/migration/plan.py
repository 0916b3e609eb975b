"""What a migration would do: the source's objects in restore order, and the target's state.

``make_plan`` changes nothing anywhere. It dumps the source's schema (``pg_tools``) into a
directory the caller owns, reads both catalogs (``inventory``) and sorts the target into one of:

- ``empty``: none of the source's objects (an existing empty schema such as ``public`` is fine);
- ``equal``: the same objects with the same definitions (nothing to do);
- ``without post-data``: every table is there, the keys, indexes and triggers that pg_dump
  creates after the data are all missing (``migrate data`` copies, then creates them);
- ``differs``: anything else (``schema`` refuses unless told ``--replace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ingest_platform.migration import inventory, pg_tools
from ingest_platform.postgres.connection import connect, server_address

EMPTY, EQUAL, WITHOUT_POST_DATA, DIFFERS = "empty", "equal", "without post-data", "differs"


@dataclass
class Plan:
    source_dsn: str
    target_dsn: str
    schemas: list[str]
    grants: bool
    archive: Path
    toc: list[pg_tools.TocEntry]
    differences: list[inventory.Difference]
    state: str
    target_version: int
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The plan as the CLI prints it."""
        lines = [
            f"Source {server_address(self.source_dsn)} -> target "
            f"{server_address(self.target_dsn)}, schemas: {', '.join(self.schemas) or '(none)'}",
            f"Target state: {self.state}.",
        ]
        if self.state == EQUAL:
            lines.append("Nothing to do: the target has every object as the source defines it.")
        else:
            lines.append(f"To create, in dependency order ({len(self.toc)} objects):")
            lines += [f"  {entry}" for entry in self.toc]
        existing = [d for d in self.differences if d.status != "missing on target"]
        if existing:
            lines.append("Already on the target and different:")
            lines += [f"  {d}" for d in existing]
        if self.problems:
            lines.append("The target cannot take this schema yet:")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def make_plan(
    source_dsn: str, target_dsn: str, schemas: list[str], workdir: Path, grants: bool = True
) -> Plan:
    with connect(source_dsn) as source, connect(target_dsn) as target:
        schemas = inventory.selected_schemas(source, schemas)
        archive = workdir / "schema.dump"
        pg_tools.dump_schema(source_dsn, schemas, archive, privileges=grants)
        source_objects = inventory.inventory(source, schemas, grants)
        target_objects = inventory.inventory(target, schemas, grants)
        problems = inventory.missing_prerequisites(source, target, schemas, grants)
        version = target.info.server_version
    differences = inventory.diff(source_objects, target_objects)
    return Plan(
        source_dsn,
        target_dsn,
        schemas,
        grants,
        archive,
        pg_tools.table_of_contents(archive),
        differences,
        _state(differences, source_objects, target_objects),
        version,
        problems,
    )


def _state(differences, source_objects, target_objects) -> str:
    if not differences:
        return EQUAL
    objects = [k for k in target_objects if k[0] not in ("schema", "extension")]
    if not objects:
        return EMPTY
    if all(
        d.kind in inventory.POST_DATA_KINDS and d.status == "missing on target" for d in differences
    ):
        post_data = [k for k in source_objects if k[0] in inventory.POST_DATA_KINDS]
        if len(differences) == len(post_data):
            return WITHOUT_POST_DATA
    return DIFFERS
