"""What the request log says was spent, per UTC day, policy, model and provider: the use
budgets start from (a restart does not reset them). Each row counts what it cost plus what
it may have been billed (timeouts, cut streams), exact in millisats."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from arbstr.routing.budgets import Spent, day_of
from arbstr.storage.dialect import Db, SqliteDb
from arbstr.storage.location import is_postgres
from arbstr.storage.params import format_ts
from arbstr.storage.queries import read_with
from arbstr.storage.rows import exact_sum, msats_sql, take_sum

_SPENT_SQL = f"""
SELECT substr(timestamp, 1, 10) AS day, policy, model, provider,
       {exact_sum("COALESCE(c, 0) + COALESCE(pb, 0)")}
FROM (
    SELECT timestamp, policy, model, provider,
           {msats_sql("cost_sats")} AS c, {msats_sql("possibly_billed_sats")} AS pb
    FROM requests WHERE timestamp >= ?
) AS r
GROUP BY day, policy, model, provider
"""  # noqa: S608 (no input in it)


def query_spent(conn: sqlite3.Connection | Db, since: datetime) -> list[Spent]:
    db = SqliteDb(conn) if isinstance(conn, sqlite3.Connection) else conn
    out: list[Spent] = []
    for row in db.rows(_SPENT_SQL, [format_ts(since)]):
        values = iter(row[4:])
        msats = take_sum(values)
        if msats:
            out.append(Spent(day_of(str(row[0])), row[1], row[2], row[3], msats))
    return out


def read_spent(location: str, since: datetime) -> list[Spent]:
    """The log's spend since ``since`` (none before the first start wrote one), from a SQLite
    path or a PostgreSQL URL; blocking: run it in a thread from async code."""
    if not is_postgres(location) and not Path(location).exists():
        return []
    return read_with(location, lambda db: query_spent(db, since))
