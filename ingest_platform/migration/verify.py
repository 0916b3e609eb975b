"""Proof that a migration is complete: the schema diff is empty and every table has the same rows.

The rows are compared by the one comparison engine (``consistency/compare.py``): bucket sums of
row hashes on both servers at once, differing buckets narrowed down to the differing keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest_platform.consistency.compare import Comparison, compare_hashes, postgres_sides
from ingest_platform.migration import inventory
from ingest_platform.migration.data import source_tables
from ingest_platform.postgres.connection import connect


@dataclass
class Verification:
    schema_differences: list[inventory.Difference]
    tables: list[Comparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.schema_differences and all(t.passed for t in self.tables)

    def text(self) -> str:
        lines = (
            ["Schema: no differences."]
            if not self.schema_differences
            else ["Schema differences:"] + [f"  {d}" for d in self.schema_differences]
        )
        for t in self.tables:
            verdict = "same rows" if t.passed else "DIFFERENT"
            lines.append(
                f"{t.what}: {verdict} (source {t.left_rows:,} rows, target {t.right_rows:,} rows,"
                f" {t.buckets} buckets, {t.differing_buckets} differ)"
            )
            lines += [f"    {d.key} {d.status} {d.detail}".rstrip() for d in t.differences]
        return "\n".join(lines)


def schema_differences(
    source_dsn: str, target_dsn: str, schemas: list[str], grants: bool = True
) -> list[inventory.Difference]:
    with connect(source_dsn) as source, connect(target_dsn) as target:
        schemas = inventory.selected_schemas(source, schemas)
        return inventory.diff(
            inventory.inventory(source, schemas, grants),
            inventory.inventory(target, schemas, grants),
        )


def compare_table(source_dsn: str, target_dsn: str, schema: str, table: str) -> Comparison:
    with connect(source_dsn) as source, connect(target_dsn) as target:
        left, right = postgres_sides(
            (source, schema, table), (target, schema, table), names=("source", "target")
        )
        return compare_hashes(left, right, what=f"{schema}.{table}")


def verify(
    source_dsn: str, target_dsn: str, schemas: list[str], grants: bool = True
) -> Verification:
    with connect(source_dsn) as source:
        schemas = inventory.selected_schemas(source, schemas)
        tables = source_tables(source, schemas)
    result = Verification(schema_differences(source_dsn, target_dsn, schemas, grants))
    for t in tables:
        result.tables.append(compare_table(source_dsn, target_dsn, t.schema, t.name))
    return result
