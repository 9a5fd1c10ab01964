"""Unit tests: circuit breaker transitions, the executor's bookkeeping."""

from __future__ import annotations

from arbstr.routing.health import HealthBoard
from arbstr.upstream.client import AttemptFailed
from arbstr.upstream.executor import AttemptLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=3, cooldown_s=30, clock=clock)
    for _ in range(2):
        assert hb.acquire("a")
        hb.record_failure("a")
    assert hb.state("a") == "closed"
    assert hb.acquire("a")
    hb.record_failure("a")
    assert hb.state("a") == "open"
    assert not hb.available("a") and not hb.acquire("a")
    clock.now += 29.9
    assert not hb.acquire("a")
    clock.now += 0.2
    assert hb.state("a") == "half_open" and hb.available("a")
    assert hb.acquire("a")  # the single probe
    assert not hb.acquire("a")  # nobody else while it is out
    hb.record_success("a", 12.0)
    assert hb.state("a") == "closed" and hb.acquire("a") and hb.acquire("a")
    assert hb.snapshot()["a"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "latency_ms_avg": 12.0,
    }


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=2, cooldown_s=10, clock=clock)
    hb.record_failure("a")
    hb.record_failure("a")
    clock.now += 10
    assert hb.acquire("a")
    hb.record_failure("a")
    assert hb.state("a") == "open"
    clock.now += 9
    assert not hb.acquire("a")


def test_retry_after_longer_than_cooldown_extends_it() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=1, cooldown_s=5, clock=clock)
    hb.record_failure("a", retry_after_s=60)
    clock.now += 59
    assert hb.state("a") == "open"
    clock.now += 1
    assert hb.state("a") == "half_open"


def test_released_probe_can_be_taken_again() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=1, cooldown_s=1, clock=clock)
    hb.record_failure("a")
    clock.now += 1
    assert hb.acquire("a")
    hb.release("a")
    assert hb.acquire("a")


def test_latency_moving_average() -> None:
    hb = HealthBoard(["a"])
    hb.record_success("a", 100.0)
    hb.record_success("a", 200.0)
    assert hb.latency_ms["a"] == 120.0  # 100 + 0.2 * (200 - 100)


def test_attempt_log_header_keeps_provider_order() -> None:
    log = AttemptLog()
    assert log.header() is None
    log.add("beta", AttemptFailed("connect", "x"))
    log.add("alpha", AttemptFailed("status", "y", status=503))
    log.add("beta", AttemptFailed("timeout", "z"))
    assert log.header() == "2/beta, 1/alpha"
    assert log.count == 3 and log.possibly_billed


def test_failure_classes() -> None:
    assert AttemptFailed("status", "", status=400).passes_through
    assert AttemptFailed("status", "", status=404).passes_through
    for code in (429, 500, 502, 503, 504):
        assert not AttemptFailed("status", "", status=code).passes_through
    assert not AttemptFailed("connect", "").possibly_billed
    assert AttemptFailed("timeout", "").possibly_billed
    assert AttemptFailed("invalid", "").possibly_billed
