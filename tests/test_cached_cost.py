"""Cached prompt tokens through the real proxy: every cost path (non-streaming, the stream's
trailer, a cut stream with usage) prices ``usage.prompt_tokens_details.cached_tokens`` at the
provider's cache-read rate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from fake_upstream import Completion, FakeUpstream, Stream, completion_events
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there!"}]}
# 69 prompt tokens, 60 of them read from the cache, 5 completion tokens; per 1k: input 10,
# cache read 1, output 30 -> 9 * 10 + 60 * 1 + 5 * 30 = 300 msats (840 without the cache)
CACHED_COST = 9 * 10 + 60 * 1 + 5 * 30


def start(proxies: list[ProxyThread], url: str) -> ProxyThread:
    data = {
        "providers": [
            provider("alpha", url, input_rate=10, output_rate=30, cache_read_rate=1),
        ]
    }
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def one_row(proxy: ProxyThread) -> Any:
    for _ in range(300):
        if proxy.records:
            return proxy.records[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no row")


def trailer_of(body: bytes) -> dict[str, Any]:
    for line in body.split(b"\n"):
        if line.startswith(b"data: {") and b'"arbstr"' in line:
            found: dict[str, Any] = json.loads(line[6:])["arbstr"]
            return found
    raise AssertionError("no trailer")


async def test_non_streaming_cost_prices_cached_tokens_at_the_cache_rate(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Completion("Hi", prompt_tokens=69, completion_tokens=5, cached_tokens=60))
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=HI) as r:
        assert r.status == 200
        assert r.headers["x-arbstr-cost-sats"] == "0.300"
    row = await one_row(proxy)
    assert (row.input_tokens, row.output_tokens, row.cost_msats) == (69, 5, CACHED_COST)


async def test_stream_trailer_prices_cached_tokens_at_the_cache_rate(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Completion("Hi", prompt_tokens=69, completion_tokens=5, cached_tokens=60))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        body = await r.read()
    assert trailer_of(body)["cost_sats"] == CACHED_COST / 1000
    row = await one_row(proxy)
    assert row.success and row.cost_msats == CACHED_COST


async def test_cut_stream_with_usage_prices_cached_tokens_at_the_cache_rate(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    events = completion_events(
        "Hi", prompt_tokens=69, completion_tokens=5, cached_tokens=60, done=False
    )
    fake_upstream.push(Stream(events=events, then_reset=True))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        body = await r.read()
    assert b"stream_interrupted" in body and b'"arbstr"' not in body
    row = await one_row(proxy)
    assert row.success is False
    assert row.cost_msats == CACHED_COST and row.possibly_billed_msats is None
