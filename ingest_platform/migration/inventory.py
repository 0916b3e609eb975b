"""The objects of some schemas as the catalog describes them, to compare a source and a target.

Each object is a key (kind, qualified name) and a definition text as the server itself prints it
(``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_functiondef``, ``pg_get_viewdef``,
``format_type``). What a migration does not carry over is left out on purpose: owners (objects
belong to the user who migrates), the owner's own privileges, grantors, sequence positions (data,
compared by ``verify``), and server-private column options. PostgreSQL 18's NOT NULL constraint
rows (contype ``n``) are left out too: nullability is part of the column.

Also here: what a target must offer before ``schema`` can run (extensions, languages, roles, and
relations that views outside the selection need), each reported by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from ingest_platform.errors import SchemaError

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
# Objects pg_dump creates after the data (--section=post-data).
POST_DATA_KINDS = ("primary key", "unique", "foreign key", "exclusion", "index", "trigger")
CONSTRAINT_KINDS = {"p": "primary key", "u": "unique", "f": "foreign key", "x": "exclusion"}

# PostgreSQL 16 stopped printing the table before each column of a one-table view
# ("hired_employees.datetime" -> "datetime"): qualifiers are left out of view texts on both sides.
_QUALIFIER = re.compile(r'(?<![\w."])(?:"[^"]+"|[A-Za-z_]\w*)\.(?=["A-Za-z_])')

Inventory = dict[tuple[str, str], str]  # (kind, name) -> definition

_ACL = """coalesce((SELECT string_agg(g.rolname || ':' || a.privilege_type
                     || CASE WHEN a.is_grantable THEN '+' ELSE '' END, ',' ORDER BY 1)
           FROM aclexplode({acl}) a LEFT JOIN pg_roles g ON g.oid = a.grantee
           WHERE a.grantee <> {owner}), '')"""


def acl(column: str, owner: str) -> str:
    # PUBLIC (grantee 0) has no pg_roles row: its name prints as NULL -> 'PUBLIC'.
    return _ACL.format(acl=column, owner=owner).replace(
        "g.rolname", "coalesce(g.rolname, 'PUBLIC')"
    )


QUERIES: dict[str, str] = {
    "schema": f"""
        SELECT n.nspname, coalesce(obj_description(n.oid, 'pg_namespace'), '') || ' grants ' ||
               {acl("n.nspacl", "n.nspowner")}
        FROM pg_namespace n WHERE n.nspname = ANY(%(s)s)""",
    "table": f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               (SELECT string_agg(quote_ident(a.attname) || ' '
                   || format_type(a.atttypid, a.atttypmod)
                   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                   || CASE a.attidentity WHEN 'a' THEN ' identity always'
                        WHEN 'd' THEN ' identity by default' ELSE '' END
                   || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
                   || coalesce(' comment ' || col_description(c.oid, a.attnum), ''),
                   ', ' ORDER BY a.attnum)
                FROM pg_attribute a LEFT JOIN pg_attrdef d
                  ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
               || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '')
               || ' grants ' || {acl("c.relacl", "c.relowner")}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p')""",
    "view": f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               c.relkind::text || ' ' || pg_get_viewdef(c.oid)
               || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '')
               || ' grants ' || {acl("c.relacl", "c.relowner")}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('v', 'm')""",
    "sequence": f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               format_type(s.seqtypid, NULL) || ' start ' || s.seqstart || ' by ' || s.seqincrement
               || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
               || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
               || ' grants ' || {acl("c.relacl", "c.relowner")}
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(s)s)""",
    "constraint": """
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' '
               || quote_ident(k.conname), k.contype::text || ' ' || pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(s)s) AND k.contype IN ('p', 'u', 'f', 'x', 'c')""",
    "index": """
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(c.oid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(s)s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                          AND k.contype IN ('p', 'u', 'x'))""",
    "function": f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '('
               || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
               || ' comment ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
               || ' grants ' || {acl("p.proacl", "p.proowner")}
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(s)s) AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')""",
    "trigger": """
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' '
               || quote_ident(t.tgname), pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(s)s) AND NOT t.tgisinternal""",
    "type": """
        SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname),
               t.typtype::text || ' ' || CASE t.typtype
                 WHEN 'e' THEN (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                FROM pg_enum e WHERE e.enumtypid = t.oid)
                 WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod)
                   || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END
                   || coalesce(' default ' || t.typdefault, '')
                   || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(k.oid), ' '
                                ORDER BY k.conname) FROM pg_constraint k
                                WHERE k.contypid = t.oid AND k.contype = 'c'), '')
                 WHEN 'c' THEN (SELECT string_agg(a.attname || ' '
                                || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0)
                 ELSE '' END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY(%(s)s) AND t.typtype IN ('e', 'd', 'c')
          AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')""",
    "extension": """
        SELECT extname::text, ''::text FROM pg_extension WHERE extname <> 'plpgsql'""",
}


def selected_schemas(conn: psycopg.Connection, schemas: list[str]) -> list[str]:
    """`schemas`, or every user schema of the database when none are given."""
    if schemas:
        return list(schemas)
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%'"
        " ORDER BY 1",
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return [r[0] for r in rows]


def inventory(conn: psycopg.Connection, schemas: list[str], grants: bool = True) -> Inventory:
    """Every object of `schemas` (plus the database's extensions) -> its definition."""
    found: Inventory = {}
    for kind, query in QUERIES.items():
        for name, definition in conn.execute(query, {"s": schemas}).fetchall():
            if kind == "constraint":
                contype, _, definition = definition.partition(" ")
                kind_name = CONSTRAINT_KINDS.get(contype, "check")
            else:
                kind_name = kind
            if kind == "view":
                definition = _QUALIFIER.sub("", definition)
            if not grants:
                definition = definition.split(" grants ")[0]
            found[(kind_name, name)] = definition
    return found


@dataclass(frozen=True)
class Difference:
    kind: str
    name: str
    status: str  # "missing on target", "differs", "only on target"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.status}"


def diff(source: Inventory, target: Inventory) -> list[Difference]:
    """Object by object: what the target lacks, has differently, or has in addition."""
    found = []
    for key, definition in source.items():
        if key not in target:
            found.append(Difference(*key, "missing on target"))
        elif target[key] != definition:
            found.append(Difference(*key, "differs"))
    # Extensions a target has beyond the source's harm nothing.
    found += [
        Difference(*key, "only on target")
        for key in target
        if key not in source and key[0] != "extension"
    ]
    return sorted(found, key=lambda d: (d.status, d.kind, d.name))


# ----------------------------------------------------------------------------- prerequisites


def missing_prerequisites(
    source: psycopg.Connection, target: psycopg.Connection, schemas: list[str], grants: bool
) -> list[str]:
    """Why `schema` cannot run on this target, one sentence per missing thing (empty: it can)."""
    problems = []
    available = {
        r[0] for r in target.execute("SELECT name FROM pg_available_extensions").fetchall()
    }
    used = [r[0] for r in source.execute(QUERIES["extension"]).fetchall()]
    lacking = [e for e in used if e not in available]
    if lacking:
        problems.append(
            f"extension(s) {', '.join(lacking)} used by the source are not available on the "
            "target: install them on the target server first"
        )
    languages = {r[0] for r in target.execute("SELECT lanname FROM pg_language").fetchall()}
    for function, language in source.execute(
        "SELECT p.oid::regprocedure::text, l.lanname FROM pg_proc p"
        " JOIN pg_language l ON l.oid = p.prolang JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = ANY(%s) ORDER BY 1",
        (schemas,),
    ).fetchall():
        if language not in languages and language not in available:
            problems.append(
                f"function {function} is written in language {language}, which the target "
                "lacks: install it on the target or leave the function's schema out"
            )
    if grants:
        roles = {r[0] for r in target.execute("SELECT rolname FROM pg_roles").fetchall()}
        granted = source.execute(GRANTEES, {"s": schemas}).fetchall()
        lacking = sorted({r[0] for r in granted} - roles)
        if lacking:
            problems.append(
                f"role(s) {', '.join(lacking)} have grants in the source but do not exist on the "
                "target: create them there, or run with --skip-grants"
            )
    for view, table in source.execute(OUTSIDE_DEPENDENCIES, {"s": schemas}).fetchall():
        schema_name, _, name = table.partition(".")
        if not target.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema_name, name),
        ).fetchone():
            problems.append(
                f"view {view} depends on {table}, which is outside the selected schemas and "
                f"missing on the target: add --schema {schema_name}"
            )
    return problems


GRANTEES = """
    SELECT DISTINCT r.rolname FROM (
        SELECT (aclexplode(c.relacl)).grantee, c.relowner AS owner FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(s)s)
        UNION ALL SELECT (aclexplode(p.proacl)).grantee, p.proowner FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%(s)s)
        UNION ALL SELECT (aclexplode(n.nspacl)).grantee, n.nspowner FROM pg_namespace n
          WHERE n.nspname = ANY(%(s)s)
    ) g JOIN pg_roles r ON r.oid = g.grantee WHERE g.grantee <> g.owner"""

# Views of the selected schemas that read relations of other (non-system) schemas.
OUTSIDE_DEPENDENCIES = """
    SELECT DISTINCT v.oid::regclass::text, quote_ident(tn.nspname) || '.' || t.relname
    FROM pg_class v JOIN pg_namespace vn ON vn.oid = v.relnamespace
    JOIN pg_rewrite r ON r.ev_class = v.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
    WHERE vn.nspname = ANY(%(s)s) AND v.relkind IN ('v', 'm') AND t.oid <> v.oid
      AND tn.nspname <> ALL(%(s)s) AND tn.nspname NOT IN ('pg_catalog', 'information_schema')"""


def require_prerequisites(
    source: psycopg.Connection, target: psycopg.Connection, schemas: list[str], grants: bool
) -> None:
    problems = missing_prerequisites(source, target, schemas, grants)
    if problems:
        raise SchemaError("The target cannot take this schema: " + "; ".join(problems) + ".")
