"""Canonical text of a row, computed identically by PostgreSQL and BigQuery SQL.

A row's canonical form is its mirrored columns in order, separated by ``|``, each either ``N``
(NULL) or ``<length>:<text>`` (length in characters, so no value can imitate a separator). Each
column's text is its kind's canonical text (``ingest_platform.bigquery.kinds``, one expression per
side). An array's text is its wrapped elements in order, ``,``-joined; BigQuery has no NULL
arrays, so a NULL array is an empty one on both sides.

The row hash is ``md5(canonical)`` in PostgreSQL and ``TO_HEX(MD5(canonical))`` in BigQuery: the
same 32 lowercase hex digits for the same row. The key's canonical form is built the same way
from the key columns; its md5 decides the row's bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from ingest_platform.bigquery.types import MirrorColumn, quote_bq_column

NULL_MARK = "N"
FIELD_SEPARATOR = "|"


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_wrap(text: sql.Composable) -> sql.Composable:
    return sql.SQL("coalesce(length({0})::text || ':' || {0}, {1})").format(
        text, sql.Literal(NULL_MARK)
    )


def pg_text(column: MirrorColumn, ref: sql.Composable | None = None) -> sql.Composable:
    """The column's field text before wrapping (an array: its wrapped elements, joined).
    ``ref`` reads the value (default: the column itself)."""
    ref = sql.Identifier(column.name) if ref is None else ref
    template = sql.SQL(column.spec.pg_text)
    if column.repeated:
        element = _pg_wrap(template.format(v=sql.SQL("_e")))
        return sql.SQL(
            "coalesce((SELECT string_agg({}, ',' ORDER BY _o)"
            " FROM unnest({}) WITH ORDINALITY AS _u(_e, _o)), '')"
        ).format(element, ref)
    return template.format(v=ref)


def pg_canonical_of(texts: Sequence[sql.Composable]) -> sql.Composable:
    """The canonical form of already computed field texts (column references of a subquery that
    computes each text once: wrapping uses its text twice)."""
    if not texts:
        return sql.SQL("''")
    return sql.SQL(" || '|' || ").join(_pg_wrap(t) for t in texts)


# ----------------------------------------------------------------------------- BigQuery


def _bq_wrap(text: str) -> str:
    # CHAR_LENGTH, not LENGTH: the emulator expands LENGTH (STRING or BYTES) into a CASE that
    # evaluates its argument three times.
    return f"COALESCE(CAST(CHAR_LENGTH({text}) AS STRING) || ':' || {text}, '{NULL_MARK}')"


def bq_text(column: MirrorColumn, alias: str = "") -> str:
    """The column's field text before wrapping (an array: its wrapped elements, joined)."""
    ref = (alias + "." if alias else "") + quote_bq_column(column.bq_name)
    # BIGNUMERIC kept as STRING (emulator) is still numeric text: its kind normalizes it.
    template = column.spec.bq_text
    if column.repeated:
        element = _bq_wrap(template.format(v="_e"))
        return (
            f"ARRAY_TO_STRING(ARRAY(SELECT {element} FROM UNNEST({ref}) AS _e"
            " WITH OFFSET AS _o ORDER BY _o), ',')"
        )
    return template.format(v=ref)


def bq_canonical_of(texts: Sequence[str]) -> str:
    """The canonical form of already computed field texts (see pg_canonical_of)."""
    if not texts:
        return "''"
    return " || '|' || ".join(_bq_wrap(t) for t in texts)


# ----------------------------------------------------------------------------- keys back to values


def parse_canonical(text: str) -> list[str | None]:
    """The field texts of a canonical form (None for NULL): the inverse of the wrapping."""
    fields: list[str | None] = []
    i = 0
    while i < len(text):
        if text[i] == NULL_MARK:
            fields.append(None)
            i += 1
        else:
            colon = text.index(":", i)
            length = int(text[i:colon])
            fields.append(text[colon + 1 : colon + 1 + length])
            i = colon + 1 + length
        if i < len(text):
            if text[i] != FIELD_SEPARATOR:
                raise ValueError(f"not a canonical form: {text!r}")
            i += 1
    return fields
