"""Budgets on the request path: a routed request checked against them (its candidates
filtered, an ``auto`` one moved to the cheapest tier, or a 429 naming the budget and its
reset), the estimate held while it runs, and ``GET /v1/budgets``."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from arbstr.config import TIER_NAMES
from arbstr.errors import ArbstrError, BudgetExceeded
from arbstr.money import format_msats
from arbstr.records import RequestRecord
from arbstr.routing import Candidate, Route, cost_msats
from arbstr.routing.budgets import Admission, BudgetBook, BudgetState, Cost
from arbstr.server.exchange import Exchange
from arbstr.storage.params import format_ts

if TYPE_CHECKING:
    from arbstr.storage.postgres.budgets import SharedBudgets

log = logging.getLogger("arbstr.budgets")

CHEAPEST_TIER = TIER_NAMES[0]


def within_budgets(
    book: BudgetBook,
    ex: Exchange,
    r: Route,
    auto: bool,
    reroute: Callable[[str], Route],
    cost: Cost,
) -> Route:
    """``r`` as the budgets allow it (see :mod:`arbstr.routing.budgets`); raises
    :class:`BudgetExceeded` when a reject budget leaves no candidate."""
    policy = ex.policy
    adm = book.admit(policy, r.candidates, cost)
    if adm.downgrade is not None and auto and r.tier != CHEAPEST_TIER:
        try:
            lower = reroute(CHEAPEST_TIER)
        except ArbstrError:
            lower = None  # nothing fits the cheapest tier: the tier routed stays
        if lower is not None:
            name = adm.downgrade.budget.name
            ex.note = f"downgraded to {CHEAPEST_TIER}: budget {name!r} is used up"
            log.info("budget %r used up: %s routed within %s", name, ex.request_id, CHEAPEST_TIER)
            r, adm = lower, book.admit(policy, lower.candidates, cost)
    if not adm.candidates:
        assert adm.stopped_by is not None
        raise exceeded(adm.stopped_by, book.clock())
    ex.budget_admission = adm
    return _narrowed(r, adm)


def admitted_reask(
    book: BudgetBook, policy: str | None, r: Route, cost: Cost
) -> tuple[Route, Admission] | None:
    """A re-ask's route (one tier up) as the budgets allow it, and the admission its hold is
    taken from: None when a reject budget leaves no candidate or a downgrade budget is used
    up (no spending up then)."""
    adm = book.admit(policy, r.candidates, cost)
    if not adm.candidates or adm.downgrade is not None:
        return None
    return _narrowed(r, adm), adm


def _narrowed(r: Route, adm: Admission) -> Route:
    """``r`` with only the candidates ``adm`` kept."""
    if len(adm.candidates) == len(r.candidates):
        return r
    return Route(adm.candidates[0].model, adm.candidates, r.tier, r.reason)


def estimate(in_tokens: int, out_tokens: Callable[[str], int]) -> Cost:
    """A candidate's estimated cost of the request, in msats (what a budget holds)."""

    def cost(c: Candidate) -> int:
        return cost_msats(c.rates, in_tokens, out_tokens(c.model))

    return cost


def hold(book: BudgetBook, ex: Exchange) -> None:
    """Hold the admitted estimate for ``ex`` until its row settles it (``x-arbstr-budget-
    remaining-sats`` says what the tightest budget covering it has left after the hold)."""
    adm, ex.budget_admission = ex.budget_admission, None
    if adm is not None:
        ex.budget_hold, ex.budget_left_msats = book.hold(adm)


def settle(
    book: BudgetBook, ex: Exchange, record: RequestRecord, shared: SharedBudgets | None
) -> None:
    """Release ``ex``'s hold and count what its row says it cost (or may have been billed),
    here and, with shared budgets, in the database."""
    held, ex.budget_hold = ex.budget_hold, None
    assert held is not None
    spent = (record.cost_msats or 0) + (record.possibly_billed_msats or 0)
    counted = book.settle(held, record.policy, record.model, record.provider, spent)
    if shared is not None:
        shared.settle_later(ex.request_id, counted, spent)


def exceeded(s: BudgetState, now: datetime) -> BudgetExceeded:
    b = s.budget
    reset = format_ts(s.reset)
    err = BudgetExceeded(
        f"budget {b.name!r} ({b.scope}, {format_msats(b.limit_msats)} sats per {b.per}) is"
        f" used up: {format_msats(s.used_msats)} sats spent, {format_msats(s.held_msats)} held"
        f" by requests in flight; it resets at {reset}"
    )
    wait_s = max(1, math.ceil((s.reset - now).total_seconds()))
    err.headers = (
        (b"retry-after", str(wait_s).encode()),
        (b"x-should-retry", b"false"),  # the openai and anthropic SDKs would retry a 429
        (b"x-arbstr-budget", b.name.encode()),
        (b"x-arbstr-budget-reset", reset.encode()),
        (b"x-arbstr-budget-remaining-sats", format_msats(max(0, s.remaining_msats)).encode()),
    )
    return err


def budgets_payload(book: BudgetBook) -> dict[str, object]:
    """``GET /v1/budgets``: each budget's limit, use, holds and reset, in sats."""
    book.roll()
    data = []
    for s in book.states:
        b = s.budget
        data.append(
            {
                "name": b.name,
                "per": b.per,
                "action": b.action,
                "scope": {"policy": b.policy, "model": b.model, "provider": b.provider},
                "limit_sats": float(format_msats(b.limit_msats)),
                "used_sats": float(format_msats(s.used_msats)),
                "in_flight_sats": float(format_msats(s.held_msats)),
                "remaining_sats": float(format_msats(s.remaining_msats)),
                "exhausted": s.remaining_msats <= 0,
                "window_start": format_ts(s.start),
                "resets_at": format_ts(s.reset),
            }
        )
    return {"object": "list", "data": data}
