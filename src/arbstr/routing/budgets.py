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
from dataclasses import dataclass
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

    @property
    def remaining_msats(self) -> int:
        return self.budget.limit_msats - self.used_msats - self.held_msats

    def takes(self, msats: int) -> bool:
        return self.used_msats + self.held_msats + msats <= self.budget.limit_msats


@dataclass(frozen=True, slots=True)
class Hold:
    """What one admitted request holds: its start and each budget's share."""

    at: datetime
    parts: tuple[tuple[BudgetState, int], ...]


@dataclass(frozen=True, slots=True)
class Admission:
    candidates: tuple[Candidate, ...]  # those no reject budget stops, in rank order
    stopped_by: BudgetState | None  # a reject budget that dropped a candidate
    downgrade: BudgetState | None  # an exhausted downgrade budget covering the first one


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
    def __init__(self, budgets: Sequence[Budget], clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        now = clock()
        self.states = [BudgetState(b, *window(b.per, now)) for b in budgets]
        self.enabled = bool(self.states)

    def earliest_start(self) -> datetime:
        """Where the request log must be read from to know every budget's use."""
        return min((s.start for s in self.states), default=self.clock())

    def load(self, spent: Iterable[Spent]) -> None:
        """Each budget's use in its window, from the log's settled spend (at start)."""
        self._roll(self.clock())
        for s in self.states:
            s.used_msats = 0
        for row in spent:
            for s in self.states:
                if s.start <= row.day < s.reset and s.budget.covers(
                    row.policy, row.model, row.provider
                ):
                    s.used_msats += row.msats

    def roll(self) -> None:
        """Move every budget whose window ended into the current one."""
        self._roll(self.clock())

    def _roll(self, now: datetime) -> None:
        for s in self.states:
            if now >= s.reset:  # a new window: held requests of the old one stay held
                s.start, s.reset = window(s.budget.per, now)
                s.used_msats = 0

    def covering(self, policy: str | None, c: Candidate) -> list[BudgetState]:
        return [s for s in self.states if s.budget.covers(policy, c.model, c.provider.name)]

    def admit(self, policy: str | None, candidates: Sequence[Candidate], cost: Cost) -> Admission:
        """Which candidates the budgets let serve the request (see the module docstring)."""
        self._roll(self.clock())
        kept: list[Candidate] = []
        stopped: BudgetState | None = None
        for c in candidates:
            over = self._over(policy, c, cost, "reject")
            if over is None:
                kept.append(c)
            elif stopped is None:
                stopped = over
        downgrade = self._over(policy, kept[0], cost, "downgrade") if kept else None
        return Admission(tuple(kept), stopped, downgrade)

    def _over(
        self, policy: str | None, c: Candidate, cost: Cost, action: str
    ) -> BudgetState | None:
        est: int | None = None
        for s in self.states:
            if s.budget.action != action or not s.budget.covers(policy, c.model, c.provider.name):
                continue
            if est is None:
                est = cost(c)
            if not s.takes(est):
                return s
        return None

    def hold(self, policy: str | None, c: Candidate, msats: int) -> tuple[Hold, int | None]:
        """Hold ``msats`` on every budget covering ``c``; returns the hold and the least any
        of them has left after it (None: no budget covers the request)."""
        parts = tuple((s, msats) for s in self.covering(policy, c))
        for s, m in parts:
            s.held_msats += m
        left = min((s.remaining_msats for s, _ in parts), default=None)
        return Hold(self.clock(), parts), left

    def settle(
        self, hold: Hold, policy: str | None, model: str | None, provider: str | None, msats: int
    ) -> None:
        """Release ``hold`` and count what the request cost on the budgets covering how it
        was answered, when it started in their current window (as the log will count it)."""
        for s, m in hold.parts:
            s.held_msats -= m
        if msats <= 0:
            return
        self._roll(self.clock())
        for s in self.states:
            if s.start <= hold.at < s.reset and s.budget.covers(policy, model, provider):
                s.used_msats += msats


def day_of(text: str) -> datetime:
    """A stored ``YYYY-MM-DD…`` timestamp's UTC day."""
    return datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
