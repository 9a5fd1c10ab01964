"""GET /metrics: config, the route, and the counters against the request log, through the real
proxy and scripted fake upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from arbstr.errors import ConfigError
from arbstr.server import Gateway
from arbstr.server.metrics import Metrics, render
from fake_upstream import Completion, FakeUpstream, Reply
from harness import ProxyThread, make_config, provider
from logdata import record

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
async def beta() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def config_data(*providers: dict[str, Any], enabled: bool = True, **more: Any) -> dict[str, Any]:
    return {
        "providers": list(providers),
        "metrics": {"enabled": enabled},
        "retry": {"backoff_base_ms": 10, "backoff_max_ms": 40},
        **more,
    }


def start(proxies: list[ProxyThread], data: dict[str, Any]) -> ProxyThread:
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    return proxy


async def post(
    proxy: ProxyThread, body: dict[str, Any], token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def scrape(proxy: ProxyThread, token: str | None = None) -> tuple[int, str, str]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/metrics", headers=headers) as r:
        return r.status, r.headers.get("content-type", ""), await r.text()


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(found: Samples, name: str, **match: str) -> float:
    return sum(
        v for labels, v in found.get(name, []) if all(labels.get(k) == x for k, x in match.items())
    )


# --- config ---------------------------------------------------------------------------------


def test_metrics_are_off_by_default() -> None:
    assert make_config({}).metrics.enabled is False
    assert make_config({"metrics": {"enabled": True}}).metrics.enabled is True


def test_unknown_metrics_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port: unknown key"):
        make_config({"metrics": {"enabled": True, "port": 9100}})


# --- the route ------------------------------------------------------------------------------


async def test_metrics_off_is_a_404_like_any_unknown_route(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config_data(provider("alpha", fake_upstream.url), enabled=False))
    assert proxy.gateway is not None and proxy.gateway.metrics is None
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/metrics") as r:
        assert r.status == 404
        error = (await r.json())["error"]
    assert error["message"] == "no route for GET /metrics"
    assert {"type", "code"} <= error.keys()


async def test_counters_equal_the_request_log(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config_data(provider("alpha", fake_upstream.url)))
    status, ctype, text = await scrape(proxy)
    assert status == 200 and ctype.startswith("text/plain")
    assert "arbstr_requests_total" not in samples(text)  # nothing counted yet
    fake_upstream.push(
        Completion(prompt_tokens=12, completion_tokens=7),
        Completion(prompt_tokens=1000, completion_tokens=333, usage_cost_msats=4321),
        Completion(prompt_tokens=20, completion_tokens=4),
        Reply(status=400, json={"error": {"message": "bad thing", "type": "invalid_request"}}),
    )
    told: list[Decimal] = []
    for _ in range(2):
        status, headers, _ = await post(proxy, HI)
        assert status == 200
        told.append(Decimal(headers["x-arbstr-cost-sats"]))
    stream = {**HI, "stream": True, "stream_options": {"include_usage": True}}
    assert (await post(proxy, stream))[0] == 200
    told.append(Decimal(proxy.records[-1].cost_msats or 0) / 1000)  # (a stream: its trailer)
    status, _, _ = await post(proxy, HI)
    assert status == 400
    found = samples((await scrape(proxy))[2])
    rows = proxy.records
    assert len(rows) == 4
    assert total(found, "arbstr_requests_total") == 4
    assert total(found, "arbstr_requests_total", status="success", provider="alpha") == 3
    assert total(found, "arbstr_requests_total", status="error", policy="default") == 1
    assert total(found, "arbstr_request_errors_total", status="400", model="gpt-4o") == 1
    assert total(found, "arbstr_input_tokens_total") == sum(r.input_tokens or 0 for r in rows)
    assert total(found, "arbstr_output_tokens_total") == sum(r.output_tokens or 0 for r in rows)
    spent = total(found, "arbstr_spent_sats_total", provider="alpha", api="chat")
    assert Decimal(repr(spent)) == sum(told) == Decimal(sum(r.cost_msats or 0 for r in rows)) / 1000
    assert total(found, "arbstr_request_duration_seconds_count") == 4
    assert total(found, "arbstr_time_to_first_token_seconds_count") == 1  # the one stream
    inf = total(found, "arbstr_time_to_first_token_seconds_bucket", le="+Inf")
    assert inf == 1
    assert total(found, "arbstr_attempts_total", outcome="success") == 3
    assert total(found, "arbstr_attempts_total", outcome="error") == 1
    assert total(found, "arbstr_provider_up", provider="alpha") == 1


async def test_a_fallback_counts_two_attempts(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = config_data(
        provider("alpha", fake_upstream.url, input_rate=1, output_rate=1),
        provider("beta", beta.url, input_rate=5, output_rate=5),
    )
    data["retry"]["max_attempts_per_provider"] = 1
    proxy = start(proxies, data)
    fake_upstream.push(Reply(status=503, json={"error": {"message": "busy"}}))
    status, headers, _ = await post(proxy, HI)
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    found = samples((await scrape(proxy))[2])
    assert total(found, "arbstr_attempts_total") == 2 == proxy.records[0].attempts
    assert total(found, "arbstr_attempts_total", provider="alpha", outcome="error") == 1
    assert total(found, "arbstr_attempts_total", provider="beta", outcome="success") == 1
    assert total(found, "arbstr_requests_total", provider="beta", status="success") == 1


async def test_no_secret_in_the_output(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    key, token = "sk-test-alpha-0123456789", "tok-0123456789abcdef"
    data = config_data(provider("alpha", fake_upstream.url), server={"auth_token": token})
    proxy = start(proxies, data)
    fake_upstream.push(Reply(status=400, json={"error": {"message": f"bad key {key}"}}))
    fake_upstream.push(Completion(content=f"your key is {key} and token {token}"))
    assert (await post(proxy, HI, token))[0] == 400
    assert (await post(proxy, HI, token))[0] == 200
    assert (await scrape(proxy))[0] == 401  # an admin route: the bearer token is needed
    status, _, text = await scrape(proxy, token)
    assert status == 200 and "arbstr_requests_total" in text
    assert key not in text and token not in text and "your key" not in text


async def test_a_junk_model_cannot_create_a_label(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    # a provider of any model routes whatever the client names
    proxy = start(proxies, config_data(provider("alpha", fake_upstream.url, models=[])))
    for model in ("junk-model-1", "junk-model-2", "hi there; drop table"):
        assert (await post(proxy, {**HI, "model": model}))[0] == 200
    text = (await scrape(proxy))[2]
    found = samples(text)
    assert "junk" not in text and "drop table" not in text
    models = {labels["model"] for labels, _ in found["arbstr_requests_total"]}
    assert models == {"other"}
    assert total(found, "arbstr_requests_total") == 3


async def test_listed_models_keep_their_id(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    models = ["gpt-4o", "gpt-4o-mini"]
    proxy = start(proxies, config_data(provider("alpha", fake_upstream.url, models=models)))
    for model in (*models, "nope"):
        await post(proxy, {**HI, "model": model})
    found = samples((await scrape(proxy))[2])
    labels = {(lb["model"], lb["status"]) for lb, _ in found["arbstr_requests_total"]}
    assert labels == {("gpt-4o", "success"), ("gpt-4o-mini", "success"), ("other", "error")}


# --- the counters alone -----------------------------------------------------------------------


def gateway_metrics() -> Metrics:
    data = config_data(
        provider("alpha", "http://127.0.0.1:9"), provider("beta", "http://127.0.0.1:9")
    )
    m = Gateway(make_config(data)).metrics
    assert m is not None
    return m


def test_two_gateways_count_apart_and_money_is_exact() -> None:
    a, b = gateway_metrics(), gateway_metrics()
    for _ in range(1000):
        a.observe(record(cost_msats=1, possibly_billed_msats=7), {}, 1)
    a.observe(record(success=False, error_status=999, provider=None, cost_msats=None), {}, 0)
    a.observe(record(success=False, error_status=502, cost_msats=1), {"beta": 2}, 3)
    found = samples(render(a.snapshot()).decode())
    assert total(found, "arbstr_spent_sats_total") == 1.001  # 1,001 msats, not a float sum
    assert total(found, "arbstr_possibly_billed_sats_total") == 7.0
    assert total(found, "arbstr_request_errors_total", status="other", provider="none") == 1
    assert total(found, "arbstr_attempts_total", provider="beta", outcome="error") == 2
    assert total(found, "arbstr_attempts_total", provider="alpha", outcome="error") == 1
    assert total(found, "arbstr_attempts_total", provider="alpha", outcome="success") == 1000
    assert total(found, "arbstr_provider_up") == 2
    assert "arbstr_requests_total" not in samples(render(b.snapshot()).decode())


def test_histogram_buckets_are_cumulative() -> None:
    m = gateway_metrics()
    for ms in (10, 50, 51, 119_000, 500_000):
        m.observe(record(latency_ms=ms, streaming=True, ttft_ms=ms), {}, 1)
    found = samples(render(m.snapshot()).decode())
    bucket = {lb["le"]: v for lb, v in found["arbstr_request_duration_seconds_bucket"]}
    assert (bucket["0.05"], bucket["0.1"], bucket["120.0"], bucket["+Inf"]) == (2, 3, 4, 5)
    assert total(found, "arbstr_time_to_first_token_seconds_count") == 5
    assert total(found, "arbstr_request_duration_seconds_sum") == pytest.approx(619.111)


def test_a_price_refresh_adds_the_discovered_models() -> None:
    m = gateway_metrics()
    gw_prices = m._prices
    assert m.model_label("gpt-4o") == "gpt-4o"
    assert m.model_label("found/later") == "other"
    alpha = gw_prices.listed[0]
    found = replace(alpha, models=frozenset({"found/later"}), model_order=("found/later",))
    gw_prices.listed = (found, *gw_prices.listed[1:])  # as a refresh rebuilds it
    assert m.model_label("found/later") == "found/later"
    m.observe(record(model="found/later"), {}, 1)
    assert ("alpha", "found/later", "chat") in m.calls
