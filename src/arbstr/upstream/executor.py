"""Runs the attempts of one request: the I/O around :func:`arbstr.routing.retry.decide`.

The candidates are tried in order, each up to ``max_attempts_per_provider`` times; this
module asks the circuit breaker before every attempt and tells it the verdict after, sleeps
the backoff the policy chose and keeps everything within one deadline. A 402 (insufficient
funds) is no verdict on the provider's health: it goes to the funds board instead.
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
from arbstr.routing.funds import FundsBoard
from arbstr.routing.health import HealthBoard
from arbstr.routing.retry import Fail, Retry, decide
from arbstr.routing.router import Candidate
from arbstr.upstream.client import AttemptFailed

T = TypeVar("T")


@dataclass(slots=True)
class AttemptLog:
    """Failed attempts so far, per provider in order of first failure."""

    failures: dict[str, int] = field(default_factory=dict)
    tried: int = 0  # attempts sent, successful or not
    last_failure: AttemptFailed | None = None
    billed: list[str] = field(default_factory=list)  # provider of each possibly billed attempt
    # an upstream may be working on (and billing) the request: an attempt is running, or it
    # succeeded and its answer (a stream) is still being read; the caller clears it at the end
    in_flight: bool = False
    # time spent waiting on upstreams and in backoff sleeps: not arbstr's own overhead
    waited_s: float = 0.0

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
            self.billed.append(provider)

    @property
    def possibly_billed(self) -> bool:
        return bool(self.billed)


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
    funds: FundsBoard | None = None,
    reserve: Callable[[Candidate], int | None] | None = None,
) -> tuple[Candidate, T]:
    """Try ``attempt(candidate, timeout_s)`` over the candidates until one succeeds.

    Raises the upstream's non-retryable 4xx as :class:`AttemptFailed` (the caller passes it
    through; so is a 402 when no other candidate is left), :class:`AllCoolingDown` (503),
    :class:`DeadlineExceeded` (504) or :class:`UpstreamError` (502, or 504 for a timeout that
    is not retried). ``funds`` learns of 402s (with ``reserve(candidate)``, the msats the
    request needed there, when known) and of successes.
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
            log.in_flight = True
            try:
                result = await attempt(cand, remaining)
            except AttemptFailed as exc:
                log.in_flight = False
                log.waited_s += time.monotonic() - t0
                decision = decide(exc.failure, n, settings, rng.random())
                if exc.kind == "funds":  # free, and no strike: the key's balance, not the node
                    health.release(name)
                    log.add(name, exc)
                    if funds is not None:
                        funds.record_short(name, reserve(cand) if reserve is not None else None)
                    if isinstance(decision, Fail):
                        raise
                    break
                if isinstance(decision, Fail) and decision.error is None:
                    health.release(name)  # the request's fault, not the provider's
                    raise
                log.add(name, exc)
                health.record_failure(name, exc.retry_after_s)
                if isinstance(decision, Fail) and decision.error is not None:
                    raise decision.error from None
                if isinstance(decision, Retry) and await _sleep_within(decision, deadline, log):
                    continue
                break  # Fallback, or no time left for the backoff: try the next provider
            except BaseException:
                health.release(name)
                raise
            elapsed = time.monotonic() - t0
            log.waited_s += elapsed
            health.record_success(name, elapsed * 1000.0)
            if funds is not None:
                funds.record_success(name)
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
    if last is not None and last.kind == "funds":
        raise last  # no candidate left after a 402: the client sees it as the node sent it
    detail = f": {last.message}" if last is not None else ""
    message = f"all upstream attempts failed ({log.header() or 'none'}){detail}"
    if last is not None and last.kind == "timeout":  # retried (retry_on_timeout), and timed out
        raise UpstreamError(message, status=504, code="upstream_timeout")
    raise UpstreamError(message)


async def _sleep_within(retry: Retry, deadline: float, log: AttemptLog) -> bool:
    """Sleep the backoff unless it would end past the deadline; the time slept counts as
    waiting."""
    t0 = time.monotonic()
    if t0 + retry.delay_s >= deadline:
        return False
    await asyncio.sleep(retry.delay_s)
    log.waited_s += time.monotonic() - t0
    return True


def _deadline(log: AttemptLog) -> DeadlineExceeded:
    last = log.last_failure
    detail = f"; last error: {last.message}" if last is not None else ""
    return DeadlineExceeded(f"request deadline exceeded after {log.count} failed attempts{detail}")
