"""Faults, driven through the real proxy by scripted fake upstreams."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from fake_upstream import (
    DONE,
    Completion,
    FakeUpstream,
    Hang,
    Reply,
    Reset,
    Stream,
    chunk,
    closed_port_url,
    completion_events,
    sse,
)
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
FAST_RETRY = {"backoff_base_ms": 10, "backoff_max_ms": 40}
UNAVAILABLE = Reply(status=503, json={"error": {"message": "busy", "type": "server_error"}})


@pytest.fixture
async def beta() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def two_providers(
    alpha_url: str,
    beta_url: str,
    *,
    retry: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "providers": [
            provider("alpha", alpha_url, input_rate=1, output_rate=1),
            provider("beta", beta_url, input_rate=5, output_rate=5),
        ],
        "retry": {**FAST_RETRY, **(retry or {})},
        "server": server or {},
    }


def start(proxies: list[ProxyThread], data: dict[str, Any]) -> ProxyThread:
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def post(proxy: ProxyThread, payload: Any = None) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=payload or HI) as r,
    ):
        return r.status, r.headers.copy(), await r.read()


async def record(proxy: ProxyThread, n: int = 1) -> Any:
    for _ in range(300):
        if len(proxy.records) >= n:
            return proxy.records[n - 1]
        await asyncio.sleep(0.01)
    raise AssertionError("no record")


def error_of(body: bytes) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str)
    return err  # type: ignore[no-any-return]


# --- retries on the same provider ---------------------------------------------------------


async def test_503_then_success_retries_same_provider(
    fake_upstream: FakeUpstream,
    beta: FakeUpstream,
    proxies: list[ProxyThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(UNAVAILABLE)
    with caplog.at_level(logging.INFO, logger="arbstr.chat"):
        status, headers, _ = await post(proxy)
        deadline = time.monotonic() + 2  # the line is logged just after the answer is sent
        while not (lines := [m for r in caplog.records if (m := r.getMessage())[:7] == "chat ok"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    assert lines[0].endswith(" attempts=2 retries=1/alpha")
    assert status == 200
    assert headers["x-arbstr-provider"] == "alpha"
    assert headers["x-arbstr-retries"] == "1/alpha"
    assert len(fake_upstream.chat_requests) == 2 and beta.chat_requests == []
    rec = await record(proxy)
    assert rec.success and rec.attempts == 2 and rec.provider == "alpha"


async def test_429_retry_after_seconds_is_honoured(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(
        Reply(status=429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
    )
    t0 = time.monotonic()
    status, headers, _ = await post(proxy)
    waited = time.monotonic() - t0
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"
    assert headers["x-arbstr-retries"] == "1/alpha"
    assert 0.9 <= waited < 3.0
    reqs = fake_upstream.chat_requests
    assert reqs[1].received_at - reqs[0].received_at >= 0.95


async def test_429_retry_after_http_date(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    fake_upstream.push(Reply(status=429, headers={"Retry-After": when}))
    status, headers, _ = await post(proxy)
    reqs = fake_upstream.chat_requests
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"
    assert reqs[1].received_at - reqs[0].received_at >= 0.5  # second-resolution date


async def test_retry_after_beyond_cap_falls_back_at_once(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(
        proxies, two_providers(fake_upstream.url, beta.url, retry={"retry_after_cap_s": 1})
    )
    fake_upstream.push(Reply(status=429, headers={"Retry-After": "120"}))
    t0 = time.monotonic()
    status, headers, _ = await post(proxy)
    assert time.monotonic() - t0 < 1.0
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "1/alpha"


async def test_backoff_grows_between_attempts(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {"backoff_base_ms": 100, "backoff_max_ms": 1000, "fallback": False}
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    fake_upstream.push(UNAVAILABLE, UNAVAILABLE)
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-retries"] == "2/alpha"
    t = [r.received_at for r in fake_upstream.chat_requests]
    gap1, gap2 = t[1] - t[0], t[2] - t[1]
    assert 0.07 <= gap1 <= 0.3  # 100 ms ± 25 % (+ slack for a loaded machine)
    assert 0.14 <= gap2 <= 0.45  # 200 ms ± 25 %
    assert gap2 > gap1


async def test_overhead_excludes_upstream_waits_and_backoff_sleeps(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {"backoff_base_ms": 300, "backoff_max_ms": 300}
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    fake_upstream.push(
        Reply(status=503, json={"error": {"message": "busy"}}, delay_s=0.05),
        Completion(delay_s=0.1),
    )
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-retries"] == "1/alpha"
    latency = float(headers["x-arbstr-latency-ms"])
    overhead = float(headers["x-arbstr-overhead-ms"])
    assert latency > 300  # 50 ms + 225..375 ms backoff + 100 ms
    assert 0 < overhead < 50


async def test_overhead_grows_with_the_work_arbstr_does(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = {
        "providers": [provider("alpha", fake_upstream.url)],
        "policies": {"rules": [{"name": "pick", "allowed_models": ["gpt-4o"]}]},
    }
    proxy = start(proxies, data)
    # "auto" makes arbstr decode and re-encode the body; 24k messages (0.9 MB, under the fake
    # upstream's 1 MiB limit) are ~20 ms of that work, a tiny request well under 1 ms
    tiny = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    big = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}] * 24_000}

    async def overhead(s: aiohttp.ClientSession, payload: Any) -> float:
        headers = {"X-Arbstr-Policy": "pick"}
        async with s.post(proxy.url + CHAT, json=payload, headers=headers) as r:
            await r.read()
            assert r.status == 200 and r.headers["x-arbstr-model"] == "gpt-4o"
            value = float(r.headers["x-arbstr-overhead-ms"])
            assert 0 < value < float(r.headers["x-arbstr-latency-ms"])
            return value

    async with aiohttp.ClientSession() as s:
        tiny_ms = min([await overhead(s, tiny) for _ in range(3)])
        big_ms = min([await overhead(s, big) for _ in range(2)])
    assert big_ms > 5 * tiny_ms and big_ms > tiny_ms + 5
    assert fake_upstream.chat_requests[-1].json["model"] == "gpt-4o"


# --- fallback -----------------------------------------------------------------------------


async def test_connection_refused_falls_back_to_next_cheapest(
    beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(closed_port_url(), beta.url))
    status, headers, _ = await post(proxy)
    assert status == 200
    assert headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "3/alpha"
    rec = await record(proxy)
    assert rec.provider == "beta" and rec.attempts == 4 and rec.success


async def test_fallback_never_changes_the_model(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = {
        "providers": [
            provider("alpha", fake_upstream.url, models=["gpt-4o"]),
            provider("beta", beta.url, models=["gpt-4o-mini"], input_rate=0, output_rate=0),
        ],
        "retry": FAST_RETRY,
    }
    proxy = start(proxies, data)
    fake_upstream.push(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    status, headers, body = await post(proxy)
    assert status == 502
    assert error_of(body)["type"] == "upstream_error"
    assert headers["x-arbstr-retries"] == "3/alpha"
    assert beta.chat_requests == []


async def test_reset_mid_body_is_retried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(Reset(after_bytes=b'{"id":"chatcmpl-1","choi', content_length=400))
    status, headers, body = await post(proxy)
    assert status == 200 and headers["x-arbstr-retries"] == "1/alpha"
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello world"


async def test_all_attempts_fail_gives_502_with_headers(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.default = UNAVAILABLE
    beta.default = Reply(status=500, body=b"oops")
    status, headers, body = await post(proxy)
    assert status == 502
    err = error_of(body)
    assert err["type"] == "upstream_error"
    assert headers["x-arbstr-retries"] == "3/alpha, 3/beta"
    assert headers["x-arbstr-provider"] == "beta"
    assert "x-arbstr-request-id" in headers
    rec = await record(proxy)
    assert not rec.success and rec.error_status == 502 and rec.attempts == 6


async def test_client_error_is_not_retried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(Reply(status=400, json={"error": {"message": "bad", "type": "x"}}))
    status, headers, body = await post(proxy)
    assert status == 400 and error_of(body)["message"] == "bad"
    assert len(fake_upstream.chat_requests) == 1 and beta.chat_requests == []
    assert "x-arbstr-retries" not in headers


async def test_malformed_json_is_502_and_not_retried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(Reply(status=200, body=b"<html>gateway</html>"))
    status, _, body = await post(proxy)
    assert status == 502
    assert "billed" in error_of(body)["message"]
    assert len(fake_upstream.chat_requests) == 1 and beta.chat_requests == []


# --- timeouts -----------------------------------------------------------------------------


async def test_hang_times_out_and_is_not_retried_by_default(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(fake_upstream.url, beta.url, server={"request_timeout_s": 0.3})
    proxy = start(proxies, data)
    fake_upstream.push(Hang())
    t0 = time.monotonic()
    status, _, body = await post(proxy)
    assert 0.25 <= time.monotonic() - t0 < 2
    assert status == 504
    err = error_of(body)
    assert "billed" in err["message"] and err["code"] == "upstream_timeout"
    assert beta.chat_requests == []
    rec = await record(proxy)
    assert not rec.success and "billed" in rec.error_message


async def test_hang_is_retried_when_retry_on_timeout(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(
        fake_upstream.url,
        beta.url,
        server={"request_timeout_s": 0.2},
        retry={"retry_on_timeout": True, "max_attempts_per_provider": 1},
    )
    proxy = start(proxies, data)
    fake_upstream.push(Hang())
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "1/alpha"


async def test_overall_deadline_gives_504(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(
        fake_upstream.url,
        beta.url,
        server={"request_timeout_s": 0.3},
        retry={"retry_on_timeout": True, "deadline_s": 0.5},
    )
    proxy = start(proxies, data)
    fake_upstream.default = Hang()
    beta.default = Hang()
    t0 = time.monotonic()
    status, headers, body = await post(proxy)
    assert time.monotonic() - t0 < 1.5
    assert status == 504
    assert error_of(body)["type"] == "upstream_error"
    assert "x-arbstr-request-id" in headers


async def test_slow_first_byte_within_timeout_is_fine(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(fake_upstream.url, beta.url, server={"request_timeout_s": 2})
    proxy = start(proxies, data)
    events = completion_events("slow but fine", include_usage=True)
    fake_upstream.push(Stream(events=events, first_byte_delay_s=0.4))
    status, headers, body = await post(proxy, {**HI, "stream": True})
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"
    assert body.endswith(b"data: [DONE]\n\n")


async def test_stream_slow_first_byte_past_timeout_falls_back_before_commit(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(
        fake_upstream.url,
        beta.url,
        server={"request_timeout_s": 0.3},
        retry={"retry_on_timeout": True, "max_attempts_per_provider": 1},
    )
    proxy = start(proxies, data)
    fake_upstream.push(Stream(events=completion_events("late"), first_byte_delay_s=3))
    status, headers, body = await post(proxy, {**HI, "stream": True})
    assert status == 200
    assert headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "1/alpha"
    assert b"Hello" in body and body.endswith(DONE)


# --- streams ------------------------------------------------------------------------------


async def test_stream_503_before_first_byte_is_retried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(UNAVAILABLE, Reset(send_headers=False))
    status, headers, body = await post(proxy, {**HI, "stream": True})
    assert status == 200
    assert headers["x-arbstr-retries"] == "2/alpha"
    assert body.endswith(DONE)


async def test_reset_mid_stream_sends_error_event_and_is_not_retried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(
        Stream(events=[sse(chunk("one ")), sse(chunk("two"))], chunk_delay_s=0.02, then_reset=True)
    )
    status, _, body = await post(proxy, {**HI, "stream": True})
    assert status == 200
    last = body.strip().split(b"\n\n")[-1]
    err = json.loads(last.removeprefix(b"data: "))["error"]
    assert err["code"] == "stream_interrupted" and err["type"] == "upstream_error"
    assert beta.chat_requests == [] and len(fake_upstream.chat_requests) == 1
    rec = await record(proxy)
    assert not rec.success and rec.streaming and rec.output_tokens == 2  # partial


async def test_stream_idle_timeout_sends_error_event(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two_providers(fake_upstream.url, beta.url, server={"stream_idle_timeout_s": 0.3})
    proxy = start(proxies, data)
    fake_upstream.push(Stream(events=[sse(chunk("one"))], then_hang=True))
    t0 = time.monotonic()
    status, _, body = await post(proxy, {**HI, "stream": True})
    assert 0.25 <= time.monotonic() - t0 < 2
    assert status == 200
    err = json.loads(body.strip().split(b"\n\n")[-1].removeprefix(b"data: "))["error"]
    assert err["code"] == "stream_interrupted"
    assert "stream_idle_timeout_s" in err["message"]
    await fake_upstream.wait_disconnect(timeout_s=2)


async def test_openai_sdk_raises_on_reset_mid_stream(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url))
    fake_upstream.push(Stream(events=[sse(chunk("partial"))], then_reset=True))
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )

        async def consume() -> list[str]:
            return [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]

        with pytest.raises(openai.APIError, match="stream broken"):
            await consume()


# --- circuit breaker ----------------------------------------------------------------------


async def test_breaker_opens_skips_provider_and_recovers(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {"breaker_failures": 3, "breaker_cooldown_s": 0.5, "max_attempts_per_provider": 1}
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    fake_upstream.push(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    for _ in range(3):
        status, headers, _ = await post(proxy)
        assert status == 200 and headers["x-arbstr-provider"] == "beta"
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        health = await r.json()
    assert health["status"] == "degraded"
    assert health["providers"]["alpha"]["state"] == "open"
    assert health["providers"]["alpha"]["consecutive_failures"] == 3
    # open: alpha is not even tried
    status, headers, _ = await post(proxy)
    assert headers["x-arbstr-provider"] == "beta" and "x-arbstr-retries" not in headers
    assert len(fake_upstream.chat_requests) == 3
    await asyncio.sleep(0.6)
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        assert (await r.json())["providers"]["alpha"]["state"] == "half_open"
    status, headers, _ = await post(proxy)  # the half-open probe succeeds
    assert headers["x-arbstr-provider"] == "alpha"
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        health = await r.json()
    assert health["status"] == "ok" and health["providers"]["alpha"]["state"] == "closed"


async def test_all_open_gives_503_and_unhealthy(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {"breaker_failures": 1, "breaker_cooldown_s": 30, "max_attempts_per_provider": 1}
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    fake_upstream.default = UNAVAILABLE
    beta.default = UNAVAILABLE
    status, _, _ = await post(proxy)
    assert status == 502
    status, headers, body = await post(proxy)
    assert status == 503
    assert error_of(body)["code"] == "providers_cooling_down"
    assert "x-arbstr-request-id" in headers
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        assert r.status == 503
        assert (await r.json())["status"] == "unhealthy"


async def test_retry_after_extends_cooldown(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {
        "breaker_failures": 1,
        "breaker_cooldown_s": 0.1,
        "max_attempts_per_provider": 1,
        "retry_after_cap_s": 0,
    }
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    fake_upstream.push(Reply(status=429, headers={"Retry-After": "5"}))
    await post(proxy)
    await asyncio.sleep(0.3)
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        assert (await r.json())["providers"]["alpha"]["state"] == "open"


# --- under load ---------------------------------------------------------------------------


async def test_half_failing_provider_every_request_still_succeeds(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    retry = {"breaker_failures": 1000, "max_attempts_per_provider": 1}
    proxy = start(proxies, two_providers(fake_upstream.url, beta.url, retry=retry))
    n = 200
    fake_upstream.push(*[UNAVAILABLE if i % 2 else Completion() for i in range(n)])
    sem = asyncio.Semaphore(20)

    async def one(s: aiohttp.ClientSession) -> tuple[int, str]:
        async with sem, s.post(proxy.url + CHAT, json=HI) as r:
            await r.read()
            return r.status, r.headers["x-arbstr-provider"]

    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*[one(s) for _ in range(n)])
    assert [st for st, _ in results] == [200] * n
    served_by = [p for _, p in results]
    assert served_by.count("alpha") == n // 2 and served_by.count("beta") == n // 2
