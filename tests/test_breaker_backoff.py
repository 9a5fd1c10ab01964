"""Unit tests: circuit breaker transitions and its cool-down cap, the executor's bookkeeping."""

from __future__ import annotations

import random
import time

import pytest

from arbstr.config import RetrySettings, config_from_data
from arbstr.errors import ConfigError, UpstreamError
from arbstr.money import Rates
from arbstr.routing.health import HealthBoard
from arbstr.routing.router import Candidate
from arbstr.server import Gateway
from arbstr.upstream.client import AttemptFailed
from arbstr.upstream.executor import AttemptLog, run_with_retries
from arbstr.upstream.retry_after import parse_retry_after
from harness import make_config, provider


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
    assert not hb.acquire("a")
    clock.now += 29.9
    assert not hb.acquire("a")
    clock.now += 0.2
    assert hb.state("a") == "half_open"
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


# --- the cool-down cap --------------------------------------------------------------------


def test_retry_after_lengthens_cooldown_only_up_to_the_cap() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=1, cooldown_s=5, max_cooldown_s=300, clock=clock)
    hb.record_failure("a", retry_after_s=999_999_999)
    clock.now += 299.9
    assert hb.state("a") == "open"
    clock.now += 0.1
    assert hb.state("a") == "half_open"
    assert hb.acquire("a")
    hb.record_failure("a", retry_after_s=float("inf"))  # the failed probe: at most the cap too
    clock.now += 300
    assert hb.state("a") == "half_open"


def test_cap_below_cooldown_keeps_the_cooldown() -> None:
    clock = Clock()
    hb = HealthBoard(["a"], failure_threshold=1, cooldown_s=60, max_cooldown_s=10, clock=clock)
    hb.record_failure("a", retry_after_s=600)
    clock.now += 59
    assert hb.state("a") == "open"
    clock.now += 1
    assert hb.state("a") == "half_open"


def _candidate(name: str) -> Candidate:
    prov = make_config({"providers": [provider(name, "http://127.0.0.1:9/v1")]}).providers[0]
    return Candidate(prov, "gpt-4o", Rates.of(0, 0, 0), 0.0, None)


async def test_huge_retry_after_on_503_opens_the_breaker_for_at_most_the_cap() -> None:
    clock = Clock()
    settings = RetrySettings(breaker_failures=1, breaker_max_cooldown_s=120)
    health = HealthBoard(
        ["alpha"],
        failure_threshold=settings.breaker_failures,
        cooldown_s=settings.breaker_cooldown_s,
        max_cooldown_s=settings.max_cooldown_s,
        clock=clock,
    )

    async def attempt(c: Candidate, timeout_s: float) -> None:
        raise AttemptFailed(
            "status",
            "alpha answered HTTP 503",
            status=503,
            retry_after_s=parse_retry_after("999999999"),
        )

    with pytest.raises(UpstreamError, match="all upstream attempts failed"):
        await run_with_retries(
            [_candidate("alpha")],
            attempt,
            settings=settings,
            health=health,
            deadline=time.monotonic() + 10,
            log=AttemptLog(),
            rng=random.Random(1),
        )
    assert health.state("alpha") == "open"
    clock.now += 119.9
    assert health.state("alpha") == "open"
    clock.now += 0.1
    assert health.state("alpha") == "half_open"


def test_breaker_max_cooldown_below_cooldown_is_a_config_error() -> None:
    data = {"retry": {"breaker_cooldown_s": 60, "breaker_max_cooldown_s": 30}}
    with pytest.raises(ConfigError, match="breaker_max_cooldown_s") as info:
        config_from_data(data, source="config.toml", env={})
    assert str(info.value) == (
        "config.toml: retry.breaker_max_cooldown_s: must be >= retry.breaker_cooldown_s"
    )
    ok = config_from_data(
        {"retry": {"breaker_cooldown_s": 60, "breaker_max_cooldown_s": 60}},
        source="config.toml",
        env={},
    )
    assert ok.retry.max_cooldown_s == 60
    assert RetrySettings().max_cooldown_s == 300
    # a config written before the cap existed keeps loading: the cap follows its cool-down
    assert RetrySettings(breaker_cooldown_s=900).max_cooldown_s == 900


def test_gateway_health_board_uses_the_configured_cap() -> None:
    cfg = make_config({"retry": {"breaker_cooldown_s": 2, "breaker_max_cooldown_s": 7}})
    health = Gateway(cfg).health
    assert health.cooldown_s == 2 and health.max_cooldown_s == 7
