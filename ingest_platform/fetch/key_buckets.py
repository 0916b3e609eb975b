"""How the delete detection of incremental pulls (``fetch.deletes``) groups keys into buckets:
the same buckets in the warehouse (PostgreSQL) and in the source (PostgreSQL or MySQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

MIN_WIDTH = 16  # integer keys per bucket at least
# A PostgreSQL source's keys are compared in numpy (``fetch.key_arrays``), where a bucket with one
# delete names its key: 0.1% of 1M keys deleted at random leave ~31 of 15,625 64-key buckets with
# two deletes or more (their keys read), and a quarter of the kept counts to read.
SOLVING_WIDTH = 64
MAX_BUCKETS = 65_536  # buckets at most (the rows the bucket queries return)


@dataclass(frozen=True)
class Bucketing:
    """An integer key: ``key / width`` (truncating division in both databases); other keys: the
    first `digits` hex digits of md5 of the key's text. Small buckets: a deleted row costs its
    bucket's keys read again, so 0.1% of the rows deleted at random (a delete in ~1.6% of 16-key
    buckets) reads ~1.6% of the keys instead of all of them (4096-key buckets: all differ). At
    1M rows 64-key buckets read 64k keys per side (0.75 s under load), 16-key ones 16k."""

    integer: bool
    width: int = MIN_WIDTH
    digits: int = 3

    def ranges(self, buckets: Sequence[int]) -> list[tuple[int, int]]:
        """The inclusive key ranges of integer buckets (the index finds their keys)."""
        w = self.width
        found = []
        for b in buckets:
            if b > 0:
                found.append((b * w, b * w + w - 1))
            elif b < 0:
                found.append((b * w - w + 1, b * w))
            else:
                found.append((-w + 1, w - 1))
        return found

    def bucket_of(self, value: Any) -> tuple[Any, int]:
        """(bucket, summand) of one key as ``pg_parts`` computes them in SQL: an integer key's
        truncating division; other keys' md5 of their text (``pg_keys_in``'s value)."""
        if self.integer:
            k = int(value)
            return (abs(k) // self.width) * (1 if k >= 0 else -1), k
        digest = hashlib.md5(str(value).encode()).hexdigest()
        return digest[: self.digits], int(digest[self.digits : self.digits + 7], 16)


def pg_parts(key: Sequence[str], bucketing: Bucketing) -> tuple[sql.Composable, ...]:
    """(bucket, sum, key value) expressions of a PostgreSQL table, equal to MySQLSource's."""
    if bucketing.integer:
        k = sql.Identifier(key[0])
        return sql.SQL("{} / {}").format(k, sql.Literal(bucketing.width)), k, k
    text = sql.SQL("concat_ws('|', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    )
    digits = sql.Literal(bucketing.digits)
    return (
        sql.SQL("left(md5({}), {})").format(text, digits),
        sql.SQL("('x' || substr(md5({}), {} + 1, 7))::bit(28)::int").format(text, digits),
        text,
    )


def integer_bucketing(low: int | None, high: int | None, least: int = MIN_WIDTH) -> Bucketing:
    """Buckets of `least` keys, wider where the keys span more than MAX_BUCKETS of them."""
    span = 0 if low is None or high is None else high - low + 1
    width = least
    while span / width > MAX_BUCKETS:
        width *= 2
    return Bucketing(True, width)
