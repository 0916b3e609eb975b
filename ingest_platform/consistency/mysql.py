"""A MySQL/MariaDB table as one side of the comparison engine (``compare.compare_hashes``).

The canonical texts are those of ``canonical`` (the same bytes, so the same md5 as PostgreSQL
and BigQuery compute), written in MySQL SQL for each column's kind as the warehouse holds it,
read from the MySQL type the value had in the source (the dump dialect's mapping: tinyint(1)
and bit(1) as booleans, zero dates as NULL, unsigned integers, enum/set as text):

- int: the digits; numeric: digits without trailing fractional zeros (``trim_scale``);
- float: MariaDB and PostgreSQL both print a double's shortest round-trip digits, but in other
  notations (``1e20`` / ``1e+20``, ``0.00000015`` / ``1.5e-07``): the MySQL text is taken apart
  into its digits and decimal exponent and written as PostgreSQL writes it (scientific when the
  exponent is below -4 or at least 15, the exponent signed and two digits at least);
- bool ``t``/``f``; bytes lowercase hex; date: days since 1970-01-01; datetime and timestamp:
  microseconds since 1970-01-01 (the session's time zone is UTC); time: microseconds since
  midnight; json: presence; MySQL's time (an interval in the warehouse: it may exceed a day) as
  PostgreSQL prints the interval; everything else (strings, enum, set): the text.

Statements hold their values as escaped literals and run without parameters.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ingest_platform.bigquery.source import MirrorSource
from ingest_platform.bigquery.types import MirrorColumn
from ingest_platform.consistency.canonical import NULL_MARK, needs_length
from ingest_platform.dumps.dialect import parse_type_name
from ingest_platform.dumps.schema import TableSchema

CHUNK_DIGITS = 7
CHUNK_STARTS = (1, 8, 15, 22)  # as compare.CHUNK_STARTS

Run = Callable[[str], list[tuple]]
_HEX = re.compile(r"[0-9a-f]{1,32}")


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _zero_date(v: str) -> str:
    """MySQL's zero dates (a zero year, month or day) are NULL, as the pull loads them."""
    return f"SUBSTR({v}, 1, 4) = '0000' OR SUBSTR({v}, 6, 2) = '00' OR SUBSTR({v}, 9, 2) = '00'"


def _float_text(t: str) -> str:
    """A double's text as PostgreSQL's float8out writes it (see the module's docstring), from
    `t`, MySQL's text of the double (``CAST(CAST(v AS DOUBLE) AS CHAR)``, computed once in the
    side's inner query: this expression uses it a dozen times)."""
    mantissa = f"SUBSTRING_INDEX({t}, 'e', 1)"
    unsigned = f"TRIM(LEADING '-' FROM {mantissa})"
    whole = f"SUBSTRING_INDEX({unsigned}, '.', 1)"
    fraction = f"IF(LOCATE('.', {unsigned}) > 0, SUBSTRING_INDEX({unsigned}, '.', -1), '')"
    all_digits = f"CONCAT({whole}, {fraction})"
    leading = f"(CHAR_LENGTH({all_digits}) - CHAR_LENGTH(TRIM(LEADING '0' FROM {all_digits})))"
    digits = f"TRIM(TRAILING '0' FROM TRIM(LEADING '0' FROM {all_digits}))"
    shift = f"IF(LOCATE('e', {t}) > 0, CAST(SUBSTRING_INDEX({t}, 'e', -1) AS SIGNED), 0)"
    exponent = f"(CHAR_LENGTH({whole}) - 1 - {leading} + {shift})"
    scientific = (
        f"CONCAT(IF(LEFT({t}, 1) = '-', '-', ''), LEFT({digits}, 1),"
        f" IF(CHAR_LENGTH({digits}) > 1, CONCAT('.', SUBSTRING({digits}, 2)), ''),"
        f" 'e', IF({exponent} < 0, '-', '+'), IF(ABS({exponent}) < 10, '0', ''), ABS({exponent}))"
    )
    return (
        f"(CASE WHEN {t} IS NULL THEN NULL WHEN {t} IN ('0', '-0') THEN '0'"
        f" WHEN {exponent} < -4 OR {exponent} >= 15 THEN {scientific}"
        f" WHEN LOCATE('e', {t}) > 0 THEN NULL ELSE {t} END)"
    )


def inner_column(column: MirrorColumn) -> str:
    """The column as the side's inner query reads it: a double as its text (see _float_text)."""
    q = quote(column.name)
    return f"CAST(CAST({q} AS DOUBLE) AS CHAR) AS {q}" if column.kind == "float" else q


def mysql_text(column: MirrorColumn, source_type: str, ref: str | None = None) -> str:
    """The canonical text of a MySQL column read as the warehouse's `column` (kind)."""
    v = quote(column.name) if ref is None else ref
    source = parse_type_name(source_type)[0]
    kind = column.kind
    if kind == "bool":
        return f"(CASE WHEN {v} IS NULL THEN NULL WHEN {v} = 0 THEN 'f' ELSE 't' END)"
    if source == "bit":
        return f"CAST(CAST({v} AS UNSIGNED) AS CHAR)"
    if kind == "int":
        return f"CAST({v} AS CHAR)"
    if kind in ("numeric", "bignumeric", "money"):
        t = f"CAST({v} AS CHAR)"
        return f"IF(LOCATE('.', {t}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {t})), {t})"
    if kind == "float":  # `v` is the double's text already (inner_column)
        return _float_text(v)
    if kind == "bytes":
        return f"LOWER(HEX({v}))"
    if kind == "date":
        return f"IF({_zero_date(v)}, NULL, CAST(DATEDIFF({v}, '1970-01-01') AS CHAR))"
    if kind in ("timestamp", "datetime"):
        return (
            f"IF({_zero_date(v)}, NULL,"
            f" CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {v}) AS CHAR))"
        )
    if kind == "time":
        # Not TIME_TO_SEC: MariaDB's keeps the fraction of the second.
        return (
            f"CAST((HOUR({v}) * 3600 + MINUTE({v}) * 60 + SECOND({v})) * 1000000"
            f" + MICROSECOND({v}) AS CHAR)"
        )
    if kind == "json":
        return f"IF({v} IS NOT NULL, 'J', NULL)"
    if source == "time":  # an interval in the warehouse: its text has no trailing zeros
        t = f"CAST({v} AS CHAR)"
        return f"IF(LOCATE('.', {t}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {t})), {t})"
    return f"CAST({v} AS CHAR)"


def _wrap(text: str) -> str:
    return f"COALESCE(CONCAT(CHAR_LENGTH({text}), ':', {text}), '{NULL_MARK}')"


def mysql_canonical_of(texts: Sequence[str], lengths: Sequence[bool]) -> str:
    """The canonical form of field texts (see canonical.pg_canonical_of)."""
    if not texts:
        return "''"
    parts = [
        _wrap(t) if length else f"COALESCE({t}, '{NULL_MARK}')"
        for t, length in zip(texts, lengths, strict=True)
    ]
    return "CONCAT(" + ", '|', ".join(parts) + ")"


class MySQLSide:
    """A MySQL/MariaDB table compared as `source` describes it (columns as the other side holds
    them, the key); `schema` gives each column's MySQL type. `run` executes a statement without
    parameters and returns its rows; `where` restricts the rows (escaped literals inside)."""

    def __init__(
        self,
        run: Run,
        source: MirrorSource,
        schema: TableSchema,
        *,
        name: str = "MySQL",
        where: str = "",
    ):
        self.run, self.source, self.name = run, source, name
        self.columns = list(source.columns)
        types = {c.name: c.source_type for c in schema.columns}
        self.texts = [mysql_text(c, types[c.name]) for c in self.columns]
        self.lengths = [needs_length(c) for c in self.columns]
        self.row_expr = f"MD5({mysql_canonical_of(self.texts, self.lengths)})"
        key_columns = [source.column(k) for k in source.key]
        self.key_text = (
            mysql_canonical_of(
                [mysql_text(c, types[c.name]) for c in key_columns],
                [needs_length(c) for c in key_columns],
            )
            if key_columns
            else self.row_expr
        )
        # The inner query computes each double's text once; derived_merge=off (buckets) keeps
        # MariaDB from merging it, and the row hashes, into the expressions that use them.
        inner = ", ".join(inner_column(c) for c in self.columns) or "1"
        self.from_ = (
            f"(SELECT {inner} FROM {quote(schema.name)}{f' WHERE {where}' if where else ''}) AS r"
        )
        self.filtered = False
        self.base = (
            f"SELECT {self.key_text} AS k, MD5({self.key_text}) AS kh, {self.row_expr} AS rh"
            f" FROM {self.from_}"
        )

    def estimated_rows(self) -> float:
        return float(self.counts()[""][0])

    def counts(self, group: str | None = None, deleted: str | None = None) -> dict:
        (n,) = self.run(f"SELECT count(*) FROM {self.from_}")[0]
        return {"": (int(_text(n)), int(_text(n)))}

    def buckets(self, depth: int, within: list[str] | None) -> dict[str, tuple[int, ...]]:
        restrict = ""
        if within is not None:
            restrict = f" WHERE SUBSTR(kh, 1, {len(within[0])}) IN ({_literals(within)})"
        sums = ", ".join(
            f"SUM(CAST(CONV(SUBSTR(rh, {start}, {CHUNK_DIGITS}), 16, 10) AS UNSIGNED))"
            for start in CHUNK_STARTS
        )
        # Merged, the row hash would be computed once per sum (measured: 4x slower).
        self.run("SET SESSION optimizer_switch = 'derived_merge=off'")
        rows = self.run(
            f"SELECT SUBSTR(kh, 1, {int(depth)}) AS b, count(*), {sums}"
            f" FROM ({self.base}) AS s{restrict} GROUP BY b ORDER BY NULL"
        )
        return {_text(r[0]): tuple(int(_text(x)) for x in r[1:]) for r in rows}

    def leaves(self, prefixes: list[str]) -> dict[str, Counter]:
        rows = self.run(
            f"SELECT k, rh FROM ({self.base}) AS s"
            f" WHERE SUBSTR(kh, 1, {len(prefixes[0])}) IN ({_literals(prefixes)})"
        )
        found: dict[str, Counter] = {}
        for k, rh in rows:
            found.setdefault(_text(k), Counter())[_text(rh)] += 1
        return found

    def fields(self, key: str) -> list[tuple]:
        glue = " AND " if self.filtered else " WHERE "
        columns = ", ".join(
            mysql_canonical_of([t], [n]) for t, n in zip(self.texts, self.lengths, strict=True)
        )
        rows = self.run(
            # By the md5 of the key's text: the statement then holds hex digits, never data.
            f"SELECT {columns} FROM {self.from_}{glue}MD5({self.key_text})"
            f" = {_literals([hashlib.md5(key.encode()).hexdigest()])}"
        )
        return [tuple(_text(x) for x in r) for r in rows]


def _literals(values: Sequence[str]) -> str:
    """md5 hex digits (bucket prefixes, key hashes: made here, never data) as MySQL string
    literals; `run` takes no parameters."""
    for value in values:
        if not _HEX.fullmatch(value):
            raise ValueError(f"not md5 hex digits: {value!r}")
    return ", ".join(f"'{value}'" for value in values)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
