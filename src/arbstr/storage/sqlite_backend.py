"""The request log's writer on SQLite: a WAL-mode file, migrated under ``PRAGMA
user_version``. An outage (locked, read-only, full disk) drops rows (counted) rather than
keeping them: the file is local, and its trouble is rarely over in seconds."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from arbstr.batching import Pacer
from arbstr.records import RequestRecord
from arbstr.storage.backend import RATIOS_SQL, OpenFailed, Ratio, WriteFailed, ratios_of
from arbstr.storage.rows import Row
from arbstr.storage.schema import migrate, user_version
from arbstr.storage.writes import Written, is_database_fault, rollback, write_batch

log = logging.getLogger("arbstr.storage")


def connect_writer(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open ``path`` for writing, in WAL mode, migrated, and prove that it is writable."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: WAL journal mode not available (got %s)", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        version = migrate(conn, path)
        # A read-only file opens fine and even lets BEGIN IMMEDIATE through; a write proves it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version = {version:d}")
        finally:
            conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteBackend:
    keeps_rows = False

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.name = path
        self._busy_timeout_s = busy_timeout_s

    def connect(self) -> sqlite3.Connection:
        try:
            return connect_writer(self.name, self._busy_timeout_s)
        except (sqlite3.Error, OSError) as exc:
            raise OpenFailed(f"cannot open database {self.name}: {exc}") from None

    def version(self, conn: sqlite3.Connection) -> int:
        return user_version(conn)

    def ratios(self, conn: sqlite3.Connection) -> list[Ratio]:
        try:
            rows = conn.execute(RATIOS_SQL).fetchall()
        except sqlite3.Error as exc:
            raise OpenFailed(f"cannot read {self.name}: {exc}") from None
        return ratios_of(rows)

    def write(
        self,
        conn: sqlite3.Connection,
        records: Sequence[RequestRecord],
        ratios: Sequence[Row],
        pacer: Pacer,
    ) -> Written:
        try:
            return write_batch(conn, records, ratios, pacer)
        except Exception as exc:  # rolled back; a row's fault never gets here
            reason = f"cannot write to {self.name}: {exc}"
            if not is_database_fault(exc):
                reason += f" ({type(exc).__name__})"
            raise WriteFailed(reason, conn_usable=True) from exc

    def reset(self, conn: sqlite3.Connection) -> None:
        rollback(conn)

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()
