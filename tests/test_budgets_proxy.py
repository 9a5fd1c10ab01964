"""Budgets through the real proxy: concurrent requests against a limit, the 429 in each API's
shape (and the SDKs not retrying it), a restart, midnight UTC, downgrade, scopes, streams."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from multidict import CIMultiDict

from arbstr.routing.budgets import BudgetBook
from arbstr.storage import Store
from fake_upstream import Completion, FakeUpstream, Hang, closed_port_url
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
ASK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
FEE = 100  # sats per request, whatever the tokens: estimate and cost are exactly this


def config(url: str, *budgets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "providers": [provider("alpha", url, input_rate=0, output_rate=0, base_fee=FEE)],
        "retry": {"max_attempts_per_provider": 1, "backoff_base_ms": 0, "backoff_max_ms": 0},
        "budgets": list(budgets),
        **extra,
    }


def start(proxies: list[ProxyThread], data: dict[str, Any], **kw: Any) -> ProxyThread:
    proxy = ProxyThread(make_config(data), **kw).start()
    proxies.append(proxy)
    return proxy


async def post(
    proxy: ProxyThread, body: dict[str, Any] = ASK, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=body, headers=headers or {}) as r,
    ):
        raw = await r.read()
        return (
            r.status,
            r.headers.copy(),
            json.loads(raw) if body.get("stream") is not True else raw,
        )


async def budgets(proxy: ProxyThread) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/budgets") as r:
        assert r.status == 200
        data: dict[str, Any] = {b["name"]: b for b in (await r.json())["data"]}
        return data


async def settled(proxy: ProxyThread, n: int) -> None:
    for _ in range(500):
        if len(proxy.records) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(proxy.records)} rows, not {n}")


async def test_fifty_parallel_requests_against_a_budget_that_admits_ten(
    proxies: list[ProxyThread],
) -> None:
    async with FakeUpstream(default=Completion(delay_s=0.5)) as up:
        proxy = start(proxies, config(up.url, {"name": "daily", "sats": 10 * FEE}))
        answers = await asyncio.gather(*(post(proxy) for _ in range(50)))
        ok = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] == 429]
        assert (len(ok), len(refused)) == (10, 40)
        assert len(up.chat_requests) == 10  # the refused never reached a provider
        for _, headers, body in refused:
            err = body["error"]
            assert (err["code"], err["type"]) == ("budget_exceeded", "insufficient_quota")
            assert "budget 'daily'" in err["message"]
            assert headers["x-arbstr-budget"] == "daily"
            assert headers["x-should-retry"] == "false"
            assert headers["x-arbstr-budget-reset"].endswith("T00:00:00.000Z")
            assert f"resets at {headers['x-arbstr-budget-reset']}" in err["message"]
            assert 0 < int(headers["retry-after"]) <= 86400
        lefts = sorted(float(h["x-arbstr-budget-remaining-sats"]) for _, h, _ in ok)
        assert lefts == [FEE * i for i in range(10)]  # each after its own hold
        await settled(proxy, 50)
        b = (await budgets(proxy))["daily"]
        assert (b["used_sats"], b["in_flight_sats"], b["remaining_sats"]) == (1000.0, 0.0, 0.0)
        assert b["exhausted"] is True
        assert sum(r.cost_msats or 0 for r in proxy.records) == 10 * FEE * 1000
        assert sorted(r.error_status or 200 for r in proxy.records) == [200] * 10 + [429] * 40


async def test_costs_above_the_estimate_overshoot_by_no_more_than_they_missed(
    proxies: list[ProxyThread],
) -> None:
    """The node charges 120 sats where 100 were estimated: the ten admitted together overshoot
    by their ten misses, and nothing more is admitted."""
    slow = Completion(delay_s=0.3, usage_cost_msats=120_000)
    async with FakeUpstream(default=slow) as up:
        proxy = start(proxies, config(up.url, {"name": "daily", "sats": 10 * FEE}))
        answers = await asyncio.gather(*(post(proxy) for _ in range(30)))
        assert sum(a[0] == 200 for a in answers) == 10
        await settled(proxy, 30)
        assert (await budgets(proxy))["daily"]["used_sats"] == 1200.0
        assert (await post(proxy))[0] == 429


def test_the_429_is_in_each_apis_own_shape_and_the_sdks_do_not_retry_it(
    proxies: list[ProxyThread],
) -> None:
    url = closed_port_url()  # nothing may reach a provider
    data = config(url, {"name": "none-left", "sats": 0})
    data["providers"][0]["models"] = ["gpt-4o", "claude-3-5-sonnet"]
    proxy = start(proxies, data)
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=2) as client:
        with pytest.raises(openai.RateLimitError) as chat_err:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.RateLimitError) as resp_err:
            client.responses.create(model="gpt-4o", input="x")
    assert chat_err.value.code == "budget_exceeded"
    assert "budget 'none-left'" in chat_err.value.message
    assert resp_err.value.code == "budget_exceeded"
    with (
        anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=2) as ac,
        pytest.raises(anthropic.RateLimitError) as msg_err,
    ):
        ac.messages.create(
            model="claude-3-5-sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    body = msg_err.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert "budget 'none-left'" in body["error"]["message"]
    # one row per call: no SDK retried the 429
    assert [(r.api, r.error_status) for r in proxy.records] == [
        ("chat", 429),
        ("responses", 429),
        ("messages", 429),
    ]


async def test_a_restart_keeps_what_the_log_says_was_spent(
    proxies: list[ProxyThread], tmp_path: Path
) -> None:
    path = str(tmp_path / "log.db")
    async with FakeUpstream() as up:
        data = config(up.url, {"name": "daily", "sats": 5 * FEE})
        first = start(proxies, data, sink=Store.open(path))
        for _ in range(3):
            assert (await post(first))[0] == 200
        first.stop()  # flushes the log
        proxies.remove(first)
        second = start(proxies, data, sink=Store.open(path))
        b = (await budgets(second))["daily"]
        assert (b["used_sats"], b["remaining_sats"]) == (300.0, 200.0)
        statuses = [(await post(second))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_daily_budget_opens_again_at_midnight_utc(proxies: list[ProxyThread]) -> None:
    async with FakeUpstream() as up:
        data = config(up.url, {"name": "daily", "sats": 2 * FEE})
        proxy = start(proxies, data)
        clock = Clock(datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC))
        assert proxy.gateway is not None
        proxy.gateway.budgets = BudgetBook(proxy.gateway.config.budgets, clock)
        assert [(await post(proxy))[0] for _ in range(3)] == [200, 200, 429]
        status, headers, _ = await post(proxy)
        assert (status, headers["retry-after"]) == (429, "2")
        assert headers["x-arbstr-budget-reset"] == "2027-01-01T00:00:00.000Z"
        clock.now = datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)
        status, headers, _ = await post(proxy)
        assert status == 200 and headers["x-arbstr-budget-remaining-sats"] == "100.000"
        b = (await budgets(proxy))["daily"]
        assert (b["window_start"], b["resets_at"]) == (
            "2027-01-01T00:00:00.000Z",
            "2027-01-02T00:00:00.000Z",
        )


async def test_downgrade_sends_auto_requests_to_the_cheapest_tier(
    proxies: list[ProxyThread],
) -> None:
    async with FakeUpstream(models=("tiny", "big")) as up:
        data = config(up.url, {"name": "soft", "sats": 1.5 * FEE, "action": "downgrade"})
        data["providers"][0].update(
            models=["tiny", "big"],
            base_fee=0,
            model_rates={"tiny": {"base_fee": 1}, "big": {"base_fee": FEE}},
        )
        data["tiers"] = [
            {"name": "economy", "models": ["tiny"]},
            {"name": "frontier", "models": ["big"]},
        ]
        proxy = start(proxies, data)
        auto = {**ASK, "model": "auto"}
        frontier = {"X-Arbstr-Tier": "frontier"}
        status, headers, _ = await post(proxy, auto, frontier)
        assert (status, headers["x-arbstr-model"], headers["x-arbstr-tier"]) == (
            200,
            "big",
            "frontier",
        )
        # 100 of 150 used: the next frontier estimate does not fit, so economy answers
        status, headers, _ = await post(proxy, auto, frontier)
        assert (status, headers["x-arbstr-model"], headers["x-arbstr-tier"]) == (
            200,
            "tiny",
            "economy",
        )
        # a concrete model is never replaced, and downgrade never refuses
        status, headers, _ = await post(proxy, {**ASK, "model": "big"})
        assert (status, headers["x-arbstr-model"]) == (200, "big")
        await settled(proxy, 3)
        notes = [r.error_message for r in proxy.records]
        assert notes[1] == "downgraded to economy: budget 'soft' is used up"
        assert notes[0] is None and notes[2] is None


async def test_a_provider_budget_moves_requests_to_another_provider(
    proxies: list[ProxyThread],
) -> None:
    async with FakeUpstream() as a, FakeUpstream() as b:
        data = config(a.url, {"name": "alpha-cap", "sats": FEE, "provider": "alpha"})
        data["providers"].append(
            provider("beta", b.url, input_rate=0, output_rate=0, base_fee=2 * FEE)
        )
        proxy = start(proxies, data)
        status, headers, _ = await post(proxy)
        assert (status, headers["x-arbstr-provider"]) == (200, "alpha")
        assert headers["x-arbstr-budget-remaining-sats"] == "0.000"
        status, headers, _ = await post(proxy)
        assert (status, headers["x-arbstr-provider"]) == (200, "beta")
        assert "x-arbstr-budget-remaining-sats" not in headers  # no budget covers beta


async def test_streams_and_disconnects_settle_their_holds(proxies: list[ProxyThread]) -> None:
    async with FakeUpstream() as up:
        proxy = start(proxies, config(up.url, {"name": "daily", "sats": 10 * FEE}))
        status, headers, raw = await post(proxy, {**ASK, "stream": True})
        assert status == 200 and headers["x-arbstr-budget-remaining-sats"] == "900.000"
        assert raw.endswith(b"data: [DONE]\n\n")
        await settled(proxy, 1)
        b = (await budgets(proxy))["daily"]
        assert (b["used_sats"], b["in_flight_sats"]) == (100.0, 0.0)
        # a client that leaves while the upstream works: held, then counted as possibly billed
        up.push(Hang())
        async with aiohttp.ClientSession() as s:
            task = asyncio.create_task(s.post(proxy.url + CHAT, json=ASK).__aenter__())
            await up.wait_for_requests(2)
            assert (await budgets(proxy))["daily"]["in_flight_sats"] == 100.0
            task.cancel()
        await up.wait_disconnect()
        await settled(proxy, 2)
        row = proxy.records[-1]
        assert (row.error_status, row.possibly_billed_msats) == (499, FEE * 1000)
        b = (await budgets(proxy))["daily"]
        assert (b["used_sats"], b["in_flight_sats"]) == (200.0, 0.0)


async def test_no_budgets_no_header_and_an_empty_list(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config(fake_upstream.url))
    status, headers, _ = await post(proxy)
    assert status == 200 and "x-arbstr-budget-remaining-sats" not in headers
    assert await budgets(proxy) == {}
