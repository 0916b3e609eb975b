"""Recreating the source's schema on the target, in one transaction.

The SQL is pg_dump's (``pg_tools``): it knows every kind of object and the order they need.
Each archive entry runs as its own statement group inside the one transaction, so a refusal names
the object (``TABLE hr.jobs``) and rolls everything back. Sequences get the source's current
values in the same transaction.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from ingest_platform.errors import SchemaError, first_line
from ingest_platform.migration import pg_tools
from ingest_platform.migration.plan import DIFFERS, EMPTY, EQUAL, WITHOUT_POST_DATA, Plan
from ingest_platform.postgres.catalog import qualified
from ingest_platform.postgres.connection import connect

# pg_restore's header before each archive entry: "-- Name: jobs; Type: TABLE; Schema: hr; ..."
_ENTRY = re.compile(r"^--\n-- Name: (.*?); Type: (.*?); Schema: (.*?);.*$", re.MULTILINE)
_CREATE_SCHEMA = re.compile(r"^CREATE SCHEMA (\S+);$", re.MULTILINE)


def migrate_schema(plan: Plan, *, replace: bool = False, data_later: bool = False) -> str:
    """Create the schema on the target; returns what happened in one sentence.

    `data_later`: create what comes before the data only (tables, types, functions, views);
    ``data.migrate_data`` adds keys, indexes and triggers after copying."""
    if plan.problems:
        raise SchemaError("The target cannot take this schema: " + "; ".join(plan.problems) + ".")
    if plan.state == EQUAL:
        return "Nothing to do: the target already has this schema."
    if plan.state == WITHOUT_POST_DATA and data_later:
        return "Nothing to do: the tables exist; keys and indexes follow the data."
    if plan.state == WITHOUT_POST_DATA:
        apply_sections(plan, ["post-data"], replace=False)
        return "Created the keys, indexes and triggers the tables lacked."
    if plan.state == DIFFERS and not replace:
        shown = "; ".join(str(d) for d in plan.differences[:10])
        more = f" (and {len(plan.differences) - 10} more)" if len(plan.differences) > 10 else ""
        raise SchemaError(
            f"The target already has objects in schema(s) {', '.join(plan.schemas)} that differ "
            f"from the source: {shown}{more}. Nothing was changed. Run `migrate plan` to see all, "
            "or `migrate schema --replace` to drop and recreate these schemas on the target."
        )
    sections = ["pre-data"] if data_later else ["pre-data", "post-data"]
    apply_sections(plan, sections, replace=plan.state != EMPTY)
    return f"Created {len(plan.toc)} objects in schema(s) {', '.join(plan.schemas)}."


def apply_sections(plan: Plan, sections: list[str], *, replace: bool) -> None:
    """Run the archive's `sections` on the target in one transaction (after dropping the
    selected schemas when `replace`), then set the sequences."""
    scripts = [pg_tools.section_sql(plan.archive, s, plan.target_version) for s in sections]
    with connect(plan.target_dsn) as target:
        with target.transaction():
            if replace:
                for schema in plan.schemas:
                    target.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )
            for script in scripts:
                _run_script(target, script)
            if "pre-data" in sections:
                copy_sequence_values(plan.source_dsn, target, plan.schemas)


def _run_script(target: psycopg.Connection, script: str) -> None:
    # A schema that exists on the target (public in a fresh database) is reused.
    script = _CREATE_SCHEMA.sub(r"CREATE SCHEMA IF NOT EXISTS \1;", script)
    starts = [m.start() for m in _ENTRY.finditer(script)] + [len(script)]
    target.execute(script[: starts[0]])  # the settings before the first entry
    for start, end in zip(starts, starts[1:], strict=False):
        entry = script[start:end]
        header = _ENTRY.match(entry)
        assert header is not None
        try:
            target.execute(entry)
        except psycopg.Error as exc:
            name, kind, schema = header.groups()
            where = f"{kind} {schema}.{name}" if schema != "-" else f"{kind} {name}"
            raise SchemaError(
                f"The target refused {where}: {first_line(exc)}. Nothing was changed."
            ) from None


def copy_sequence_values(source_dsn: str, target: psycopg.Connection, schemas: list[str]) -> int:
    """Set each sequence of `schemas` on the target to the source's current value."""
    with connect(source_dsn) as source:
        values = source.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences"
            " WHERE schemaname = ANY(%s) AND last_value IS NOT NULL",
            (schemas,),
        ).fetchall()
    for schema, name, value in values:
        name_text = qualified(schema, name).as_string(target)
        target.execute("SELECT setval(%s::regclass, %s, true)", (name_text, value))
    return len(values)
