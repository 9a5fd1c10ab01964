"""The retry policy, row by row of the README's "Retries, fallback and failures" table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import RetrySettings
from arbstr.routing.retry import (
    Fail,
    Failure,
    FailureKind,
    Fallback,
    Retry,
    backoff_s,
    decide,
)

S = RetrySettings(backoff_base_ms=500, backoff_max_ms=5000, max_attempts_per_provider=3)
MID = 0.5  # the jitter draw that scales the backoff by exactly 1


def test_connect_failure_is_retried_with_backoff() -> None:
    assert decide(Failure("connect"), 1, S, MID) == Retry(0.5)
    assert decide(Failure("connect"), 2, S, MID) == Retry(1.0)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(status: int) -> None:
    assert decide(Failure("status", status), 1, S, MID) == Retry(0.5)


def test_reset_before_a_complete_answer_is_retried() -> None:
    assert decide(Failure("reset"), 1, S, MID) == Retry(0.5)


def test_read_timeout_fails_as_possibly_billed_by_default() -> None:
    failure = Failure("timeout", message="alpha: no complete response")
    assert failure.possibly_billed
    d = decide(failure, 1, S, MID)
    assert isinstance(d, Fail) and d.error is not None
    assert d.error.status == 504 and d.error.code == "upstream_timeout"
    assert "billed" in d.error.message and "retry_on_timeout" in d.error.message
    assert d.error.message.startswith("alpha: no complete response")


def test_read_timeout_is_retried_with_retry_on_timeout() -> None:
    s = RetrySettings(retry_on_timeout=True)
    assert decide(Failure("timeout"), 1, s, MID) == Retry(0.5)
    assert decide(Failure("timeout"), 3, s, MID) == Fallback("3 attempts failed")


def test_200_that_is_not_json_fails_and_is_not_retried() -> None:
    failure = Failure("invalid", 200, message="alpha answered HTTP 200 with a body that is x")
    assert failure.possibly_billed
    for settings in (S, RetrySettings(retry_on_timeout=True)):
        d = decide(failure, 1, settings, MID)
        assert isinstance(d, Fail) and d.error is not None
        assert d.error.status == 502 and d.error.code == "upstream_invalid_response"
        assert "billed" in d.error.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])  # 402: test_funds.py
def test_other_4xx_pass_through(status: int) -> None:
    failure = Failure("status", status)
    assert failure.passes_through and not failure.possibly_billed
    assert decide(failure, 1, S, MID) == Fail(None)
    assert decide(failure, 3, RetrySettings(fallback=False), MID) == Fail(None)


def test_retry_after_within_cap_is_the_delay() -> None:
    s = RetrySettings(retry_after_cap_s=30)
    assert decide(Failure("status", 429, retry_after_s=2.0), 1, s, 0.0) == Retry(2.0)
    assert decide(Failure("status", 503, retry_after_s=30.0), 2, s, 1.0) == Retry(30.0)
    assert decide(Failure("status", 503, retry_after_s=0.0), 1, s, 1.0) == Retry(0.0)


def test_retry_after_above_cap_falls_back_at_once() -> None:
    s = RetrySettings(retry_after_cap_s=30)
    d = decide(Failure("status", 429, retry_after_s=31.0), 1, s, MID)
    assert isinstance(d, Fallback) and "retry_after_cap_s" in d.reason


def test_retry_after_above_cap_without_fallback_fails() -> None:
    s = RetrySettings(retry_after_cap_s=30, fallback=False)
    d = decide(Failure("status", 429, retry_after_s=120.0, message="alpha answered 429"), 1, s, 0)
    assert isinstance(d, Fail) and d.error is not None
    assert d.error.status == 502 and d.error.code == "upstream_error"
    assert "alpha answered 429" in d.error.message and "fallback" in d.error.message


def test_last_attempt_on_a_provider_falls_back() -> None:
    for kind in ("connect", "reset"):
        assert decide(Failure(kind), 3, S, MID) == Fallback("3 attempts failed")
    assert decide(Failure("status", 503, retry_after_s=1.0), 3, S, MID) == Fallback(
        "3 attempts failed"
    )


def test_last_attempt_without_fallback_fails() -> None:
    s = RetrySettings(fallback=False, max_attempts_per_provider=2)
    d = decide(Failure("status", 503, message="alpha answered HTTP 503"), 2, s, MID)
    assert isinstance(d, Fail) and d.error is not None
    assert d.error.status == 502 and "alpha answered HTTP 503" in d.error.message
    assert decide(Failure("status", 503), 1, s, MID) == Retry(0.5)


def test_jitter_spans_plus_minus_25_percent() -> None:
    assert backoff_s(1, S, 0.0) == pytest.approx(0.375)
    assert backoff_s(1, S, 1.0) == pytest.approx(0.625)
    assert backoff_s(10, S, 0.5) == pytest.approx(5.0)  # capped at backoff_max_ms
    assert backoff_s(1, S, -3.0) == backoff_s(1, S, 0.0)  # draws outside [0, 1] are clamped
    assert backoff_s(1, S, 7.0) == backoff_s(1, S, 1.0)


KINDS: list[FailureKind] = ["connect", "status", "reset", "timeout", "invalid"]
settings_st = st.builds(
    RetrySettings,
    max_attempts_per_provider=st.integers(1, 20),
    backoff_base_ms=st.floats(0, 60_000, allow_subnormal=False),
    backoff_max_ms=st.floats(0, 600_000, allow_subnormal=False),
    fallback=st.booleans(),
    retry_after_cap_s=st.floats(0, 3600),
    retry_on_timeout=st.booleans(),
)
failure_st = st.builds(
    Failure,
    kind=st.sampled_from(KINDS),
    status=st.one_of(st.none(), st.integers(400, 599)),
    retry_after_s=st.one_of(st.none(), st.floats(0, 2.0**31)),
)


@given(failure=failure_st, attempt=st.integers(1, 20), s=settings_st, jitter=st.floats(0, 1))
def test_decision_properties(
    failure: Failure, attempt: int, s: RetrySettings, jitter: float
) -> None:
    d = decide(failure, attempt, s, jitter)
    if isinstance(d, Retry):
        assert attempt < s.max_attempts_per_provider
        assert not failure.passes_through and failure.kind != "invalid"
        assert failure.kind != "timeout" or s.retry_on_timeout
        assert d.delay_s >= 0
        if failure.retry_after_s is not None:
            assert d.delay_s == failure.retry_after_s <= s.retry_after_cap_s
        else:
            nominal = min(s.backoff_base_ms * 2.0 ** (attempt - 1), s.backoff_max_ms) / 1000
            assert nominal * 0.75 * (1 - 1e-12) <= d.delay_s <= nominal * 1.25 * (1 + 1e-12)
    elif isinstance(d, Fallback):
        assert s.fallback
    else:
        assert d.error is None or d.error.status in (502, 504)
        if d.error is None:
            assert failure.passes_through
    if failure.passes_through:
        assert d == Fail(None)
    if failure.possibly_billed and not (failure.kind == "timeout" and s.retry_on_timeout):
        assert isinstance(d, Fail)


@given(attempt=st.integers(1, 60), s=settings_st, jitter=st.floats(-1e9, 1e9))
def test_backoff_within_jitter_of_capped_exponential(
    attempt: int, s: RetrySettings, jitter: float
) -> None:
    d = backoff_s(attempt, s, jitter) * 1000
    nominal = min(s.backoff_base_ms * 2.0 ** (attempt - 1), s.backoff_max_ms)
    assert d >= 0
    assert nominal * 0.75 * (1 - 1e-12) <= d <= nominal * 1.25 * (1 + 1e-12)
