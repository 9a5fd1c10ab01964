"""PostgreSQL schema migrations: the same numbered list as SQLite's
(:func:`arbstr.storage.schema.migrations`), each taking its ``NNNN_name.pg.sql`` variant
where one exists. The version lives in the one-row table ``arbstr_schema``. Migrating holds
``pg_advisory_lock`` so that instances starting at once take turns; each migration commits
with its version bump."""

from __future__ import annotations

import contextlib
from functools import cache
from importlib import resources
from typing import Any

import psycopg

from arbstr.storage.schema import Migration, check_not_newer, migrations

LOCK_KEY = 0x61726273_7472  # "arbstr": one advisory lock key for the request log's schema
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS arbstr_schema (version BIGINT NOT NULL)"


@cache
def pg_migrations() -> tuple[Migration, ...]:
    """The migrations with each PostgreSQL variant in place of the common script."""
    folder = resources.files("arbstr.storage").joinpath("migrations")
    out: list[Migration] = []
    for mig in migrations():
        variant = folder.joinpath(mig.name.removesuffix(".sql") + ".pg.sql")
        out.append(
            Migration(mig.version, variant.name, variant.read_text("utf-8"))
            if variant.is_file()
            else mig
        )
    return tuple(out)


def schema_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The stored version (0: no arbstr schema yet)."""
    found = conn.execute("SELECT to_regclass('arbstr_schema') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return 0
    row = conn.execute("SELECT MAX(version) FROM arbstr_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: psycopg.Connection[tuple[Any, ...]], where: str) -> int:
    """Bring the database up to the latest schema; returns the version it is at. ``conn``
    must be in autocommit mode. Raises :class:`~arbstr.storage.schema.SchemaTooNew`."""
    conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    try:
        conn.execute(_VERSION_TABLE)
        current = schema_version(conn)
        check_not_newer(current, where)
        for mig in pg_migrations():
            if current >= mig.version:
                continue
            with conn.transaction():
                for stmt in mig.statements():
                    conn.execute(stmt.encode("utf-8"))  # bytes: no placeholder parsing
                conn.execute("DELETE FROM arbstr_schema")
                conn.execute("INSERT INTO arbstr_schema (version) VALUES (%s)", [mig.version])
            current = mig.version
        return current
    finally:
        with contextlib.suppress(psycopg.Error):  # a lost connection has released it
            conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
