"""Retries, backoff and fallback over the ranked candidates.

Same provider first (exponential backoff with ±25 % jitter, ``Retry-After`` honoured up to a
cap), then the next cheapest provider for the *same* model, all within one deadline. The
circuit breaker is consulted before every attempt and told the verdict after it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from arbstr.config import RetrySettings
from arbstr.errors import AllCoolingDown, DeadlineExceeded, UpstreamError
from arbstr.routing.health import HealthBoard
from arbstr.routing.router import Candidate
from arbstr.upstream.client import AttemptFailed

T = TypeVar("T")


@dataclass(slots=True)
class AttemptLog:
    """Failed attempts so far, per provider in order of first failure."""

    failures: dict[str, int] = field(default_factory=dict)
    tried: int = 0  # attempts sent, successful or not
    last_failure: AttemptFailed | None = None
    possibly_billed: bool = False
    upstream_wait_s: float = 0.0  # time spent waiting on upstreams (for overhead)

    @property
    def count(self) -> int:
        return sum(self.failures.values())

    def header(self) -> str | None:
        """``x-arbstr-retries``: e.g. ``2/alpha, 1/beta``; None when nothing failed."""
        if not self.failures:
            return None
        return ", ".join(f"{n}/{p}" for p, n in self.failures.items())

    def add(self, provider: str, failure: AttemptFailed) -> None:
        self.failures[provider] = self.failures.get(provider, 0) + 1
        self.last_failure = failure
        if failure.possibly_billed:
            self.possibly_billed = True


def backoff_delay(attempt: int, settings: RetrySettings, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) on the same provider."""
    base = settings.backoff_base_ms * 2.0 ** (attempt - 1)
    delay_ms = min(base, settings.backoff_max_ms)
    jitter: float = rng.uniform(0.75, 1.25)
    return max(0.0, delay_ms * jitter) / 1000.0


async def run_with_retries(
    candidates: Sequence[Candidate],
    attempt: Callable[[Candidate, float], Awaitable[T]],
    *,
    settings: RetrySettings,
    health: HealthBoard,
    deadline: float,
    log: AttemptLog,
    rng: random.Random | None = None,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> tuple[Candidate, T]:
    """Try ``attempt(candidate, timeout_s)`` over the candidates until one succeeds.

    Raises the upstream's non-retryable 4xx as :class:`AttemptFailed` (the caller passes it
    through), :class:`AllCoolingDown` (503), :class:`DeadlineExceeded` (504) or
    :class:`UpstreamError` (502).
    """
    rng = rng or random.Random()
    tried_any = False
    pool = candidates if settings.fallback else candidates[:1]
    for cand in pool:
        name = cand.provider.name
        for n in range(1, settings.max_attempts_per_provider + 1):
            if not health.acquire(name):
                break
            tried_any = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                health.release(name)
                raise _deadline(log)
            if on_candidate is not None:
                on_candidate(cand)
            log.tried += 1
            t0 = time.monotonic()
            try:
                result = await attempt(cand, remaining)
            except AttemptFailed as failure:
                log.upstream_wait_s += time.monotonic() - t0
                if failure.passes_through:
                    health.release(name)  # the request's fault, not the provider's
                    raise
                log.add(name, failure)
                health.record_failure(name, failure.retry_after_s)
                if failure.kind == "timeout" and not settings.retry_on_timeout:
                    raise UpstreamError(
                        f"{failure.message} (not retried: the provider may have billed it;"
                        " set retry.retry_on_timeout = true to retry)",
                        status=504,
                        code="upstream_timeout",
                    ) from None
                if failure.kind == "invalid":
                    raise UpstreamError(
                        f"{failure.message} (not retried: the provider may have billed it)",
                        code="upstream_invalid_response",
                    ) from None
                if n >= settings.max_attempts_per_provider:
                    break
                if failure.retry_after_s is not None:
                    if failure.retry_after_s > settings.retry_after_cap_s:
                        break  # too long to wait here: fall back to the next provider
                    delay = failure.retry_after_s
                else:
                    delay = backoff_delay(n, settings, rng)
                if time.monotonic() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
                continue
            except BaseException:
                health.release(name)
                raise
            latency_ms = (time.monotonic() - t0) * 1000.0
            log.upstream_wait_s += latency_ms / 1000.0
            health.record_success(name, latency_ms)
            return cand, result
        if time.monotonic() >= deadline:
            raise _deadline(log)
    if not tried_any:
        names = ", ".join(c.provider.name for c in candidates)
        raise AllCoolingDown(
            f"all providers for model {candidates[0].model!r} are cooling down after failures:"
            f" {names}"
        )
    if time.monotonic() >= deadline:
        raise _deadline(log)
    last = log.last_failure
    detail = f": {last.message}" if last is not None else ""
    raise UpstreamError(f"all upstream attempts failed ({log.header() or 'none'}){detail}")


def _deadline(log: AttemptLog) -> DeadlineExceeded:
    last = log.last_failure
    detail = f"; last error: {last.message}" if last is not None else ""
    return DeadlineExceeded(f"request deadline exceeded after {log.count} failed attempts{detail}")
