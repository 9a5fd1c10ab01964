"""The retry policy: what to do after one failed attempt, as a pure function.

Money decides: a failed request is not charged with Routstr ``sk-`` keys, so failures are
retried (same provider with backoff, then fallback); an attempt that may have been billed
(read timeout, a 2xx that is not a completion) is not sent again unless configured. A 402
(the key's balance cannot cover the node's reservation) is free and says nothing about the
model: the next provider is tried, the same one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arbstr.config import RetrySettings
from arbstr.errors import UpstreamError

FailureKind = Literal["connect", "status", "funds", "reset", "timeout", "invalid"]
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
JITTER = 0.25  # the backoff is scaled by a factor in [1 - JITTER, 1 + JITTER]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: ``connect`` (never sent), ``status`` (an HTTP error answer),
    ``funds`` (a 402: the key cannot pay the node's reservation; nothing charged), ``reset``
    (broken before a complete answer), ``timeout`` (read timeout after sending) or
    ``invalid`` (a 2xx that is not a completion)."""

    kind: FailureKind
    status: int | None = None
    retry_after_s: float | None = None
    message: str = ""

    @property
    def possibly_billed(self) -> bool:
        return self.kind in ("timeout", "invalid")

    @property
    def passes_through(self) -> bool:
        """An upstream error status other than 429/5xx-retryable: the request's fault."""
        return self.kind == "status" and self.status not in RETRYABLE_STATUS


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the same provider again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Fallback:
    """Stop with this provider; go on to the next candidate."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Stop the request. ``error`` is what the client gets; None means the upstream's own
    answer is passed through (a 4xx that is the request's fault, not the provider's)."""

    error: UpstreamError | None


Decision = Retry | Fallback | Fail


def backoff_s(attempt: int, settings: RetrySettings, jitter: float) -> float:
    """Seconds before retry ``attempt`` (1-based): ``base * 2^(attempt-1)`` capped at
    ``backoff_max_ms``, scaled by ``1 ± JITTER`` as ``jitter`` goes over [0, 1]."""
    nominal_ms = min(settings.backoff_base_ms * 2.0 ** (attempt - 1), settings.backoff_max_ms)
    factor = 1.0 - JITTER + 2.0 * JITTER * min(max(jitter, 0.0), 1.0)
    return max(0.0, nominal_ms * factor) / 1000.0


def decide(failure: Failure, attempt: int, settings: RetrySettings, jitter: float) -> Decision:
    """After ``failure`` on the ``attempt``-th (1-based) try of one provider: retry it after a
    delay, fall back to the next provider, or fail. ``jitter`` is a uniform draw in [0, 1]."""
    if failure.passes_through:
        return Fail(None)
    if failure.kind == "funds":
        # the provider's problem, not the request's nor the model's: never the same provider
        # again (its balance will not grow in a backoff); without fallback, passed through
        return Fallback("insufficient funds (HTTP 402)") if settings.fallback else Fail(None)
    if failure.kind == "timeout" and not settings.retry_on_timeout:
        return Fail(
            UpstreamError(
                f"{failure.message} (not retried: the provider may have billed it;"
                " set retry.retry_on_timeout = true to retry)",
                status=504,
                code="upstream_timeout",
            )
        )
    if failure.kind == "invalid":
        return Fail(
            UpstreamError(
                f"{failure.message} (not retried: the provider may have billed it)",
                code="upstream_invalid_response",
            )
        )
    if attempt >= settings.max_attempts_per_provider:
        return _next_provider(failure, settings, f"{attempt} attempts failed")
    wait = failure.retry_after_s
    if wait is not None:
        if wait > settings.retry_after_cap_s:
            reason = f"Retry-After {wait:g} s is above retry.retry_after_cap_s"
            return _next_provider(failure, settings, reason)
        return Retry(max(0.0, wait))
    return Retry(backoff_s(attempt, settings, jitter))


def _next_provider(failure: Failure, settings: RetrySettings, reason: str) -> Fallback | Fail:
    if settings.fallback:
        return Fallback(reason)
    return Fail(UpstreamError(f"{failure.message} ({reason}; retry.fallback is off)"))
