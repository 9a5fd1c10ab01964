"""The request log's writer on PostgreSQL: one autocommit connection of its own, migrated on
connect. A lost connection keeps the rows queued (see :class:`~arbstr.storage.store.Store`)
and the store reconnects with backoff; the insert ignores request ids already stored, so a
batch whose commit was lost with the connection is safely written again. Messages never
hold the URL's password."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psycopg

from arbstr.batching import Pacer
from arbstr.records import RequestRecord
from arbstr.storage.backend import RATIOS_SQL, OpenFailed, Ratio, WriteFailed, ratios_of
from arbstr.storage.location import display, scrub
from arbstr.storage.postgres.schema import migrate, schema_version
from arbstr.storage.postgres.writes import Conn, write_batch
from arbstr.storage.rows import Row
from arbstr.storage.writes import Written

CONNECT_TIMEOUT_S = 5


class PostgresBackend:
    keeps_rows = True

    def __init__(self, url: str) -> None:
        self._url = url
        self.name = display(url)

    def _safe(self, exc: BaseException) -> str:
        return scrub(str(exc).strip(), self._url)

    def connect(self) -> Conn:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="arbstr",
                # a server that vanished without closing the connection (a network cut) is
                # noticed within ~30 s instead of blocking the writer for good
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30_000,
            )
        except (psycopg.Error, ValueError) as exc:
            raise OpenFailed(f"cannot connect to {self.name}: {self._safe(exc)}") from None
        try:
            migrate(conn, self.name)
        except psycopg.Error as exc:
            conn.close()
            raise OpenFailed(f"cannot migrate {self.name}: {self._safe(exc)}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def version(self, conn: Conn) -> int:
        return schema_version(conn)

    def ratios(self, conn: Conn) -> list[Ratio]:
        try:
            rows = conn.execute(RATIOS_SQL).fetchall()
        except psycopg.Error as exc:
            raise OpenFailed(f"cannot read {self.name}: {self._safe(exc)}") from None
        return ratios_of(rows)

    def write(
        self, conn: Conn, records: Sequence[RequestRecord], ratios: Sequence[Row], pacer: Pacer
    ) -> Written:
        try:
            return write_batch(conn, records, ratios, pacer)
        except Exception as exc:
            reason = f"cannot write to {self.name}: {self._safe(exc)} ({type(exc).__name__})"
            raise WriteFailed(reason, conn_usable=False) from None

    def reset(self, conn: Conn) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()

    def close(self, conn: Conn) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
