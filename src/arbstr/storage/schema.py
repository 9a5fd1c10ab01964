"""Schema migrations: numbered ``migrations/NNNN_name.sql`` files, applied under
``PRAGMA user_version``, each in one transaction."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


class SchemaTooNew(Exception):
    """The database was written by a newer arbstr than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The script split into complete SQL statements (comments and blanks dropped)."""
        out: list[str] = []
        buf = ""
        for line in self.sql.splitlines(keepends=True):
            if not buf and (not line.strip() or line.lstrip().startswith("--")):
                continue
            buf += line
            if sqlite3.complete_statement(buf):
                out.append(buf.strip())
                buf = ""
        if buf.strip():
            raise ValueError(f"migration {self.name}: incomplete statement at the end")
        return out


@cache
def migrations() -> tuple[Migration, ...]:
    """The packaged migrations, in order; their numbers must run 1, 2, 3 … without gaps."""
    found: list[Migration] = []
    for entry in resources.files("arbstr.storage").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    for i, mig in enumerate(found, start=1):
        if mig.version != i:
            raise RuntimeError(f"migrations must be numbered 1, 2, 3 …: {mig.name} is #{i}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_not_newer(version: int, where: str) -> None:
    latest = latest_version()
    if version > latest:
        raise SchemaTooNew(
            f"{where}: database schema version {version} is newer than this arbstr supports"
            f" ({latest}); upgrade arbstr, or use another database (--db / $ARBSTR_DB)"
        )


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database up to the latest schema; returns the version it is at.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each migration runs in
    its own ``BEGIN IMMEDIATE`` transaction together with its ``user_version`` bump, and the
    version is re-read inside that transaction, so two processes starting at once are safe.
    Raises :class:`SchemaTooNew` for a database newer than the code.
    """
    check_not_newer(user_version(conn), where)
    for mig in migrations():
        if user_version(conn) >= mig.version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = user_version(conn)
            check_not_newer(current, where)
            if current < mig.version:
                for stmt in mig.statements():
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {mig.version:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return user_version(conn)
