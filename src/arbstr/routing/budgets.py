"""Spend budgets (``[[budgets]]``): what each has used in its current window, what requests in
flight hold against it, and the pure decisions on a routed request.

A request is admitted on a candidate only when every ``reject`` budget covering it can still
take the candidate's estimate on top of what is used and held; candidates that cannot are
dropped (none left: the request is refused). An exhausted ``downgrade`` budget never refuses:
it tells the caller to route an ``auto`` request within the cheapest tier. An admitted
request holds its estimate until it settles with what it really cost, so concurrent requests
cannot overshoot. No I/O and no awaits: admission and hold run back to back on the event
loop, so no other request interleaves."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from arbstr.config import Budget
from arbstr.routing.calendar import utc_now, window
from arbstr.routing.router import Candidate


@dataclass(slots=True)
class BudgetState:
    """One budget in its current window."""

    budget: Budget
    start: datetime
    reset: datetime
    used_msats: int = 0  # settled by requests that started in this window
    held_msats: int = 0  # estimates of requests in flight
    limit: int = field(init=False)  # (the budget's, at hand on the request path)
    reject: bool = field(init=False)

    def __post_init__(self) -> None:
        self.limit = self.budget.limit_msats
        self.reject = self.budget.action == "reject"

    @property
    def remaining_msats(self) -> int:
        return self.limit - self.used_msats - self.held_msats

    def takes(self, msats: int) -> bool:
        return self.used_msats + self.held_msats + msats <= self.limit


@dataclass(slots=True)
class Hold:
    """What one admitted request holds: its start, and ``msats`` on each of ``states``."""

    at: datetime
    states: tuple[BudgetState, ...]
    msats: int


@dataclass(slots=True)  # (not frozen: built on the request path, where frozen's init is slow)
class Admission:
    candidates: tuple[Candidate, ...]  # those no reject budget stops, in rank order
    stopped_by: BudgetState | None  # a reject budget that dropped a candidate
    downgrade: BudgetState | None  # an exhausted downgrade budget covering the first one
    covering: tuple[BudgetState, ...]  # the budgets covering the first one ...
    estimate: int  # ... and its estimate: what a hold takes
    at: datetime  # when it was admitted: the window its cost counts in


@dataclass(frozen=True, slots=True)
class Spent:
    """Settled spend of one UTC day for one (policy, model, provider), from the request log."""

    day: datetime
    policy: str | None
    model: str | None
    provider: str | None
    msats: int


Cost = Callable[[Candidate], int]


class BudgetBook:
    """The budgets' state. A budget scoped to no model and no provider covers every candidate
    of a request alike: it is checked on the first candidate that passes the others (a
    fallback to another candidate then costs what it costs: an estimate error like any)."""

    def __init__(self, budgets: Sequence[Budget], clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        now = clock()
        self.states = [BudgetState(b, *window(b.per, now)) for b in budgets]
        self.enabled = bool(self.states)
        self._per_candidate = [s for s in self.states if s.budget.model or s.budget.provider]
        self._per_request = [s for s in self.states if s not in self._per_candidate]
        self._for_policy: dict[str | None, tuple[BudgetState, ...]] = {}
        self._next_reset = min((s.reset for s in self.states), default=now)

    def earliest_start(self) -> datetime:
        """Where the request log must be read from to know every budget's use."""
        return min((s.start for s in self.states), default=self.clock())

    def load(self, spent: Iterable[Spent]) -> None:
        """Each budget's use in its window, from the log's settled spend (at start)."""
        self.roll()
        for s in self.states:
            s.used_msats = 0
        for row in spent:
            for s in self.states:
                if s.start <= row.day < s.reset and s.budget.covers(
                    row.policy, row.model, row.provider
                ):
                    s.used_msats += row.msats

    def roll(self) -> datetime:
        """Move every budget whose window ended into the current one; returns now."""
        now = self.clock()
        if now >= self._next_reset:
            self._roll(now)
        return now

    def _roll(self, now: datetime) -> None:
        if not self.states:
            return
        for s in self.states:
            if now >= s.reset:  # a new window: held requests of the old one stay held
                s.start, s.reset = window(s.budget.per, now)
                s.used_msats = 0
        self._next_reset = min(s.reset for s in self.states)

    def _request_level(self, policy: str | None) -> tuple[BudgetState, ...]:
        found = self._for_policy.get(policy)
        if found is None:
            found = tuple(s for s in self._per_request if s.budget.covers(policy, None, None))
            self._for_policy[policy] = found
        return found

    def _scoped(self, policy: str | None, c: Candidate) -> tuple[BudgetState, ...]:
        """The budgets scoped to models or providers that cover ``c``."""
        name = c.provider.name
        return tuple(s for s in self._per_candidate if s.budget.covers(policy, c.model, name))

    def covering(self, policy: str | None, c: Candidate) -> tuple[BudgetState, ...]:
        """The budgets a request of ``policy`` served by ``c`` counts on."""
        level = self._request_level(policy)
        return level + self._scoped(policy, c) if self._per_candidate else level

    def admit(self, policy: str | None, candidates: Sequence[Candidate], cost: Cost) -> Admission:
        """Which candidates the budgets let serve the request (see the module docstring)."""
        now = self.roll()
        if self._per_candidate:
            return self._admit_each(policy, candidates, cost, now)
        states = self._request_level(policy)
        if not states:
            return Admission(tuple(candidates), None, None, (), 0, now)
        stopped: BudgetState | None = None
        for i, c in enumerate(candidates):  # (the request path: plain loops, few calls)
            est = cost(c)
            over = None
            for st in states:
                if st.reject and st.used_msats + st.held_msats + est > st.limit:
                    over = st
                    break
            if over is None:
                return Admission(
                    tuple(candidates[i:]), stopped, _downgrade(states, est), states, est, now
                )
            stopped = stopped or over
        return Admission((), stopped, None, (), 0, now)

    def _admit_each(
        self, policy: str | None, candidates: Sequence[Candidate], cost: Cost, now: datetime
    ) -> Admission:
        """:meth:`admit` with budgets scoped to models or providers: each candidate checked
        on those covering it, the first also on the request-wide ones."""
        kept: list[Candidate] = []
        stopped: BudgetState | None = None
        first: tuple[BudgetState, ...] | None = None
        first_est = 0
        for c in candidates:
            states = self.covering(policy, c) if first is None else self._scoped(policy, c)
            est = cost(c) if states else 0
            over = next((s for s in states if s.reject and not s.takes(est)), None)
            if over is not None:
                stopped = stopped or over
                continue
            kept.append(c)
            if first is None:
                first, first_est = states, est
        down = _downgrade(first, first_est) if first else None
        return Admission(tuple(kept), stopped, down, first or (), first_est, now)

    def hold(self, adm: Admission) -> tuple[Hold, int | None]:
        """Hold the admitted request's estimate on every budget covering its first candidate;
        returns the hold and the least any of them has left after it (None: none covers it)."""
        msats = adm.estimate
        left: int | None = None
        for s in adm.covering:
            s.held_msats += msats
            rest = s.limit - s.used_msats - s.held_msats
            if left is None or rest < left:
                left = rest
        return Hold(adm.at, adm.covering, msats), left

    def settle(
        self, hold: Hold, policy: str | None, model: str | None, provider: str | None, msats: int
    ) -> list[BudgetState]:
        """Release ``hold`` and count what the request cost on the budgets covering how it
        was answered, when it started in their current window (as the log will count it; a
        window that ended since is reset by the next roll). Returns those budgets."""
        for s in hold.states:
            s.held_msats -= hold.msats
        counted: list[BudgetState] = []
        if msats <= 0:
            return counted
        for s in self.states:
            if s.start <= hold.at < s.reset and s.budget.covers(policy, model, provider):
                s.used_msats += msats
                counted.append(s)
        return counted


def _downgrade(states: Sequence[BudgetState], est: int) -> BudgetState | None:
    """A downgrade budget among ``states`` that cannot take ``est``."""
    for s in states:
        if not s.reject and s.used_msats + s.held_msats + est > s.limit:
            return s
    return None


def day_of(text: str) -> datetime:
    """A stored ``YYYY-MM-DD…`` timestamp's UTC day."""
    return datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
