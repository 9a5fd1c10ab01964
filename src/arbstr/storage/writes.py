"""One batch of request rows (and changed token ratios), written in one transaction.

The batch goes in with ``executemany``, in paced slices, and is committed once. When that
fails because of a row (a value SQLite refuses, a constraint), the transaction is rolled
back and the batch is written again row by row in a new one, leaving out only the rows
that fail: one bad row never costs the others. When it fails because of the database
(locked, read-only, disk full, corrupt) it is rolled back and the error raised, for the
caller to treat the database as unavailable. Either way the connection is never left inside
a transaction, so the next batch can begin its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from arbstr.batching import Pacer
from arbstr.records import RequestRecord
from arbstr.storage.rows import INSERT_REQUEST, Row, record_row

UPSERT_RATIO = """
INSERT INTO token_ratios (policy, model, avg_ratio, sample_count) VALUES (?, ?, ?, ?)
ON CONFLICT (policy, model) DO UPDATE SET
    avg_ratio = excluded.avg_ratio, sample_count = excluded.sample_count
"""


@dataclass(frozen=True, slots=True)
class Written:
    inserted: int  # rows added (a request id already stored is ignored, not counted)
    failed: int  # rows left out because SQLite refused them
    failed_ratios: int
    error: str | None  # why the first refused row or ratio was refused


def is_database_fault(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be written, rather than that a row is bad.
    Row faults: constraint and binding errors, values Python cannot bind (OverflowError,
    UnicodeEncodeError …)."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError):
        return True
    return type(exc) is sqlite3.DatabaseError  # "file is not a database", "malformed"


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def write_batch(
    conn: sqlite3.Connection,
    records: Sequence[RequestRecord],
    ratios: Sequence[Row],
    pacer: Pacer,
) -> Written:
    """Write ``records`` and ``ratios`` (see the module docstring); raises only database
    faults (and BaseExceptions), after rolling back."""
    try:
        return Written(_at_once(conn, records, ratios, pacer), 0, 0, None)
    except BaseException as exc:
        rollback(conn)
        if not isinstance(exc, Exception) or is_database_fault(exc):
            raise
        first = _describe(exc)
    try:
        return _row_by_row(conn, records, ratios, pacer, first)
    except BaseException:
        rollback(conn)
        raise


def _begin(conn: sqlite3.Connection) -> None:
    rollback(conn)  # never "cannot start a transaction within a transaction"
    conn.execute("BEGIN IMMEDIATE")


def _at_once(
    conn: sqlite3.Connection, records: Sequence[RequestRecord], ratios: Sequence[Row], pacer: Pacer
) -> int:
    _begin(conn)
    inserted = 0
    for part in pacer.slices(records):
        inserted += conn.executemany(INSERT_REQUEST, [record_row(r) for r in part]).rowcount
    if ratios:
        conn.executemany(UPSERT_RATIO, ratios)
    conn.execute("COMMIT")
    return inserted


def _row_by_row(
    conn: sqlite3.Connection,
    records: Sequence[RequestRecord],
    ratios: Sequence[Row],
    pacer: Pacer,
    first: str,
) -> Written:
    _begin(conn)
    inserted = failed = failed_ratios = 0
    error: str | None = None
    for part in pacer.slices(records):
        for r in part:
            try:
                inserted += conn.execute(INSERT_REQUEST, record_row(r)).rowcount
            except Exception as exc:
                _reraise_unless_row_fault(conn, exc)
                failed += 1
                error = error or f"request {r.request_id!r}: {_describe(exc)}"
    for ratio in ratios:
        try:
            conn.execute(UPSERT_RATIO, ratio)
        except Exception as exc:
            _reraise_unless_row_fault(conn, exc)
            failed_ratios += 1
            error = error or f"token ratio {ratio[:2]!r}: {_describe(exc)}"
    conn.execute("COMMIT")
    return Written(inserted, failed, failed_ratios, error or first)


def _reraise_unless_row_fault(conn: sqlite3.Connection, exc: Exception) -> None:
    # a failed statement leaves the transaction open; if SQLite ended it, the row was not
    # the problem and what was written so far is gone
    if is_database_fault(exc) or not conn.in_transaction:
        raise exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
