"""What each provider's key can pay for, as pure values: the node's reservation for a request
and a board of per-provider funds (``insufficient`` / ``ok`` / ``unknown``).

A Routstr node reserves a worst-case amount before it forwards a request and answers 402 when
the key's balance cannot cover it; nothing is charged. The board learns from those 402s, from
successful requests and from ``GET /balance/info`` polls, and tells routing which candidates
can afford a request, so that the others are tried last (never dropped: a key may have been
topped up since). Single-threaded (event loop) use only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal, Protocol

from arbstr.money import Rates
from arbstr.routing.router import Candidate

FundsState = Literal["insufficient", "ok", "unknown"]


class ModelLimits(Protocol):
    """What a node publishes about one model's worst case (``sats_pricing.max_cost``,
    ``max_completion_cost``, ``top_provider.max_completion_tokens``), in millisats."""

    @property
    def max_cost_msats(self) -> int | None: ...
    @property
    def max_completion_cost_msats(self) -> int | None: ...
    @property
    def max_completion_tokens(self) -> int | None: ...


def reservation_msats(
    max_cost_msats: int | None,
    max_completion_cost_msats: int | None,
    completion_rate: Rates | Decimal | Fraction | int,
    max_completion_tokens: int | None,
    max_tokens: int | None,
) -> int | None:
    """Millisats a node reserves for one request; None when its ``max_cost`` is unknown.

    ``max_cost`` less what a ``max_tokens`` limit saves on the completion's worst case:
    ``max_cost - max(0, max_completion_cost - max_tokens * completion price)``, where the
    completion's worst case is ``max_completion_cost`` or, when only that is known, the price
    times ``max_completion_tokens``. ``completion_rate`` is the price in msat per token (a
    :class:`Rates`' output rate: sats per 1000 tokens is msat per token). Rounded up (the
    worst case), never below 0 nor above ``max_cost``.
    """
    if max_cost_msats is None:
        return None
    max_cost = max(0, max_cost_msats)
    if max_tokens is None or max_tokens <= 0:
        return max_cost
    price = _msat_per_token(completion_rate)
    worst: Fraction | None = None
    if max_completion_cost_msats is not None:
        worst = Fraction(max_completion_cost_msats)
    elif max_completion_tokens is not None and max_completion_tokens > 0:
        worst = price * max_completion_tokens
    if worst is None:
        return max_cost
    saved = max(Fraction(0), worst - price * max_tokens)
    return min(max_cost, max(0, math.ceil(max_cost - saved)))


def reservation_for(limits: ModelLimits | None, rates: Rates, max_tokens: int | None) -> int | None:
    """:func:`reservation_msats` for a model's published limits (None: not known)."""
    if limits is None:
        return None
    return reservation_msats(
        limits.max_cost_msats,
        limits.max_completion_cost_msats,
        rates,
        limits.max_completion_tokens,
        max_tokens,
    )


def _msat_per_token(rate: Rates | Decimal | Fraction | int) -> Fraction:
    if isinstance(rate, Rates):
        return Fraction(rate.output_n, rate.den)
    return Fraction(rate)


@dataclass(slots=True)
class ProviderFunds:
    balance_msats: int | None = None  # the last balance polled (net of what is reserved)
    balance_at: float | None = None  # time.time() of that poll
    short_at: float | None = None  # time.time() of the 402 not yet cleared; None: none
    needed_msats: int | None = None  # what the request that got the 402 needed, when known
    balance_at_short: int | None = None  # the balance known when the 402 came
    error: str | None = None  # the last balance poll's error

    @property
    def state(self) -> FundsState:
        if self.short_at is not None:
            return "insufficient"
        if self.balance_msats is None:
            return "unknown"
        need = self.needed_msats if self.needed_msats is not None else 1
        return "ok" if self.balance_msats >= need else "insufficient"

    def affords(self, reserve_msats: int | None) -> bool:
        """Whether a request the node would reserve ``reserve_msats`` for (None: unknown) can
        be expected to pass: not after a 402 unless this request needs less than that one did;
        not when a known balance is below the reservation (or, the reservation unknown, below
        what the last 402 needed, or 1 msat)."""
        if self.short_at is not None and (
            reserve_msats is None or self.needed_msats is None or reserve_msats >= self.needed_msats
        ):
            return False
        if self.balance_msats is None:
            return True
        if reserve_msats is None:
            return self.state == "ok"
        return self.balance_msats >= reserve_msats


class FundsBoard:
    """Per-provider funds, for routing (:meth:`predicate`), ``/health`` and the CLI."""

    def __init__(
        self, names: Iterable[str] = (), *, clock: Callable[[], float] = time.time
    ) -> None:
        self._f: dict[str, ProviderFunds] = {n: ProviderFunds() for n in names}
        self._clock = clock
        # any provider with a balance or a 402 on record: else routing skips the check
        self._informed = False

    def get(self, name: str) -> ProviderFunds:
        f = self._f.get(name)
        if f is None:
            f = self._f[name] = ProviderFunds()
        return f

    def state(self, name: str) -> FundsState:
        f = self._f.get(name)
        return "unknown" if f is None else f.state

    def record_short(self, name: str, needed_msats: int | None = None) -> None:
        """The provider answered 402: its key could not cover a request needing
        ``needed_msats`` (None: not known)."""
        f = self.get(name)
        if f.short_at is None:
            f.balance_at_short = f.balance_msats
        f.short_at = self._clock()
        if needed_msats is not None:
            f.needed_msats = needed_msats
        self._informed = True

    def record_success(self, name: str) -> None:
        """A request to the provider was accepted: whatever it needed was covered. On every
        successful attempt, so one dict look-up when there is nothing to clear."""
        f = self._f.get(name)
        if f is not None and f.short_at is not None:
            f.short_at = None
            f.needed_msats = None
            f.balance_at_short = None
            self._refresh_informed()

    def record_balance(self, name: str, balance_msats: int) -> None:
        """A poll of ``/balance/info``. It clears a 402 when it covers what that request
        needed, or, when that is not known, when it is above the balance known at the 402
        (a top-up; the first balance seen after a 402 with none known before is the
        baseline)."""
        f = self.get(name)
        f.balance_msats = balance_msats
        f.balance_at = self._clock()
        f.error = None
        if f.short_at is not None:
            if f.needed_msats is not None:
                cleared = balance_msats >= f.needed_msats
            elif f.balance_at_short is None:
                f.balance_at_short = balance_msats
                cleared = False
            else:
                cleared = balance_msats > f.balance_at_short
            if cleared:
                f.short_at = None
                f.balance_at_short = None
        self._informed = True

    def record_error(self, name: str, error: str) -> None:
        """A poll failed: the last balance is kept (it may be stale; its time says so)."""
        self.get(name).error = error

    def _refresh_informed(self) -> None:
        self._informed = any(
            f.balance_msats is not None or f.short_at is not None for f in self._f.values()
        )

    def predicate(
        self, reserve: Callable[[Candidate], int | None]
    ) -> Callable[[Candidate], bool] | None:
        """``affords(candidate)`` for routing, with ``reserve(candidate)`` the request's
        reservation there (msats, None: unknown); None when nothing is known of any
        provider's funds, so routing checks nothing."""
        if not self._informed:
            return None
        funds = self._f

        def affords(c: Candidate) -> bool:
            f = funds.get(c.provider.name)
            if f is None or (f.short_at is None and f.balance_msats is None):
                return True
            return f.affords(reserve(c))

        return affords

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per provider: ``funds`` and, when a balance is known, ``balance_sats``."""
        out: dict[str, dict[str, object]] = {}
        for name, f in self._f.items():
            entry: dict[str, object] = {"funds": f.state}
            if f.balance_msats is not None:
                entry["balance_sats"] = f.balance_msats / 1000
            out[name] = entry
        return out
