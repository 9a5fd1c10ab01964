"""Budgets as pure decisions: UTC calendar windows, admission, holds, settling, the log's
spend at start, and the config that declares them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import Budget, Period, Provider
from arbstr.errors import ConfigError
from arbstr.money import Rates
from arbstr.routing import Candidate
from arbstr.routing.budgets import BudgetBook, Cost, Hold, Spent
from arbstr.routing.calendar import window
from harness import make_config, provider

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def candidate(name: str = "alpha", model: str = "gpt-4o") -> Candidate:
    cfg = make_config({"providers": [provider(name, "http://127.0.0.1:1", models=[model])]})
    p: Provider = cfg.providers[0]
    return Candidate(p, model, Rates.of(0, 0, 0), 0.0, None)


def budget(
    sats: int = 1000,
    action: Literal["reject", "downgrade"] = "reject",
    per: Period = "day",
    **scope: str,
) -> Budget:
    return Budget(f"b-{action}", sats * 1000, per, action, **scope)


def flat(msats: int) -> Cost:
    return lambda c: msats


def take(book: BudgetBook, policy: str | None, c: Candidate, msats: int) -> tuple[Hold, int | None]:
    """Admit a request of ``msats`` on ``c`` (it must be) and hold it."""
    adm = book.admit(policy, [c], flat(msats))
    assert adm.candidates == (c,)
    return book.hold(adm)


# --- windows -------------------------------------------------------------------------------


def test_windows_follow_the_utc_calendar() -> None:
    late = datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert window("day", late) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # 2026-12-31 is a Thursday: its ISO week began on Monday the 28th
    assert window("week", late) == (
        datetime(2026, 12, 28, tzinfo=UTC),
        datetime(2027, 1, 4, tzinfo=UTC),
    )
    assert window("month", late) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert window("month", datetime(2028, 2, 29, 5, tzinfo=UTC)) == (
        datetime(2028, 2, 1, tzinfo=UTC),
        datetime(2028, 3, 1, tzinfo=UTC),
    )
    # another offset is the same moment in UTC
    tokyo = datetime(2027, 1, 1, 8, 0, tzinfo=UTC).astimezone()
    assert window("day", tokyo)[0] == datetime(2027, 1, 1, tzinfo=UTC)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from(["day", "week", "month"]),
)
def test_a_window_holds_its_moment_and_the_next_one_starts_at_its_reset(
    naive: datetime, per: Period
) -> None:
    now = naive.replace(tzinfo=UTC)
    start, reset = window(per, now)
    assert start <= now < reset
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    length = (reset - start).days
    assert length == {"day": 1, "week": 7}.get(per, length)
    assert 28 <= length <= 31 or per != "month"
    assert per != "week" or start.weekday() == 0
    assert window(per, reset)[0] == reset
    assert window(per, reset - timedelta(microseconds=1)) == (start, reset)


# --- admission and holds -------------------------------------------------------------------


def test_holds_admit_exactly_what_the_limit_takes() -> None:
    book = BudgetBook([budget(1000)], Clock())
    c = candidate()
    admitted = 0
    for _ in range(50):
        adm = book.admit("default", [c], flat(100_000))
        if adm.candidates:
            book.hold(adm)
            admitted += 1
        else:
            assert adm.stopped_by is not None and adm.stopped_by.budget.name == "b-reject"
    assert admitted == 10
    assert book.states[0].held_msats == 1_000_000
    assert book.states[0].remaining_msats == 0


def test_settling_releases_the_hold_and_counts_the_real_cost() -> None:
    book = BudgetBook([budget(1000)], Clock())
    c = candidate()
    h, left = take(book, "default", c, 300_000)
    assert left == 700_000
    book.settle(h, "default", "gpt-4o", "alpha", 120_000)
    s = book.states[0]
    assert (s.used_msats, s.held_msats) == (120_000, 0)
    # a failed request that cost nothing frees its hold entirely
    h, _ = take(book, "default", c, 300_000)
    book.settle(h, "default", "gpt-4o", "alpha", 0)
    assert (s.used_msats, s.held_msats) == (120_000, 0)


def test_a_scoped_reject_budget_drops_only_the_candidates_it_covers() -> None:
    book = BudgetBook([budget(0, provider="alpha")], Clock())
    a, b = candidate("alpha"), candidate("beta")
    adm = book.admit("default", [a, b], flat(1))
    assert adm.candidates == (b,)
    assert adm.stopped_by is not None
    # the hold goes on the budgets covering the candidate that serves
    _, left = take(book, "default", b, 1)
    assert left is None


def test_scopes_match_policy_model_with_or_without_vendor_and_provider() -> None:
    b = budget(policy="code", model="claude-3.5-sonnet", provider="alpha")
    assert b.covers("code", "anthropic/claude-3.5-sonnet", "alpha")
    assert b.covers("code", "claude-3.5-sonnet", "alpha")
    assert not b.covers("default", "claude-3.5-sonnet", "alpha")
    assert not b.covers("code", "claude-3.5-sonnet", "beta")
    assert not b.covers("code", "claude-3.5-haiku", "alpha")
    assert not b.covers("code", None, None)
    assert budget().covers(None, None, None)
    assert b.scope == "policy=code, model=claude-3.5-sonnet, provider=alpha"
    assert budget().scope == "all requests"


def test_an_exhausted_downgrade_budget_never_drops_a_candidate() -> None:
    book = BudgetBook([budget(1, "downgrade")], Clock())
    c = candidate()
    adm = book.admit("default", [c], flat(5000))
    assert adm.candidates == (c,)
    assert adm.downgrade is not None and adm.stopped_by is None
    assert book.admit("default", [c], flat(1000)).downgrade is None


def test_a_new_window_starts_from_zero_and_a_request_of_the_old_one_counts_there() -> None:
    clock = Clock(datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC))
    book = BudgetBook([budget(1000)], clock)
    c = candidate()
    done, _ = take(book, "default", c, 600_000)
    book.settle(done, "default", "gpt-4o", "alpha", 600_000)
    late, _ = take(book, "default", c, 300_000)
    assert not book.admit("default", [c], flat(200_000)).candidates
    clock.now = datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)
    s = book.states[0]
    adm = book.admit("default", [c], flat(200_000))
    assert adm.candidates == (c,)
    assert (s.used_msats, s.start) == (0, datetime(2026, 12, 2, tzinfo=UTC))
    # the request that started before midnight settles into yesterday (as its row will count)
    book.settle(late, "default", "gpt-4o", "alpha", 300_000)
    assert (s.used_msats, s.held_msats) == (0, 0)


def test_the_logs_spend_counts_within_each_budgets_window_and_scope() -> None:
    clock = Clock(datetime(2026, 12, 9, 10, tzinfo=UTC))  # a Wednesday
    day, week = budget(per="day"), Budget("w", 10**9, "week", "reject", policy="code")
    book = BudgetBook([day, week], clock)

    def spent(d: int, policy: str, msats: int) -> Spent:
        return Spent(datetime(2026, 12, d, tzinfo=UTC), policy, "gpt-4o", "alpha", msats)

    assert book.earliest_start() == datetime(2026, 12, 7, tzinfo=UTC)
    book.load(
        [spent(9, "code", 5), spent(9, "default", 7), spent(8, "code", 11), spent(6, "code", 13)]
    )
    assert book.states[0].used_msats == 12  # today, every policy
    assert book.states[1].used_msats == 16  # since Monday the 7th, policy code


@given(
    st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 700), st.booleans()), min_size=1, max_size=60
    ),
    st.integers(0, 5000),
)
def test_spend_never_passes_the_limit_by_more_than_the_estimates_missed(
    steps: list[tuple[int, int, bool]], limit: int
) -> None:
    """Requests arrive (estimate, real cost) and settle in any order: what is used never passes
    the limit by more than the sum of what admitted estimates fell short of the real costs."""
    book = BudgetBook([Budget("b", limit, "day", "reject")], Clock())
    c = candidate()
    open_holds: list[tuple[Hold, int, int]] = []
    missed = 0
    for est, real, settle_one in steps:
        if book.admit(None, [c], flat(est)).candidates:
            h, _ = take(book, None, c, est)
            open_holds.append((h, est, real))
        if settle_one and open_holds:
            h, est_, real_ = open_holds.pop(0)
            book.settle(h, None, "gpt-4o", "alpha", real_)
            missed += max(0, real_ - est_)
        s = book.states[0]
        assert s.used_msats + s.held_msats <= limit + missed
    for h, est_, real_ in open_holds:
        book.settle(h, None, "gpt-4o", "alpha", real_)
        missed += max(0, real_ - est_)
    s = book.states[0]
    assert s.held_msats == 0
    assert s.used_msats <= limit + missed


# --- config --------------------------------------------------------------------------------


def config_with(*budgets: dict[str, object]) -> object:
    data = {
        "providers": [provider("alpha", "http://127.0.0.1:1")],
        "policies": {"rules": [{"name": "code", "keywords": ["code"]}]},
        "budgets": list(budgets),
    }
    return make_config(data)


def test_budgets_are_read_from_the_config_in_exact_millisats() -> None:
    cfg = config_with(
        {"name": "daily", "sats": 2500.5},
        {"name": "code-week", "sats": 1, "per": "week", "policy": "code", "action": "downgrade"},
        {"name": "alpha-month", "sats": 0, "per": "month", "provider": "alpha", "model": "gpt-4o"},
    )
    got = cfg.budgets  # type: ignore[attr-defined]
    assert [(b.name, b.limit_msats, b.per, b.action) for b in got] == [
        ("daily", 2_500_500, "day", "reject"),
        ("code-week", 1000, "week", "downgrade"),
        ("alpha-month", 0, "month", "reject"),
    ]
    assert (got[1].policy, got[2].provider, got[2].model) == ("code", "alpha", "gpt-4o")
    assert Decimal(got[0].limit_msats) == Decimal("2500.5") * 1000


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"name": "x", "sats": 1, "policy": "nope"}, "budgets[0].policy: no policy named 'nope'"),
        ({"name": "x", "sats": 1, "provider": "beta"}, "budgets[0].provider: no provider named"),
        ({"name": "x", "sats": 1, "per": "year"}, "per"),
        ({"name": "x", "sats": -1}, "sats"),
        ({"name": "x"}, "sats"),
        ({"name": "x", "sats": 1, "action": "warn"}, "action"),
        ({"name": "x", "sats": 1, "limit": 3}, "limit"),
    ],
)
def test_a_bad_budget_is_a_config_error_naming_the_field(
    entry: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        config_with(entry)


def test_a_budget_name_is_defined_once() -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        config_with({"name": "x", "sats": 1}, {"name": "x", "sats": 2})


def test_a_request_wide_budget_is_checked_on_the_first_candidate_that_fits() -> None:
    book = BudgetBook([budget(10)], Clock())
    dear, cheap = candidate("alpha"), candidate("beta")
    prices = {"alpha": 12_000, "beta": 8_000}

    def cost(c: Candidate) -> int:
        return prices[c.provider.name]

    adm = book.admit("default", [dear, cheap], cost)
    assert adm.candidates == (cheap,)  # the dear one does not fit what is left
    assert (adm.estimate, [s.budget.name for s in adm.covering]) == (8_000, ["b-reject"])
    prices["alpha"] = 5_000
    adm = book.admit("default", [dear, cheap], cost)
    assert adm.candidates == (dear, cheap)  # checked once, on the first: fallback stays
    assert adm.estimate == 5_000
