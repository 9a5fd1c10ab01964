"""The request log's write side: a :class:`~arbstr.records.RecordSink` backed by SQLite.

The request path only calls :meth:`Store.submit`, which puts the record on an in-memory
queue (a ``SimpleQueue`` put, ~0.2 µs) or, when the queue is full, drops it and counts it.
One writer thread drains the queue and writes each batch (up to ``batch_size`` items) in
one transaction, in short slices with pauses between them (:class:`~arbstr.batching.Pacer`)
so that the event loop on the same core never waits behind a whole batch. Learned token
ratios that changed are saved with each batch.

Values are bounded on the way in (:mod:`arbstr.storage.rows`), and a row SQLite still
refuses is left out alone, the rest of its batch written (:mod:`arbstr.storage.writes`).
A database that cannot be opened or written never breaks proxying: rows are then dropped
and counted, a warning is logged once per outage, and :attr:`Store.available` is false.
The writer tries to (re)open an unopened database at most every ``reopen_interval_s``.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time

from arbstr.batching import Pacer, Poller
from arbstr.records import RatioBook, RequestRecord
from arbstr.storage.rows import Row, text
from arbstr.storage.schema import SchemaTooNew, migrate, user_version
from arbstr.storage.writes import is_database_fault, rollback, write_batch

_INTERVAL_S = 0.02  # the writer takes what is queued every 20 ms (arbstr.batching.Poller)

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


class Store:
    """SQLite request log: a non-blocking :class:`RecordSink` with one writer thread."""

    def __init__(
        self,
        path: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        busy_timeout_s: float = 5.0,
        reopen_interval_s: float = 30.0,
        pacer: Pacer | None = None,
    ) -> None:
        """Use :meth:`open`; this constructor does no I/O and starts no thread."""
        self.path = path
        self._pacer = pacer or Pacer()
        self.ratios = StoredRatios()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._poller = Poller(self._queue, _INTERVAL_S, batch_size, _STOP)
        self._queue_size = queue_size
        self._busy_timeout_s = busy_timeout_s
        self._reopen_interval_s = reopen_interval_s
        self._conn: sqlite3.Connection | None = None
        self._available = False
        self._error: str | None = None
        self._next_open = 0.0
        self._dropped_submit = 0  # queue full or closed; written only by the event loop
        self._dropped_write = 0  # written only by the writer thread
        self._written = 0
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="arbstr-db-writer", daemon=True)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        busy_timeout_s: float = 5.0,
        reopen_interval_s: float = 30.0,
        pacer: Pacer | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the database and start the writer.

        Never raises for database problems: the store is then unavailable, rows are dropped
        and counted, and a warning says why. Blocking: call it before serving, or in a thread.
        """
        store = cls(
            path,
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
        if self._closed or self._queue.qsize() >= self._queue_size:
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
        """Why the database is unavailable, when it is."""
        return None if self._available else self._error

    @property
    def dropped(self) -> int:
        """Request rows not written: queue full, or database unavailable."""
        return self._dropped_submit + self._dropped_write

    @property
    def written(self) -> int:
        return self._written

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued so far has been written (or dropped)."""
        if not self._thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything still queued, stop the writer and close the database. Idempotent."""
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
            self._conn.close()
            self._conn = None
        self._available = False
        self._error = "closed"

    # -- the writer thread --------------------------------------------------------------------

    def _try_open(self) -> None:
        self._next_open = time.monotonic() + self._reopen_interval_s
        try:
            conn = connect_writer(self.path, self._busy_timeout_s)
        except SchemaTooNew as exc:
            self._set_unavailable(str(exc), level=logging.ERROR)
            return
        except (sqlite3.Error, OSError) as exc:
            self._set_unavailable(f"cannot open database {self.path}: {exc}")
            return
        try:
            rows = conn.execute(
                "SELECT policy, model, avg_ratio, sample_count FROM token_ratios"
            ).fetchall()
        except sqlite3.Error as exc:
            conn.close()
            self._set_unavailable(f"cannot read {self.path}: {exc}")
            return
        for policy, model, avg, n in rows:
            if policy is None or model is None or avg is None or not n:
                continue
            # after a reopen, what was learned meanwhile in memory is newer than the table
            if self.ratios.get(str(policy), str(model)) is None:
                self.ratios.load(str(policy), str(model), float(avg), int(n))
        self._conn = conn
        self._set_available()
        log.info(
            "request log: %s (schema %d, %d learned ratios)",
            self.path,
            user_version(conn),
            len(rows),
        )

    def _set_unavailable(self, reason: str, level: int = logging.WARNING) -> None:
        was = self._available or self._error is None
        self._available = False
        self._error = reason
        if was:
            log.log(
                level,
                "request log unavailable: %s; proxying continues, rows are dropped"
                " (see log_dropped in /health)",
                reason,
            )

    def _set_available(self) -> None:
        if not self._available and self._error is not None:
            log.warning(
                "request log writable again: %s (%d rows dropped so far)",
                self.path,
                self.dropped,
            )
        self._available = True
        self._error = None

    def _run(self) -> None:
        # one transaction per batch: under load one wake-up writes many rows
        while not self._process(self._poller.next_batch()):
            pass

    def _process(self, batch: list[_Item]) -> bool:
        records: list[RequestRecord] = []
        waiters: list[threading.Event] = []
        stop = False
        for item in batch:
            if isinstance(item, RequestRecord):
                records.append(item)
            elif isinstance(item, threading.Event):
                waiters.append(item)
            else:
                stop = True
        ratios = self.ratios.take_changes()
        if records or ratios:
            try:
                self._write(records, ratios)
            except Exception:  # never let the writer thread die
                log.exception("request log writer failed")
                self._dropped_write += len(records)
                if self._conn is not None:
                    rollback(self._conn)
        for w in waiters:
            w.set()
        return stop

    def _write(self, records: list[RequestRecord], ratios: list[Row]) -> None:
        if self._conn is None and time.monotonic() >= self._next_open:
            self._try_open()
        conn = self._conn
        if conn is None:
            self._dropped_write += len(records)
            return
        try:
            done = write_batch(conn, records, ratios, self._pacer)
        except Exception as exc:  # rolled back; a row's fault never gets here
            self._dropped_write += len(records)
            reason = f"cannot write to {self.path}: {exc}"
            if not is_database_fault(exc):
                reason += f" ({type(exc).__name__})"
            self._set_unavailable(reason)
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
        if ignored:  # INSERT OR IGNORE: a request id already stored, or no model/timestamp
            log.warning("request log: %d row(s) ignored (request id already stored)", ignored)
        if not self._available:
            self._set_available()
