"""Model files: `<directory>/<name>.sql`, one SELECT in PostgreSQL's dialect, with a header.

The header is the file's leading `-- key: value` comment lines:

    -- description: Hires of 2021 per department and job, one column per quarter.
    -- owner: team:analytics
    -- grain: department, job          (the result's key: the proof compares rows by it)
    -- freshness_hours: 24             (how stale the BigQuery table may get)
    -- materialized: table            (or view)
    -- float_decimals: 6               (floats are compared rounded to this many decimals)
    -- unproved: lag_seconds           (columns the proof leaves out: say why in a comment)

Tables are named `schema.table` as in the warehouse (PostgreSQL); in BigQuery the same table is
the mirror `<INGEST_BQ_DATASET_PREFIX><schema>.<table>` (the mirror's naming). sqlglot translates
the rest; what it cannot translate, and `FILTER (WHERE ...)` on aggregates other than the ones
rewritten here, is an error naming the file and line. `EXTRACT(EPOCH FROM ts)` becomes
`UNIX_MICROS(ts) / 1e6` (BigQuery has no EPOCH part; ts must be a timestamp, not an interval).
Errors are per model: one bad file never keeps the others from loading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from ingest_platform.errors import IngestError

HEADER_LINE = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
HEADER_KEYS = {
    "description",
    "owner",
    "grain",
    "freshness_hours",
    "materialized",
    "float_decimals",
    "unproved",
}
MATERIALIZATIONS = ("table", "view")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
OWNER = re.compile(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")  # as Dagster accepts


class ModelError(IngestError):
    """A model file that cannot become a BigQuery query; the message names file and line."""


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    postgres_sql: str  # as written (the proof runs it on PostgreSQL)
    tables: tuple[tuple[str, str], ...]  # (schema, table) read, in order of first mention
    table_lines: tuple[int, ...]  # the line of each table's first mention
    description: str = ""
    owner: str | None = None
    grain: tuple[str, ...] = ()
    freshness_hours: float | None = None
    materialized: str = "table"
    float_decimals: int = 6
    unproved: tuple[str, ...] = ()  # result columns the proof does not compare

    def where(self, line: int | None = None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)

    def bigquery_sql(self, project: str, dataset_prefix: str = "") -> str:
        """The SELECT for BigQuery over the mirrors in `project`."""
        return translate(parse(self.postgres_sql, self.path), self.path, project, dataset_prefix)


def parse(text: str, path: Path) -> exp.Query:
    try:
        tree = sqlglot.parse_one(text, read="postgres")
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        line = detail.get("line")
        what = detail.get("description") or str(error).splitlines()[0]
        raise ModelError(
            f"{path}:{line}: does not parse as PostgreSQL SQL ({what}); fix the statement."
        ) from None
    if not isinstance(tree, exp.Query):
        raise ModelError(f"{path}:1: a model is one SELECT (found {tree.key.upper()}).")
    return tree


def read_model(path: Path) -> Model:
    """One model file (see the module's docstring); ModelError names file and line."""
    name = path.stem
    if not NAME.match(name):
        raise ModelError(
            f"{path}: model names are lower-case letters, digits and _ (they name a BigQuery "
            "table and an asset); rename the file."
        )
    text = path.read_text(encoding="utf-8")
    header = _header(text, path)
    tree = parse(text, path)
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables: dict[tuple[str, str], int] = {}
    for table in tree.find_all(exp.Table):
        if not table.db and table.name in ctes:
            continue
        line = table.this.meta.get("line") if isinstance(table.this, exp.Identifier) else None
        if not table.db:
            raise ModelError(
                f"{path}:{line}: table {table.name!r} has no schema; write it as schema.table "
                "(for example hr.hired_employees)."
            )
        tables.setdefault((table.db, table.name), line or 1)
    first = sorted(tables.items(), key=lambda item: item[1])
    model = Model(
        name=name,
        path=path,
        postgres_sql=text,
        tables=tuple(table for table, _ in first),
        table_lines=tuple(line for _, line in first),
        **header,
    )
    model.bigquery_sql("project")  # untranslatable constructs fail at load, not at run
    return model


def load_models(directory: Path) -> tuple[list[Model], list[ModelError]]:
    """Every `*.sql` of the directory: the models that load, and an error per file that does not."""
    models, errors = [], []
    for path in sorted(Path(directory).glob("*.sql")):
        try:
            models.append(read_model(path))
        except ModelError as error:
            errors.append(error)
    return models, errors


def translate(tree: exp.Query, path: Path, project: str, dataset_prefix: str) -> str:
    tree = tree.copy()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if not table.db and table.name in ctes:
            continue
        table.set("catalog", exp.to_identifier(project, quoted=True))
        table.set("db", exp.to_identifier(dataset_prefix + table.db, quoted=True))
        table.set("this", exp.to_identifier(table.name, quoted=True))
    _rewrite_filters(tree, path)
    _rewrite_epochs(tree)
    try:
        return tree.sql(dialect="bigquery", unsupported_level=ErrorLevel.RAISE, comments=False)
    except UnsupportedError as error:
        raise ModelError(
            f"{path}: {error} (BigQuery has no translation of it); rewrite that part of the "
            "query in plain SQL that both engines run."
        ) from None


def _rewrite_filters(tree: exp.Query, path: Path) -> None:
    """`agg(x) FILTER (WHERE c)` (PostgreSQL) is not BigQuery: `count(*) FILTER (WHERE c)` becomes
    COUNTIF(c), any other aggregate agg(IF(c, x, NULL)), which ignores the rows as FILTER does."""
    for node in list(tree.find_all(exp.Filter)):
        aggregate, condition = node.this, node.expression.this
        if isinstance(aggregate, exp.Count) and isinstance(aggregate.this, exp.Star):
            node.replace(exp.func("COUNTIF", condition.copy()))
            continue
        argument = aggregate.this
        if argument is None or isinstance(argument, exp.Star):
            raise ModelError(
                f"{path}: FILTER (WHERE ...) on {aggregate.sql()} has no BigQuery form; write "
                "it with CASE WHEN inside the aggregate."
            )
        aggregate.set("this", exp.If(this=condition.copy(), true=argument.copy(), false=exp.Null()))
        node.replace(aggregate)


def _rewrite_epochs(tree: exp.Query) -> None:
    """`EXTRACT(EPOCH FROM ts)` (seconds since 1970, with fractions) is BigQuery's
    UNIX_MICROS(ts) / 1000000."""
    for node in list(tree.find_all(exp.Extract)):
        if node.this.name.upper() == "EPOCH":
            micros = exp.func("UNIX_MICROS", node.expression.copy())
            node.replace(exp.Paren(this=exp.Div(this=micros, expression=exp.Literal.number(1e6))))


def _header(text: str, path: Path) -> dict:
    found: dict = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("--"):
            break
        match = HEADER_LINE.match(line.strip())
        if not match:
            continue  # an ordinary comment
        key, value = match.groups()
        if key not in HEADER_KEYS:
            raise ModelError(
                f"{path}:{number}: unknown header key {key!r}; use one of "
                f"{', '.join(sorted(HEADER_KEYS))}."
            )
        found[key] = _header_value(key, value, path, number)
    return found


def _header_value(key: str, value: str, path: Path, line: int):
    try:
        if key in ("grain", "unproved"):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if key == "freshness_hours":
            return float(value)
        if key == "float_decimals":
            return int(value)
    except ValueError:
        raise ModelError(f"{path}:{line}: {key} must be a number, not {value!r}.") from None
    if key == "owner" and not OWNER.match(value):
        raise ModelError(
            f"{path}:{line}: owner is team:<name> or an e-mail address, not {value!r}."
        )
    if key == "materialized" and value not in MATERIALIZATIONS:
        raise ModelError(f"{path}:{line}: materialized is table or view, not {value!r}.")
    return value
