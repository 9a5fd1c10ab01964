"""The request log's write side: a :class:`~arbstr.records.RecordSink` backed by SQLite or
PostgreSQL (:mod:`arbstr.storage.backend`).

The request path only calls :meth:`Store.submit`, which puts the record on an in-memory
queue (a ``SimpleQueue`` put, ~0.2 µs) or, when the queue is full, drops it and counts it.
One writer thread drains the queue and writes each batch (up to ``batch_size`` items) in
one transaction, in short slices with pauses between them (:class:`~arbstr.batching.Pacer`)
so that the event loop on the same core never waits behind a whole batch. Learned token
ratios that changed are saved with each batch.

Values are bounded on the way in (:mod:`arbstr.storage.rows`), and a row the database still
refuses is left out alone, the rest of its batch written. A database that cannot be opened
or written never breaks proxying; a warning is logged once per outage, and
:attr:`Store.available` is false meanwhile. Then:

- SQLite: rows are dropped and counted; the writer tries to reopen an unopened database at
  most every ``reopen_interval_s``.
- PostgreSQL: rows stay queued, up to ``queue_size`` rows in all (queued and kept), and the
  writer reconnects with backoff (0.1 s doubling up to ``reopen_interval_s``) and writes them
  once the server is back; only rows beyond the limit are dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from arbstr.batching import Pacer, Poller
from arbstr.records import RatioBook, RequestRecord
from arbstr.storage.backend import Backend, OpenFailed, WriteFailed, backend_for
from arbstr.storage.rows import Row, text
from arbstr.storage.schema import SchemaTooNew

_INTERVAL_S = 0.02  # the writer takes what is queued every 20 ms (arbstr.batching.Poller)
_FIRST_BACKOFF_S = 0.1  # reconnecting to a server that went away (rows kept meanwhile)

log = logging.getLogger("arbstr.storage")

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_BATCH_SIZE = 500


class _Stop:
    pass


_STOP = _Stop()
_Item = RequestRecord | threading.Event | _Stop


class StoredRatios(RatioBook):
    """A :class:`RatioBook` that remembers which ratios changed, for the writer thread to save
    with its next batch (an observation always comes with a request record, which wakes it)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed: set[tuple[str, str]] = set()

    def observe(self, policy: str, model: str, input_tokens: int, output_tokens: int) -> None:
        super().observe(policy, model, input_tokens, output_tokens)
        self._changed.add((policy, model))

    def take_changes(self) -> list[Row]:
        """The ratios changed since the last call, as ``UPSERT_RATIO`` parameters (on the writer
        thread: the swap is atomic under the GIL; an ``add`` racing it lands in the set taken
        here or in the next one)."""
        changed, self._changed = self._changed, set()
        rows: list[Row] = []
        for policy, model in changed:
            entry = self._ratios.get((policy, model))
            if entry is not None:
                rows.append((text(policy), text(model), entry[0], entry[1]))
        return rows

    def restore(self, rows: list[Row]) -> None:
        """Ratios taken for a batch that was not written: saved with the next one."""
        for row in rows:
            self._changed.add((str(row[0]), str(row[1])))


class Store:
    """The request log: a non-blocking :class:`RecordSink` with one writer thread.
    ``location`` is a SQLite path or a PostgreSQL URL (:mod:`arbstr.storage.location`)."""

    def __init__(
        self,
        location: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        busy_timeout_s: float = 5.0,
        reopen_interval_s: float = 30.0,
        pacer: Pacer | None = None,
    ) -> None:
        """Use :meth:`open`; this constructor does no I/O and starts no thread."""
        self.path = location  # what the reads open (a URL keeps its password: never log it)
        self._backend: Backend = backend_for(location, busy_timeout_s)
        self.name = self._backend.name  # the location as it may be logged or shown
        self._pacer = pacer or Pacer()
        self.ratios = StoredRatios()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._poller = Poller(self._queue, _INTERVAL_S, batch_size, _STOP)
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._reopen_interval_s = reopen_interval_s
        self._backoff_s = _FIRST_BACKOFF_S
        self._conn: Any = None
        self._available = False
        self._error: str | None = None
        self._next_open = 0.0
        self._kept: list[RequestRecord] = []  # rows of an outage, waiting for the reconnect
        self._waiters: list[threading.Event] = []  # flushes waiting for the kept rows
        self._dropped_submit = 0  # queue full or closed; written only by the event loop
        self._dropped_write = 0  # written only by the writer thread
        self._written = 0
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="arbstr-db-writer", daemon=True)

    @classmethod
    def open(
        cls,
        location: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        busy_timeout_s: float = 5.0,
        reopen_interval_s: float = 30.0,
        pacer: Pacer | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the database and start the writer.

        Never raises for database problems: the store is then unavailable (see the module
        docstring for what happens to rows), and a warning says why. Blocking: call it before
        serving, or in a thread.
        """
        store = cls(
            location,
            queue_size=queue_size,
            batch_size=batch_size,
            busy_timeout_s=busy_timeout_s,
            reopen_interval_s=reopen_interval_s,
            pacer=pacer,
        )
        store._try_open()
        store._thread.start()
        return store

    # -- the request path ---------------------------------------------------------------------

    def submit(self, record: RequestRecord) -> None:
        """Queue a record; never blocks, never raises. A full queue drops it and counts it."""
        if self._closed or self._queue.qsize() + len(self._kept) >= self._queue_size:
            self._dropped_submit += 1
            return
        self._queue.put(record)

    # -- status -------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True while the database is open and the last write (if any) succeeded."""
        return self._available

    @property
    def error(self) -> str | None:
        """Why the database is unavailable, when it is (never holds a password)."""
        return None if self._available else self._error

    @property
    def dropped(self) -> int:
        """Request rows not written: queue full, or database unavailable (SQLite)."""
        return self._dropped_submit + self._dropped_write

    @property
    def written(self) -> int:
        return self._written

    @property
    def kept(self) -> int:
        """Rows of an outage kept for the reconnect (PostgreSQL)."""
        return len(self._kept)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued so far has been written (or dropped); rows kept over
        an outage are waited for too."""
        if not self._thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything still queued, stop the writer and close the database. Idempotent.
        Rows kept over an outage get one more try, then count as dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("request log writer did not finish within %s s", timeout)
                return
        left = 0
        while True:  # items a racing submit put behind the stop marker
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, RequestRecord):
                left += 1
            elif isinstance(item, threading.Event):
                item.set()
        self._dropped_write += left
        if self._conn is not None:
            self._backend.close(self._conn)
            self._conn = None
        self._available = False
        self._error = "closed"

    # -- the writer thread --------------------------------------------------------------------

    def _try_open(self) -> None:
        self._next_open = time.monotonic() + self._retry_delay()
        try:
            conn = self._backend.connect()
        except SchemaTooNew as exc:
            self._set_unavailable(str(exc), level=logging.ERROR)
            return
        except OpenFailed as exc:
            self._set_unavailable(str(exc))
            return
        try:
            ratios = self._backend.ratios(conn)
        except OpenFailed as exc:
            self._backend.close(conn)
            self._set_unavailable(str(exc))
            return
        for policy, model, avg, n in ratios:
            # after a reopen, what was learned meanwhile in memory is newer than the table
            if self.ratios.get(policy, model) is None:
                self.ratios.load(policy, model, avg, n)
        self._conn = conn
        self._backoff_s = _FIRST_BACKOFF_S
        self._set_available()
        log.info(
            "request log: %s (schema %d, %d learned ratios)",
            self.name,
            self._backend.version(conn),
            len(ratios),
        )

    def _retry_delay(self) -> float:
        if not self._backend.keeps_rows:
            return self._reopen_interval_s
        delay = min(self._backoff_s, self._reopen_interval_s)
        self._backoff_s = min(self._backoff_s * 2, max(self._reopen_interval_s, _FIRST_BACKOFF_S))
        return delay

    def _set_unavailable(self, reason: str, level: int = logging.WARNING) -> None:
        was = self._available or self._error is None
        self._available = False
        self._error = reason
        if was:
            rows = (
                f"rows are kept for the reconnect (up to {self._queue_size:,} rows)"
                if self._backend.keeps_rows
                else "rows are dropped"
            )
            log.log(
                level,
                "request log unavailable: %s; proxying continues, %s (see log_dropped in /health)",
                reason,
                rows,
            )

    def _set_available(self) -> None:
        if not self._available and self._error is not None:
            log.warning(
                "request log writable again: %s (%d rows dropped so far)",
                self.name,
                self.dropped,
            )
        self._available = True
        self._error = None

    def _run(self) -> None:
        # one transaction per batch: under load one wake-up writes many rows
        while not self._process(self._next_batch()):
            pass

    def _next_batch(self) -> list[_Item]:
        if not self._kept:
            return self._poller.next_batch()
        # rows kept over an outage: wake for the reconnect even when nothing new arrives
        time.sleep(min(max(self._next_open - time.monotonic(), _INTERVAL_S), 0.5))
        batch: list[_Item] = []
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[_Item]) -> bool:
        records: list[RequestRecord] = []
        stop = False
        for item in batch:
            if isinstance(item, RequestRecord):
                records.append(item)
            elif isinstance(item, threading.Event):
                self._waiters.append(item)
            else:
                stop = True
        if self._kept:
            records, self._kept = self._kept + records, []
        ratios = self.ratios.take_changes()
        if records or ratios:
            try:
                self._write(records, ratios, last_try=stop)
            except Exception:  # never let the writer thread die
                log.exception("request log writer failed")
                self._dropped_write += len(records)
                if self._conn is not None:
                    self._backend.reset(self._conn)
        if stop and self._kept:
            self._dropped_write += len(self._kept)
            log.warning("request log: %d kept row(s) dropped at close", len(self._kept))
            self._kept = []
        if not self._kept:
            for w in self._waiters:
                w.set()
            self._waiters = []
        return stop

    def _write(self, records: list[RequestRecord], ratios: list[Row], *, last_try: bool) -> None:
        if self._conn is None and (last_try or time.monotonic() >= self._next_open):
            self._try_open()
        conn = self._conn
        if conn is None:
            self._keep_or_drop(records)
            self.ratios.restore(ratios)
            return
        try:
            done = self._backend.write(conn, records, ratios, self._pacer)
        except WriteFailed as exc:
            if not exc.conn_usable:
                self._backend.close(conn)
                self._conn = None
                self._next_open = time.monotonic()  # reconnect at once, then back off
            self._set_unavailable(str(exc))
            self._keep_or_drop(records)
            self.ratios.restore(ratios)
            return
        self._written += done.inserted
        self._dropped_write += done.failed
        if done.failed or done.failed_ratios:
            log.warning(
                "request log: %d row(s) and %d token ratio(s) could not be stored and were"
                " dropped; the rest of the batch was written (first: %s)",
                done.failed,
                done.failed_ratios,
                done.error,
            )
        ignored = len(records) - done.inserted - done.failed
        if ignored:  # a request id already stored (or, for SQLite, no model/timestamp)
            log.warning("request log: %d row(s) ignored (request id already stored)", ignored)
        if not self._available:
            self._set_available()

    def _keep_or_drop(self, records: list[RequestRecord]) -> None:
        if not self._backend.keeps_rows:
            self._dropped_write += len(records)
            return
        room = max(self._queue_size - self._queue.qsize(), 0)
        self._kept = records[:room]
        self._dropped_write += len(records) - len(self._kept)
