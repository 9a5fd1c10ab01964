"""What the request log's writer (:class:`arbstr.storage.store.Store`) needs from a database:
open a migrated, writable connection, read the stored token ratios, write a batch. SQLite
(:mod:`arbstr.storage.sqlite_backend`) and PostgreSQL (:mod:`arbstr.storage.postgres.backend`)
implement it; :func:`backend_for` picks one by the location's form."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from arbstr.batching import Pacer
from arbstr.records import RequestRecord
from arbstr.storage.location import is_postgres
from arbstr.storage.rows import Row
from arbstr.storage.writes import Written

Ratio = tuple[str, str, float, int]  # policy, model, average ratio, sample count
RATIOS_SQL = "SELECT policy, model, avg_ratio, sample_count FROM token_ratios"


def ratios_of(rows: Iterable[Sequence[Any]]) -> list[Ratio]:
    """The rows of :data:`RATIOS_SQL` as ratios, skipping incomplete ones (a NULL, no samples)."""
    return [
        (str(p), str(m), float(avg), int(n))
        for p, m, avg, n in rows
        if p is not None and m is not None and avg is not None and n
    ]


class OpenFailed(Exception):
    """The database cannot be opened now; the message is safe to log (no secret)."""


class WriteFailed(Exception):
    """A batch could not be written because of the database; the message is safe to log.
    The connection was rolled back (``conn_usable``) or is to be dropped and reopened."""

    def __init__(self, message: str, *, conn_usable: bool) -> None:
        super().__init__(message)
        self.conn_usable = conn_usable


class Backend(Protocol):
    name: str  # the location as it may be logged (no password)
    # an outage keeps rows queued for the reconnect (PostgreSQL); else they are dropped
    keeps_rows: bool

    def connect(self) -> Any:
        """A migrated, writable connection. Raises :class:`OpenFailed`, or
        :class:`~arbstr.storage.schema.SchemaTooNew`."""
        ...

    def version(self, conn: Any) -> int: ...

    def ratios(self, conn: Any) -> list[Ratio]:
        """The stored token ratios. Raises :class:`OpenFailed`."""
        ...

    def write(
        self, conn: Any, records: Sequence[RequestRecord], ratios: Sequence[Row], pacer: Pacer
    ) -> Written:
        """One batch in one transaction. Raises :class:`WriteFailed` for database faults."""
        ...

    def reset(self, conn: Any) -> None:
        """After an unexpected error: leave no transaction open."""
        ...

    def close(self, conn: Any) -> None: ...


def backend_for(location: str, busy_timeout_s: float) -> Backend:
    if is_postgres(location):
        from arbstr.storage.postgres.backend import PostgresBackend

        return PostgresBackend(location)
    from arbstr.storage.sqlite_backend import SqliteBackend

    return SqliteBackend(location, busy_timeout_s)
