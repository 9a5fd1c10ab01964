"""Funds, the pure parts: a 402 in the retry policy, the node's reservation, the funds board
and how routing ranks keys that cannot pay."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import Provider, RetrySettings, Rule
from arbstr.errors import ConfigError
from arbstr.money import Rates
from arbstr.routing import FundsBoard, reservation_for, reservation_msats, route
from arbstr.routing.retry import Fail, Failure, Fallback, decide
from arbstr.routing.router import Candidate
from arbstr.routstr.balance_poll import BalancePoller
from arbstr.upstream.client import is_funds_answer
from harness import make_config, provider

MID = 0.5


# --- the retry policy -----------------------------------------------------------------------


def test_a_402_falls_back_at_once_and_is_not_billed() -> None:
    failure = Failure("funds", 402, message="alpha answered HTTP 402")
    assert not failure.possibly_billed and not failure.passes_through
    for attempt in (1, 2, 3):  # never the same provider again, whatever attempt it was
        assert decide(failure, attempt, RetrySettings(), MID) == Fallback(
            "insufficient funds (HTTP 402)"
        )


def test_a_402_without_fallback_passes_through() -> None:
    assert decide(Failure("funds", 402), 1, RetrySettings(fallback=False), MID) == Fail(None)


def test_retry_after_does_not_make_a_402_retried() -> None:
    d = decide(Failure("funds", 402, retry_after_s=1.0), 1, RetrySettings(), MID)
    assert isinstance(d, Fallback)


@pytest.mark.parametrize(
    ("status", "body", "funds"),
    [
        (402, b"", True),  # any 402
        (402, b'{"error": {"code": "payment_required"}}', True),
        (400, b'{"error": {"message": "x", "code": "insufficient_balance"}}', True),
        (403, b'{"error": {"type": "balance_limit_exceeded"}}', True),
        (400, b'{"detail": {"type": "insufficient_balance", "msg": "low"}}', True),
        (400, b'{"error": {"message": "insufficient_balance is not my code"}}', False),
        (400, b'{"detail": "insufficient_balance"}', False),
        (400, b"insufficient_balance", False),  # not JSON
        (400, b'["insufficient_balance"]', False),
        (400, b'{"error": {"code": "invalid_request"}}', False),
        (500, b'{"error": {"code": "insufficient_balance"}}', False),  # a 5xx stays retryable
        (429, b'{"error": {"type": "balance_limit_exceeded"}}', False),
    ],
)
def test_what_counts_as_a_funds_answer(status: int, body: bytes, funds: bool) -> None:
    assert is_funds_answer(status, body) is funds


# --- the reservation ------------------------------------------------------------------------


def test_reservation_examples() -> None:
    rates = Rates.of(1, 2)  # 2 sats per 1k output tokens = 2 msat per token
    # no max_tokens, or no completion worst case known: the whole max_cost
    assert reservation_msats(10_000, 8_000, rates, None, None) == 10_000
    assert reservation_msats(10_000, None, rates, None, 1000) == 10_000
    assert reservation_msats(10_000, 8_000, rates, None, 0) == 10_000
    # max_cost - (max_completion_cost - max_tokens * price) = 10000 - (8000 - 2000)
    assert reservation_msats(10_000, 8_000, rates, None, 1000) == 4_000
    # the completion's worst case from max_completion_tokens: 2 * 4000 = 8000 as above
    assert reservation_msats(10_000, None, rates, 4000, 1000) == 4_000
    # max_completion_cost wins over max_completion_tokens
    assert reservation_msats(10_000, 6_000, rates, 4000, 1000) == 6_000
    # a max_tokens above the worst case saves nothing
    assert reservation_msats(10_000, 8_000, rates, None, 10**9) == 10_000
    # never below 0 (a node's inconsistent figures), unknown max_cost is unknown
    assert reservation_msats(1_000, 8_000, rates, None, 1) == 0
    assert reservation_msats(None, 8_000, rates, None, 1000) is None


def test_reservation_takes_the_rate_in_any_form_and_rounds_up() -> None:
    # 1.5 msat per token * 3 tokens = 4.5 msat: 100 - (50 - 4.5) = 54.5 -> 55
    for rate in (Rates.of(0, 1.5), Decimal("1.5"), Fraction(3, 2)):
        assert reservation_msats(100, 50, rate, None, 3) == 55
    assert reservation_msats(100, None, 2, 25, 3) == 56  # int msat per token: 100 - (50 - 6)


@dataclass(frozen=True)
class Limits:
    max_cost_msats: int | None
    max_completion_cost_msats: int | None = None
    max_completion_tokens: int | None = None


def test_reservation_for_a_models_published_limits() -> None:
    rates = Rates.of(1, 2)
    assert reservation_for(None, rates, 1000) is None
    assert reservation_for(Limits(10_000, 8_000), rates, 1000) == 4_000
    assert reservation_for(Limits(10_000, None, 4000), rates, None) == 10_000


msats = st.integers(min_value=0, max_value=10**12)
rates_st = st.decimals(min_value=0, max_value=10**6, places=6).map(lambda d: Rates.of(0, d))
tokens = st.none() | st.integers(min_value=-5, max_value=10**7)


@given(msats, st.none() | msats, rates_st, tokens, tokens)
def test_reservation_is_within_zero_and_max_cost(
    max_cost: int, mcc: int | None, rates: Rates, mct: int | None, max_tokens: int | None
) -> None:
    r = reservation_msats(max_cost, mcc, rates, mct, max_tokens)
    assert r is not None and 0 <= r <= max_cost
    if max_tokens is None or max_tokens <= 0 or (mcc is None and (mct is None or mct <= 0)):
        assert r == max_cost


@given(msats, st.none() | msats, rates_st, st.none() | st.integers(1, 10**7), st.integers(1, 10**7))
def test_reservation_grows_with_max_tokens(
    max_cost: int, mcc: int | None, rates: Rates, mct: int | None, max_tokens: int
) -> None:
    smaller = reservation_msats(max_cost, mcc, rates, mct, max_tokens)
    larger = reservation_msats(max_cost, mcc, rates, mct, max_tokens + 1)
    assert smaller is not None and larger is not None and smaller <= larger


@given(msats, msats, rates_st, st.integers(1, 10**7))
def test_reservation_is_the_exact_formula_rounded_up(
    max_cost: int, mcc: int, rates: Rates, max_tokens: int
) -> None:
    price = rates.output_rate  # msat per token
    exact = Decimal(max_cost) - max(Decimal(0), Decimal(mcc) - max_tokens * price)
    expected = min(max_cost, max(0, int(exact.to_integral_value(rounding="ROUND_CEILING"))))
    assert reservation_msats(max_cost, mcc, rates, None, max_tokens) == expected


# --- the board ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_board_states_from_nothing_to_a_402_to_a_success() -> None:
    clock = Clock()
    board = FundsBoard(["a", "b"], clock=clock)
    assert board.state("a") == board.state("b") == board.state("zzz") == "unknown"
    assert board.snapshot() == {"a": {"funds": "unknown"}, "b": {"funds": "unknown"}}
    board.record_short("a", 5000)
    f = board.get("a")
    assert board.state("a") == "insufficient" and f.short_at == 1000.0 and f.needed_msats == 5000
    board.record_success("b")  # another provider: nothing changes
    assert board.state("a") == "insufficient"
    board.record_success("a")
    assert board.state("a") == "unknown" and f.short_at is None


def test_board_balance_covers_or_not() -> None:
    board = FundsBoard(["a"])
    board.record_balance("a", 12_345)
    assert board.state("a") == "ok"
    assert board.snapshot() == {"a": {"funds": "ok", "balance_sats": 12.345}}
    board.record_balance("a", 0)  # nothing covers a request on an empty key
    assert board.state("a") == "insufficient"
    board.record_error("a", "HTTP 500")  # the last balance is kept, with the error
    assert board.get("a").balance_msats == 0 and board.get("a").error == "HTTP 500"


def test_a_402_with_a_known_need_is_cleared_by_a_balance_that_covers_it() -> None:
    board = FundsBoard(["a"])
    board.record_balance("a", 1000)
    board.record_short("a", 5000)
    board.record_balance("a", 4999)
    assert board.state("a") == "insufficient"
    board.record_balance("a", 5000)
    assert board.state("a") == "ok" and board.get("a").short_at is None
    board.record_balance("a", 4000)  # below what the last 402'd request needed
    assert board.state("a") == "insufficient"


def test_a_402_with_an_unknown_need_is_cleared_by_a_top_up() -> None:
    board = FundsBoard(["a"])
    board.record_balance("a", 1000)
    board.record_short("a")
    board.record_balance("a", 1000)  # the same balance: still short
    assert board.state("a") == "insufficient"
    board.record_balance("a", 1001)
    assert board.state("a") == "ok"


def test_a_402_with_nothing_known_takes_the_next_balance_as_its_baseline() -> None:
    board = FundsBoard(["a"])
    board.record_short("a")
    board.record_balance("a", 700)  # what the key had when it could not pay: the baseline
    assert board.state("a") == "insufficient"
    board.record_balance("a", 700)
    assert board.state("a") == "insufficient"
    board.record_balance("a", 90_000)
    assert board.state("a") == "ok"


def test_a_second_402_keeps_the_first_baseline_and_time() -> None:
    clock = Clock()
    board = FundsBoard(["a"], clock=clock)
    board.record_balance("a", 500)
    board.record_short("a")
    board.record_balance("a", 400)  # spent meanwhile by requests in flight
    clock.now += 5
    board.record_short("a")
    assert board.get("a").short_at == 1005.0 and board.get("a").balance_at_short == 500
    board.record_balance("a", 501)
    assert board.state("a") == "ok"


# --- routing --------------------------------------------------------------------------------


def prov(name: str, output_rate: float) -> Provider:
    return Provider(
        name=name,
        url=f"http://{name}",
        api_key=None,
        key_source="none",
        models=frozenset({"m"}),
        model_order=("m",),
        rates=Rates.of(1, output_rate),
        model_rates={},
    )


RULE = Rule("default", (), "lowest_cost", None, ())
PROVIDERS = [prov("cheap", 1), prov("mid", 2), prov("dear", 3)]


def ranked(affords: object = None, rule: Rule = RULE, model: str = "m") -> list[str]:
    r = route(PROVIDERS, rule, model, 100, lambda _: 100, {}, affords)  # type: ignore[arg-type]
    return [c.provider.name for c in r.candidates]


def test_nothing_known_is_no_predicate_and_the_usual_order() -> None:
    board = FundsBoard([p.name for p in PROVIDERS])
    assert board.predicate(lambda c: 1) is None
    assert ranked(None) == ["cheap", "mid", "dear"]


def test_a_key_that_cannot_pay_is_ranked_last_not_dropped() -> None:
    board = FundsBoard([p.name for p in PROVIDERS])
    board.record_balance("cheap", 2_000)
    board.record_balance("mid", 10_000)
    needs = {"cheap": 5_000, "mid": 5_000, "dear": 5_000}
    affords = board.predicate(lambda c: needs[c.provider.name])
    assert ranked(affords) == ["mid", "dear", "cheap"]  # dear: balance unknown, may pay
    needs["cheap"] = 2_000  # a smaller request fits the cheap key again
    assert ranked(affords) == ["cheap", "mid", "dear"]


def test_the_reservation_is_asked_only_where_a_balance_or_a_402_is_known() -> None:
    board = FundsBoard([p.name for p in PROVIDERS])
    board.record_balance("mid", 10_000)
    asked: list[str] = []

    def reserve(c: Candidate) -> int:
        asked.append(c.provider.name)
        return 1

    affords = board.predicate(reserve)
    assert affords is not None
    ranked(affords)
    assert set(asked) == {"mid"}


def test_after_a_402_the_provider_goes_last_unless_the_request_needs_less() -> None:
    board = FundsBoard([p.name for p in PROVIDERS])
    board.record_short("cheap")  # need unknown
    assert ranked(board.predicate(lambda c: None)) == ["mid", "dear", "cheap"]
    board.record_short("cheap", 5_000)
    assert ranked(board.predicate(lambda c: 5_000)) == ["mid", "dear", "cheap"]
    assert ranked(board.predicate(lambda c: 4_999)) == ["cheap", "mid", "dear"]
    board.record_success("cheap")
    assert board.predicate(lambda c: None) is None  # nothing known any more: no check


def test_a_known_empty_balance_goes_last_when_the_reservation_is_unknown() -> None:
    board = FundsBoard([p.name for p in PROVIDERS])
    board.record_balance("cheap", 0)
    board.record_balance("mid", 1)
    assert ranked(board.predicate(lambda c: None)) == ["mid", "dear", "cheap"]


def test_funds_rank_before_latency_and_choose_the_auto_model() -> None:
    board = FundsBoard(["cheap", "other"])
    board.record_short("cheap")
    affords = board.predicate(lambda c: None)
    by_latency = Rule("fast", (), "lowest_latency", None, ())
    r = route(PROVIDERS, by_latency, "m", 1, lambda _: 1, {"cheap": 1.0, "mid": 9.0}, affords)
    assert [c.provider.name for c in r.candidates] == ["mid", "dear", "cheap"]
    other = Provider(
        name="other",
        url="http://other",
        api_key=None,
        key_source="none",
        models=frozenset({"n"}),
        model_order=("n",),
        rates=Rates.of(1, 5),
        model_rates={},
    )
    auto = Rule("auto", ("m", "n"), "lowest_cost", None, ())
    r = route([PROVIDERS[0], other], auto, "auto", 1, lambda _: 1, {}, affords)
    assert r.model == "n"  # the cheapest pair's key cannot pay: the next one is chosen


# --- config ---------------------------------------------------------------------------------


def test_balance_interval_s_defaults_to_300_and_0_turns_polling_off() -> None:
    def cfg(**kw: object) -> Provider:
        entry = provider("a", "http://127.0.0.1:9/v1", **kw)
        if kw.get("balance_interval_s") is None:
            del entry["balance_interval_s"]
        return make_config({"providers": [entry]}).providers[0]

    assert cfg().balance_interval_s == 300.0
    assert cfg(balance_interval_s=0.5).balance_interval_s == 0.5
    assert BalancePoller([cfg()], FundsBoard()).enabled
    assert not BalancePoller([cfg(balance_interval_s=0)], FundsBoard()).enabled
    assert not BalancePoller([cfg(api_key="")], FundsBoard()).enabled  # no key: nothing to ask
    with pytest.raises(ConfigError, match="balance_interval_s"):
        cfg(balance_interval_s=-1)
