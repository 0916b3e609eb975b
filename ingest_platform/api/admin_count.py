"""How many rows an admin list page matches, without a count over a table of millions of rows.

SQLAdmin counts a list page's rows with ``SELECT count(*) FROM (the page's query)``: on a
10-million-row log that reads the whole table on every page view. Here the count reads at most
``limit + 1`` rows (``SELECT count(*) FROM (query LIMIT limit + 1)``). When more match, the total
is PostgreSQL's estimate instead: ``pg_class.reltuples`` for the whole table, the planner's row
estimate (``EXPLAIN``) for a filtered or searched one; never less than ``limit + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Select, Table, func, select, text


@dataclass(frozen=True)
class PageCount:
    rows: int
    estimated: bool  # True: more than the limit match and `rows` is PostgreSQL's estimate


def capped_count(conn: Connection, query: Select, table: Table, limit: int) -> PageCount:
    """The rows `query` matches: exact up to `limit`, estimated above (see the module)."""
    query = query.order_by(None)
    # Only the primary key: with a filter on an indexed column the count is an index-only scan
    # of that index (the ETL log's end in id), not up to `limit` heap pages.
    keys = query.with_only_columns(*table.primary_key.columns, maintain_column_froms=True)
    counted = conn.execute(
        select(func.count()).select_from(keys.limit(limit + 1).subquery())
    ).scalar_one()
    if counted <= limit:
        return PageCount(int(counted), False)
    if query.whereclause is None:
        estimate = conn.execute(
            text(
                "SELECT reltuples::bigint FROM pg_class"
                " WHERE oid = to_regclass(quote_ident(:schema) || '.' || quote_ident(:name))"
            ),
            {"schema": table.schema or "public", "name": table.name},
        ).scalar()
    else:
        compiled = query.compile(conn)
        plan = conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + compiled.string, dict(compiled.params)
        ).scalar()
        estimate = plan[0]["Plan"]["Plan Rows"] if plan else 0
    return PageCount(max(int(estimate or 0), limit + 1), True)
