"""What a request row may hold: a record's values bounded on the way in, and the same bounds
applied again on the way out, to rows an older (or foreign) writer left behind.

- Token counts outside ``0 … MAX_TOKENS`` are unknown (NULL): a count nobody can have sent
  is not clamped into a plausible-looking one.
- Costs outside ``0 … MAX_MSATS`` millisats (10⁹ sats) are unknown (NULL) likewise.
- Durations, the error status and the attempt count are clamped into ``0 … 2**63 - 1``
  (SQLite's integer range; attempts at least 1).
- Text is stored as valid UTF-8 (a lone surrogate becomes ``?``); error messages are capped.

With these bounds no single value can make an insert fail, and the read queries can sum any
number of rows exactly without overflowing SQLite's 64-bit integers (:func:`exact_sum`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from arbstr.money import MAX_MSATS
from arbstr.records import MAX_TOKENS, RequestRecord

INT64_MAX = 2**63 - 1
MAX_ERROR_MESSAGE = 2000
_SPLIT = 10**6  # exact_sum: every part of a bounded value is below this

INSERT_REQUEST = """
INSERT OR IGNORE INTO requests (
    request_id, timestamp, model, provider, policy, streaming, input_tokens, output_tokens,
    cost_sats, provider_cost_sats, latency_ms, ttft_ms, stream_duration_ms, success,
    error_status, error_message, attempts, possibly_billed_sats, computed_cost_sats, api,
    tier, complexity, escalated_from, escalation
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

Row = tuple[object, ...]


# -- record -> row ------------------------------------------------------------------------------


def tokens(value: object) -> int | None:
    """A token count, or None when it is not an integer in ``0 … MAX_TOKENS``."""
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


def sats_column(msats: object) -> float | None:
    """Millisats as the REAL sats column, or None outside ``0 … MAX_MSATS``. Below 2**53
    msats, ``ROUND(x * 1000)`` gives the exact integer back."""
    return msats / 1000 if type(msats) is int and 0 <= msats <= MAX_MSATS else None


def clamped(value: object, low: int = 0) -> int | None:
    """An integer (or finite float, rounded) clamped into ``low … INT64_MAX``; else None."""
    if type(value) is int:
        if low <= value <= INT64_MAX:
            return value
        n = value
    elif isinstance(value, float) and math.isfinite(value):
        n = round(value)
    else:
        return None
    return low if n < low else INT64_MAX if n > INT64_MAX else n


def text(value: str | None) -> str | None:
    """``value`` as text SQLite can store (valid UTF-8)."""
    if type(value) is str and value.isascii():
        return value
    if value is None:
        return None
    return str(value).encode("utf-8", "replace").decode("utf-8")


def record_row(r: RequestRecord) -> Row:
    """A record as the parameters of :data:`INSERT_REQUEST`, every value within bounds."""
    message = text(r.error_message)
    if message is not None and len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    return (
        text(r.request_id),
        text(r.timestamp),
        text(r.model),
        text(r.provider),
        text(r.policy),
        1 if r.streaming else 0,
        tokens(r.input_tokens),
        tokens(r.output_tokens),
        sats_column(r.cost_msats),
        sats_column(r.provider_cost_msats),
        clamped(r.latency_ms) or 0,
        clamped(r.ttft_ms),
        clamped(r.stream_duration_ms),
        1 if r.success else 0,
        clamped(r.error_status),
        message,
        clamped(r.attempts, 1) or 1,
        sats_column(r.possibly_billed_msats),
        sats_column(r.computed_cost_msats),
        text(r.api) or "chat",
        text(r.tier),
        _finite(r.complexity),
        text(r.escalated_from),
        text(r.escalation),
    )


def _finite(value: object) -> float | None:
    """A finite float (a score), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- stored values -> answers ---------------------------------------------------------------


def msats_sql(column: str) -> str:
    """SQL: a REAL sats column as integer millisats, NULL outside ``0 … MAX_MSATS``."""
    return (
        f"CASE WHEN {column} BETWEEN 0 AND {MAX_MSATS // 1000}"
        f" THEN CAST(ROUND({column} * 1000) AS BIGINT) END"
    )


def tokens_sql(column: str) -> str:
    """SQL: a token count column, NULL outside ``0 … MAX_TOKENS``."""
    return f"CASE WHEN {column} BETWEEN 0 AND {MAX_TOKENS} THEN CAST({column} AS BIGINT) END"


def exact_sum(expr: str) -> str:
    """SQL: the sum of a bounded non-negative integer ``expr`` as two sums, of its millions and
    of its remainders (each part of a row is below 10⁶, so neither sum can overflow for any
    table SQLite can hold); :func:`take_sum` joins them into the exact integer."""
    return f"COALESCE(SUM(({expr}) / {_SPLIT}), 0), COALESCE(SUM(({expr}) % {_SPLIT}), 0)"


def take_sum(values: Iterator[Any]) -> int:
    """The next :func:`exact_sum` pair of a result row, as one Python integer."""
    high, low = next(values), next(values)
    return int(high) * _SPLIT + int(low)


def stored_tokens(value: object) -> int | None:
    """A stored token count as answered: None unless an integer in ``0 … MAX_TOKENS``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return tokens(value)


def stored_sats(value: object) -> float | None:
    """A stored sats value as answered, to the millisat: None outside ``0 … MAX_MSATS``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= MAX_MSATS // 1000:  # NaN fails this too
        return None
    return round(float(value), 3)


def stored_int(value: object) -> int | None:
    """A stored duration or status as answered: None unless a number SQLite's range holds."""
    return clamped(value, -INT64_MAX - 1)
