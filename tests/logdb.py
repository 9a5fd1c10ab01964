"""Raw access to a request log of either backend for the tests: a SQLite path or a
PostgreSQL URL (as :class:`arbstr.storage.Store` takes them)."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from arbstr.storage.dialect import to_pyformat
from arbstr.storage.location import is_postgres


def sql_rows(location: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (``?`` placeholders) on ``location``."""
    if is_postgres(location):
        with psycopg.connect(location) as pg:
            return pg.execute(to_pyformat(sql), list(args)).fetchall()
    conn = sqlite3.connect(location)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def sql_exec(location: str, sql: str, args: tuple[Any, ...] = ()) -> None:
    """Run one statement on ``location`` and commit it."""
    if is_postgres(location):
        with psycopg.connect(location, autocommit=True) as pg:
            pg.execute(to_pyformat(sql), list(args))
        return
    conn = sqlite3.connect(location, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def count(location: str) -> int:
    return int(sql_rows(location, "SELECT COUNT(*) FROM requests")[0][0])
