"""What the read queries need from a backend's SQL: one query text written with ``?``
placeholders serves SQLite and PostgreSQL, and the few expressions that differ (time buckets)
come from the :class:`Dialect`. A :class:`Db` runs a query and returns its rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    hour: str  # SQL text with {c} for the timestamp column: the bucket key
    day: str
    week: str  # the date of the Monday on or before the day, as YYYY-MM-DD

    def bucket(self, unit: str, column: str = "timestamp") -> str:
        if unit not in ("hour", "day", "week"):
            raise ValueError("unit must be one of hour, day, week")
        template: str = getattr(self, unit)
        return template.format(c=column)


SQLITE = Dialect(
    "sqlite",
    hour="strftime('%Y-%m-%dT%H:00:00Z', {c})",
    day="strftime('%Y-%m-%d', {c})",
    week="strftime('%Y-%m-%d', {c}, '-6 days', 'weekday 1')",
)

# Stored timestamps are text 'YYYY-MM-DDTHH:MM:SS.mmmZ'; a row whose text is not of that
# shape gets no bucket (as SQLite's strftime gives NULL), instead of failing the query.
_SHAPED = "CASE WHEN {c} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}' THEN "
POSTGRES = Dialect(
    "postgres",
    hour=_SHAPED + "substr({c}, 1, 13) || ':00:00Z' END",
    day=_SHAPED + "substr({c}, 1, 10) END",
    week=_SHAPED + "to_char(date_trunc('week', substr({c}, 1, 10)::date), 'YYYY-MM-DD') END",
)


class Db(Protocol):
    """A read connection of either backend."""

    dialect: Dialect

    def rows(self, sql: str, args: Sequence[object] = ()) -> Rows: ...


class SqliteDb:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.dialect = SQLITE

    def rows(self, sql: str, args: Sequence[object] = ()) -> Rows:
        return self.conn.execute(sql, list(args)).fetchall()


def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled). The queries hold
    no ``?`` and no ``%`` inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")
