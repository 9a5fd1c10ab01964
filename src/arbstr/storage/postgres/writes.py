"""One batch of request rows (and changed token ratios) written to PostgreSQL in one
transaction: ``executemany`` (pipelined by psycopg) of an insert that ignores a request id
already stored, so a batch retried after a lost connection never duplicates a row.

When the batch fails because of a row (a value PostgreSQL refuses), it is written again row
by row, each in its own savepoint, leaving out only the rows that fail. A database fault
(connection lost, server shutting down, permissions) is raised for the caller to keep the
rows and reconnect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from arbstr.batching import Pacer
from arbstr.records import RequestRecord
from arbstr.storage.rows import Row, record_row
from arbstr.storage.writes import Written

INSERT_REQUEST = """
INSERT INTO requests (
    request_id, timestamp, model, provider, policy, streaming, input_tokens, output_tokens,
    cost_sats, provider_cost_sats, latency_ms, ttft_ms, stream_duration_ms, success,
    error_status, error_message, attempts, possibly_billed_sats, computed_cost_sats, api,
    tier, complexity, escalated_from, escalation
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    %s, %s, %s, %s)
ON CONFLICT (request_id) DO NOTHING
"""

UPSERT_RATIO = """
INSERT INTO token_ratios (policy, model, avg_ratio, sample_count) VALUES (%s, %s, %s, %s)
ON CONFLICT (policy, model) DO UPDATE SET
    avg_ratio = excluded.avg_ratio, sample_count = excluded.sample_count
"""

Conn = psycopg.Connection[tuple[Any, ...]]


def is_row_fault(exc: BaseException) -> bool:
    """A value refused (out of range, NUL in text, a constraint), not the database."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    return isinstance(exc, ValueError | OverflowError | UnicodeError | TypeError)


def pg_row(r: RequestRecord) -> Row:
    """:func:`~arbstr.storage.rows.record_row`, with NUL (which PostgreSQL text cannot hold)
    as U+FFFD."""
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in record_row(r))


def _ratio(row: Row) -> Row:
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)


def write_batch(
    conn: Conn, records: Sequence[RequestRecord], ratios: Sequence[Row], pacer: Pacer
) -> Written:
    """Write ``records`` and ``ratios`` (see the module docstring); raises only database
    faults."""
    try:
        return Written(_at_once(conn, records, ratios, pacer), 0, 0, None)
    except Exception as exc:
        if not is_row_fault(exc) or conn.closed:
            raise
        first = f"{type(exc).__name__}: {exc}"
    return _row_by_row(conn, records, ratios, first)


def _at_once(
    conn: Conn, records: Sequence[RequestRecord], ratios: Sequence[Row], pacer: Pacer
) -> int:
    inserted = 0
    with conn.transaction(), conn.cursor() as cur:
        # slices keep each Python burst short, as for SQLite; one transaction for the batch
        for part in pacer.slices(records):
            cur.executemany(INSERT_REQUEST, [pg_row(r) for r in part])
            inserted += max(cur.rowcount, 0)
        if ratios:
            cur.executemany(UPSERT_RATIO, [_ratio(r) for r in ratios])
    return inserted


def _row_by_row(
    conn: Conn, records: Sequence[RequestRecord], ratios: Sequence[Row], first: str
) -> Written:
    inserted = failed = failed_ratios = 0
    error: str | None = None
    with conn.transaction(), conn.cursor() as cur:
        for r in records:
            try:
                with conn.transaction():  # a savepoint: a refused row costs only itself
                    cur.execute(INSERT_REQUEST, pg_row(r))
                    inserted += max(cur.rowcount, 0)
            except Exception as exc:
                if not is_row_fault(exc):
                    raise
                failed += 1
                error = error or f"request {r.request_id!r}: {type(exc).__name__}: {exc}"
        for ratio in ratios:
            try:
                with conn.transaction():
                    cur.execute(UPSERT_RATIO, _ratio(ratio))
            except Exception as exc:
                if not is_row_fault(exc):
                    raise
                failed_ratios += 1
                error = error or f"token ratio {ratio[:2]!r}: {type(exc).__name__}: {exc}"
    return Written(inserted, failed, failed_ratios, error or first)
