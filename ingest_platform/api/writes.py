"""A batch of records into one table: validation, set-based checks, one INSERT.

1. Each record is validated against the table's request model (types, unknown fields, NULL in a
   NOT NULL column, lengths and ranges) in Python: one pydantic call for the whole batch, and one
   per record only when the batch has errors, to say which records.
2. One ``INSERT ... SELECT FROM jsonb_array_elements(...)`` writes the records that passed, in
   batch order; their ids are a block of consecutive values of the table's own sequence, taken
   just before (``_reserve``). PostgreSQL's foreign-key triggers and unique indexes check it.
3. Only if the database refuses that INSERT: one query checks the records against the
   database, set-based: every foreign key (``NOT EXISTS`` against the parent) and every unique
   key other than the server's id (an existing row, or an earlier record of the same batch),
   so every such bad record is named at once. The others are inserted; a record the check
   could not foresee (a CHECK constraint, a row another request committed a moment ago) makes
   that insert fail too, and the rest is split in halves under savepoints until the offending
   records are found (log2(n) more statements per such record). A good batch costs exactly
   one INSERT.

Good records are committed and bad ones are not; with ``atomic`` any rejected record rejects the
batch. Rejected records and the batch's own row go to the API's log tables in the same transaction
as the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from pydantic import TypeAdapter, ValidationError

from ingest_platform.errors import first_line
from ingest_platform.postgres.catalog import qualified

from .schema import TableShape
from .store import Reject


@dataclass
class BatchResult:
    accepted: list[tuple[int, Any]] = field(default_factory=list)  # (record index, id)
    rejected: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class TableWriter:
    """The compiled statements and model of one table."""

    shape: TableShape
    record: TypeAdapter  # one record
    records: TypeAdapter  # a list of them
    check_sql: sql.Composed | None
    insert_sql: sql.Composed

    @classmethod
    def build(cls, shape: TableShape, model: Any) -> TableWriter:
        return cls(
            shape,
            TypeAdapter(model),
            TypeAdapter(list[model]),
            _check_sql(shape),
            _insert_sql(shape),
        )

    def json_schema(self) -> dict:
        return self.record.json_schema()

    def validate_body(self, body: bytes) -> list[tuple[int, dict]] | None:
        """The records of a body that is a JSON array of good records, parsed and validated in
        one call into pydantic-core (exact numbers: no float on the way); None for any other
        body, which `validate` then takes record by record to say what is wrong."""
        try:
            return list(enumerate(self.records.validate_json(body)))
        except ValidationError:
            return None

    def validate(self, records: list) -> tuple[list[tuple[int, dict]], list[Reject]]:
        """(index, JSON-ready values of the fields given) of the good records, and the rejects."""
        try:
            return list(enumerate(self.records.validate_python(records))), []
        except ValidationError:
            pass
        good, rejects = [], []
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                rejects.append(
                    Reject(index, None, None, f"record {index} must be a JSON object of fields")
                )
                continue
            try:
                good.append((index, self.record.validate_python(record)))
            except ValidationError as error:
                rejects.append(self._reject(index, error))
        return good, rejects

    def _reject(self, index: int, error: ValidationError) -> Reject:
        first = error.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "extra_forbidden":
            if name == self.shape.id_column:
                reason = (
                    f"{name} is numbered by the server (sequence {self.shape.sequence}): leave "
                    "it out"
                )
            else:
                fields = ", ".join(c.name for c in self.shape.columns)
                reason = f"unknown field {name!r}; the fields of {self.shape.name} are: {fields}"
        elif first["type"] == "missing":
            reason = f"{name} is required (NOT NULL, no default)"
        elif first["type"] in ("none_required",) or (
            first["input"] is None and name and self._not_null(name)
        ):
            reason = f"{name} must not be null (NOT NULL)"
        else:
            column = self.shape.column(name) if name else None
            kind = f" ({column.type})" if column else ""
            reason = f"{name}{kind}: {first['msg']}"
        more = error.error_count() - 1
        if more:
            reason += f" (and {more} more error{'s' if more > 1 else ''} in this record)"
        return Reject(index, name, None, f"record {index}, field {name}: {reason}")

    def _params(self, part: list[tuple[int, dict]]) -> dict:
        # One call into pydantic-core for the whole batch's JSON.
        return {
            "docs": self.records.dump_json([values for _, values in part]).decode(),
            "idx": _int_array(index for index, _ in part),
        }

    def _not_null(self, name: str) -> bool:
        column = self.shape.column(name)
        return bool(column and column.not_null)

    def check(self, conn: psycopg.Connection, good: list[tuple[int, dict]]) -> list[Reject]:
        """Foreign keys and unique keys of the whole batch, in one query."""
        if self.check_sql is None or not good:
            return []
        rows = conn.execute(self.check_sql, self._params(good)).fetchall()
        rejects: dict[int, Reject] = {}
        for index, kind, number, values, first in rows:
            if index in rejects:
                continue
            if kind == "fk":
                fk = self.shape.foreign_keys[number]
                reason = (
                    f"foreign key {fk.name}: no row in {fk.parent_schema}.{fk.parent} with "
                    f"{_pairs(fk.parent_columns, values)}"
                )
                columns = fk.columns
                constraint = fk.name
            else:
                constraint, columns = self.shape.unique_keys[number]
                where = "a row of the table" if first is None else f"record {first} of this batch"
                reason = f"unique key {constraint}: {where} has {_pairs(columns, values)}"
            field_name = ",".join(columns)
            rejects[index] = Reject(
                index, field_name, constraint, f"record {index}, field {field_name}: {reason}"
            )
        return list(rejects.values())

    def insert(
        self, conn: psycopg.Connection, good: list[tuple[int, dict]], atomic: bool = False
    ) -> BatchResult:
        """Insert `good` in one statement. Only when the database refuses it does the
        set-based check (``check``) run, to name every record with a foreign key to nothing or
        a duplicate key at once; the others are then inserted, and what the check could not
        foresee is found by halving (savepoints). With `atomic`, a rejected record stops there.

        A good batch so costs one INSERT: PostgreSQL's own foreign-key triggers prove its keys
        (they run whatever we do), and a check query before every insert would prove them a
        second time (a third of a batch's time)."""
        result = BatchResult()
        if not good or self._insert_whole(conn, good, result):
            return result
        result.rejected = self.check(conn, good)
        bad = {r.index for r in result.rejected}
        rest = [g for g in good if g[0] not in bad]
        if rest and not (atomic and bad):
            self._insert_part(conn, rest, result)
        result.accepted.sort()
        return result

    def _insert_whole(self, conn, good, result: BatchResult) -> bool:
        """The whole batch in one INSERT; False (nothing inserted) if the database refuses it."""
        params = self._params(good)
        reserved = self._reserve(conn, len(good))
        if reserved is not None:
            params["ids"] = _int_array(reserved)
        try:
            with conn.transaction():  # a savepoint
                ids = [r[0] for r in conn.execute(self.insert_sql, params).fetchall()]
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
            return False  # its reserved ids are burned; the retry reserves its own
        result.accepted.extend(zip((i for i, _ in good), ids, strict=True))
        return True

    def _reserve(self, conn: psycopg.Connection, count: int) -> list[int] | None:
        """`count` consecutive ids from the table's sequence, so that a batch's ids have no gaps
        even while other batches insert: taken under a session advisory lock on the sequence
        (held for one nextval query, not the batch's transaction). Writers that call nextval
        without the lock (a CSV import, a plain INSERT) can still interleave."""
        if not self.shape.sequence:
            return None
        key = self.shape.sequence
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            with conn.transaction():  # a failure here must not keep the lock past `finally`
                rows = conn.execute(
                    "SELECT nextval(%s::regclass) FROM generate_series(1, %s)", (key, count)
                ).fetchall()
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        return [r[0] for r in rows]

    def _insert_part(self, conn, part, result: BatchResult) -> None:
        params = self._params(part)
        reserved = self._reserve(conn, len(part))
        if reserved is not None:
            params["ids"] = _int_array(reserved)
        try:
            with conn.transaction():  # a savepoint
                ids = [r[0] for r in conn.execute(self.insert_sql, params).fetchall()]
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as error:
            if len(part) == 1:
                index, name = part[0][0], error.diag.column_name or None
                where = f"record {index}" + (f", field {name}" if name else "")
                result.rejected.append(
                    Reject(index, name, error.diag.constraint_name, f"{where}: {first_line(error)}")
                )
                return
            half = len(part) // 2
            self._insert_part(conn, part[:half], result)
            self._insert_part(conn, part[half:], result)
            return
        result.accepted.extend(zip((i for i, _ in part), ids, strict=True))


def _int_array(values) -> str:
    """An array parameter as its text, typed by the cast in the SQL (``%s::int[]``): ten times
    cheaper than psycopg's list dumper, and never an int2[] parameter that a prepared
    statement's generic plan would convert to int[] again for every row (1000 rows x 1000
    elements)."""
    return "{" + ",".join(map(str, values)) + "}"


def _pairs(columns, values) -> str:
    return ", ".join(f"{c} = {json.dumps(v)}" for c, v in zip(columns, values, strict=False))


def _records(shape: TableShape) -> sql.Composable:
    """The batch as typed rows: n (position), i (record index), doc (the JSON), the columns."""
    definition = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in shape.columns
    )
    return sql.SQL(
        "SELECT e.n, (%(idx)s::int[])[e.n] AS i, e.doc, x.*"
        " FROM jsonb_array_elements(%(docs)s::jsonb) WITH ORDINALITY AS e(doc, n),"
        " LATERAL jsonb_to_record(e.doc) AS x({})"
    ).format(definition)


def _check_sql(shape: TableShape) -> sql.Composed | None:
    """One row (index, kind, number, values, earlier record or null) per violated key."""
    table = qualified(shape.config.schema, shape.config.table)
    parts: list[sql.Composable] = []
    for number, fk in enumerate(shape.foreign_keys):
        cols = [sql.SQL("r.{}").format(sql.Identifier(c)) for c in fk.columns]
        match = sql.SQL(" AND ").join(
            sql.SQL("p.{} = r.{}").format(sql.Identifier(pc), sql.Identifier(c))
            for c, pc in zip(fk.columns, fk.parent_columns, strict=True)
        )
        parts.append(
            sql.SQL(
                "SELECT r.i, 'fk', {n}, jsonb_build_array({cols}), NULL::int FROM r"
                " WHERE {given} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
            ).format(
                n=sql.Literal(number),
                cols=sql.SQL(", ").join(cols),
                given=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols),
                parent=qualified(fk.parent_schema, fk.parent),
                match=match,
            )
        )
    for number, (_, columns) in enumerate(shape.unique_keys):
        cols = [sql.SQL("r.{}").format(sql.Identifier(c)) for c in columns]
        given = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols)
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = r.{0}").format(sql.Identifier(c)) for c in columns
        )
        parts.append(
            sql.SQL(
                "SELECT r.i, 'unique', {n}, jsonb_build_array({cols}), NULL::int FROM r"
                " WHERE {given} AND EXISTS (SELECT 1 FROM {table} t WHERE {match})"
                " UNION ALL"
                " SELECT d.i, 'unique', {n}, d.v, d.first FROM"
                " (SELECT r.i, jsonb_build_array({cols}) AS v,"
                "   first_value(r.i) OVER (PARTITION BY {cols} ORDER BY r.n) AS first"
                "  FROM r WHERE {given}) d WHERE d.i <> d.first"
            ).format(
                n=sql.Literal(number),
                cols=sql.SQL(", ").join(cols),
                given=given,
                table=table,
                match=match,
            )
        )
    if not parts:
        return None
    return sql.SQL("WITH r AS ({records}) {parts} ORDER BY 1").format(
        records=_records(shape), parts=sql.SQL(" UNION ALL ").join(parts)
    )


def _insert_sql(shape: TableShape) -> sql.Composed:
    """INSERT ... SELECT of the batch in its order; a defaulted field left out gets its
    default (the catalog's own expression), an explicit null stays null."""
    values: list[sql.Composable] = []
    names = [c.name for c in shape.columns]
    overriding = sql.SQL("")
    if shape.id_column and shape.sequence:  # ids reserved in a block (TableWriter._reserve)
        values.append(sql.SQL("(%(ids)s::bigint[])[r.n]"))
        names.insert(0, shape.id_column)
        overriding = sql.SQL(" OVERRIDING SYSTEM VALUE")  # for GENERATED ALWAYS identities
    for column in shape.columns:
        value: sql.Composable = sql.SQL("r.{}").format(sql.Identifier(column.name))
        if column.default and column.default != "identity":
            value = sql.SQL("CASE WHEN r.doc ? {name} THEN {value} ELSE {default} END").format(
                name=sql.Literal(column.name), value=value, default=sql.SQL(column.default)
            )
        values.append(value)
    returned = shape.id_column or shape.key_column
    target = sql.SQL(", ").join(sql.Identifier(name) for name in names)
    return sql.SQL(
        "INSERT INTO {table} ({target}){overriding} SELECT {values} FROM ({records}) r"
        " ORDER BY r.n"
        " RETURNING {returned}"
    ).format(
        table=qualified(shape.config.schema, shape.config.table),
        target=target,
        overriding=overriding,
        values=sql.SQL(", ").join(values),
        records=_records(shape),
        returned=sql.Identifier(returned) if returned else sql.SQL("NULL"),
    )
