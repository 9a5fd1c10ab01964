"""What a stream's row says when it does not end cleanly: cost only where the client was told
one (or the upstream reported usage), the estimate as possibly billed otherwise; and a stream
that reached [DONE] is a success even if the upstream then goes quiet."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from arbstr.routing.pricing import cost_msats
from fake_upstream import DONE, FakeUpstream, Stream, chunk, completion_events, sse
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
# 12 chars of text: 3 input tokens estimated; max_tokens 100: 100 output tokens estimated
STREAM = {
    "model": "gpt-4o",
    "stream": True,
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello there!"}],
}


def start(proxies: list[ProxyThread], url: str, **server: Any) -> ProxyThread:
    data = {
        "server": {"stream_idle_timeout_s": 5, **server},
        "providers": [provider("alpha", url, input_rate=10, output_rate=30)],
    }
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def read_stream(proxy: ProxyThread) -> bytes:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=STREAM) as r:
        assert r.status == 200
        return await r.read()


async def one_row(proxy: ProxyThread) -> Any:
    for _ in range(300):
        if proxy.records:
            return proxy.records[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no row")


def estimate(proxy: ProxyThread) -> int:
    assert proxy.gateway is not None
    rates = proxy.gateway.config.providers[0].rates_for("gpt-4o")
    return cost_msats(rates, 3, 100)


async def test_an_interrupted_stream_has_no_cost_but_is_possibly_billed(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream(events=[sse(chunk("Hel")), sse(chunk("lo"))], then_reset=True))
    body = await read_stream(proxy)
    assert b"stream_interrupted" in body and b'"arbstr"' not in body  # no cost was told
    row = await one_row(proxy)
    assert (row.success, row.error_status, row.cost_msats) == (False, 502, None)
    assert row.possibly_billed_msats == estimate(proxy)


async def test_an_interrupted_stream_with_usage_is_costed_from_it(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    events = completion_events("Hi", prompt_tokens=7, completion_tokens=2, done=False)
    fake_upstream.push(Stream(events=events, then_reset=True))
    await read_stream(proxy)
    row = await one_row(proxy)
    assert row.success is False
    assert row.cost_msats == 7 * 10 + 2 * 30 and row.possibly_billed_msats is None


async def test_a_client_leaving_mid_stream_is_possibly_billed(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream(events=[sse(chunk("a"))], then_hang=True))
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=STREAM) as r:
        await r.content.readany()  # the first chunk, then leave
    await fake_upstream.wait_disconnect()
    row = await one_row(proxy)
    assert (row.error_status, row.cost_msats) == (499, None)
    assert row.possibly_billed_msats == estimate(proxy)


async def test_done_then_a_quiet_upstream_ends_the_answer_at_once_as_a_success(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    events = completion_events("Hi there", prompt_tokens=4, completion_tokens=2)
    fake_upstream.push(Stream(events=events, then_hang=True))  # [DONE], then silence
    t0 = time.monotonic()
    body = await read_stream(proxy)
    took = time.monotonic() - t0
    assert body.endswith(DONE) and b'"arbstr"' in body
    assert took < 3.0  # not the 5 s idle timeout
    row = await one_row(proxy)
    assert (row.success, row.error_status, row.cost_msats) == (True, None, 4 * 10 + 2 * 30)
    assert proxy.gateway is not None
    assert proxy.gateway.health.get("alpha").consecutive_failures == 0
