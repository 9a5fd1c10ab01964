"""The proxy end to end: real uvicorn on loopback, scripted fake upstream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from fake_upstream import DONE, Completion, FakeUpstream, Reply, Stream, chunk, sse
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def one_provider(url: str, **kw: Any) -> dict[str, Any]:
    return {"providers": [provider("alpha", url, **kw)]}


def start(proxies: list[ProxyThread], data: dict[str, Any], **kw: Any) -> ProxyThread:
    p = ProxyThread(make_config(data), **kw).start()
    proxies.append(p)
    return p


async def post(
    proxy: ProxyThread, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, data=data, headers=headers or {}) as r,
    ):
        return r.status, r.headers.copy(), await r.read()


async def last_record(proxy: ProxyThread, n: int = 1) -> Any:
    """The newest request record, once ``n`` exist (written just after the response)."""
    for _ in range(200):
        if len(proxy.records) >= n:
            return proxy.records[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no request record")


def assert_openai_error(body: bytes, code: str | None = None) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    if code is not None:
        assert err["code"] == code
    return err  # type: ignore[no-any-return]


# --- non-streaming ------------------------------------------------------------------------


async def test_completion_forwarded_with_headers_and_cost(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url, input_rate=10, output_rate=30))
    fake_upstream.push(Completion(content="Hello there", prompt_tokens=12, completion_tokens=7))
    payload = {**HI, "temperature": 0.3, "some_unknown_field": {"kept": True}}
    raw = json.dumps(payload).encode()
    status, headers, body = await post(proxy, raw)
    assert status == 200
    rid = headers["x-arbstr-request-id"]
    uuid.UUID(rid)
    assert headers["x-arbstr-provider"] == "alpha"
    assert headers["x-arbstr-model"] == "gpt-4o"
    assert headers["x-arbstr-policy"] == "default"
    # (12 * 10 + 7 * 30) / 1000 = 0.33
    assert headers["x-arbstr-cost-sats"] == "0.330"
    assert float(headers["x-arbstr-latency-ms"]) >= float(headers["x-arbstr-overhead-ms"]) >= 0
    assert "x-arbstr-retries" not in headers
    data = json.loads(body)
    assert data["choices"][0]["message"]["content"] == "Hello there"
    up = fake_upstream.last_request
    assert up.body == raw  # forwarded byte for byte, unknown fields kept
    assert up.headers["x-request-id"] == rid
    assert up.headers["authorization"] == "Bearer sk-test-alpha-0123456789"
    rec = await last_record(proxy)
    assert rec.request_id == rid and rec.success and rec.input_tokens == 12
    assert rec.cost_msats == 330


async def test_upstream_body_returned_unchanged(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    odd = (
        b'{"id":"x", "object":"chat.completion","choices":[],'
        b'  "usage":{"prompt_tokens":3,"completion_tokens":4}}'
    )
    fake_upstream.push(Reply(body=odd, headers={"Content-Type": "application/json"}))
    status, headers, body = await post(proxy, HI)
    assert status == 200 and body == odd
    assert headers["x-arbstr-cost-sats"] == "0.150"


async def test_cheapest_provider_wins_and_ties_break_by_name(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [
            provider("zeta", url, input_rate=1, output_rate=1),
            provider("dear", url, input_rate=50, output_rate=90),
            provider("beta", url, input_rate=1, output_rate=1),
        ]
    }
    proxy = start(proxies, data)
    _, headers, _ = await post(proxy, HI)
    assert headers["x-arbstr-provider"] == "beta"  # zeta costs the same; name breaks the tie
    assert fake_upstream.last_request.headers["authorization"].endswith("sk-test-beta-0123456789")


async def test_per_model_rates_change_the_choice(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [
            provider("alpha", url, models=["gpt-4o", "gpt-4o-mini"], input_rate=5, output_rate=5),
            provider(
                "beta",
                url,
                models=["gpt-4o", "gpt-4o-mini"],
                input_rate=9,
                output_rate=9,
                model_rates={"gpt-4o-mini": {"input_rate": 0.5, "output_rate": 1}},
            ),
        ]
    }
    proxy = start(proxies, data)
    _, h1, _ = await post(proxy, HI)
    _, h2, _ = await post(proxy, {**HI, "model": "gpt-4o-mini"})
    assert h1["x-arbstr-provider"] == "alpha"
    assert h2["x-arbstr-provider"] == "beta"
    # 10 prompt tokens * 0.5 + 5 completion * 1 = 10 / 1000
    assert h2["x-arbstr-cost-sats"] == "0.010"


async def test_policy_by_header_and_keyword_and_allowed_models(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [provider("alpha", url, models=["gpt-4o", "gpt-4o-mini", "claude"])],
        "policies": {
            "rules": [
                {"name": "code", "allowed_models": ["claude", "gpt-4o"], "keywords": ["Code"]},
                {"name": "cheap", "allowed_models": ["gpt-4o-mini"]},
            ]
        },
    }
    proxy = start(proxies, data)
    msg = {"model": "gpt-4o", "messages": [{"role": "user", "content": "write some CODE"}]}
    _, headers, _ = await post(proxy, msg)
    assert headers["x-arbstr-policy"] == "code"
    status, headers, body = await post(proxy, HI, {"X-Arbstr-Policy": "cheap"})
    assert status == 400
    assert "not allowed" in assert_openai_error(body, "model_not_allowed")["message"]
    assert headers["x-arbstr-policy"] == "cheap"
    status, _, body = await post(proxy, HI, {"X-Arbstr-Policy": "nope"})
    assert status == 400
    assert "nope" in assert_openai_error(body, "unknown_policy")["message"]


async def test_auto_model_picks_cheapest_allowed_and_rewrites_body(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [
            provider("alpha", url, models=["big"], input_rate=30, output_rate=60),
            provider(
                "beta",
                url,
                models=["small", "big"],
                input_rate=40,
                output_rate=80,
                model_rates={"small": {"input_rate": 1, "output_rate": 2}},
            ),
        ],
        "policies": {"rules": [{"name": "any", "allowed_models": ["big", "small"]}]},
    }
    proxy = start(proxies, data)
    status, headers, _ = await post(
        proxy, {**HI, "model": "auto", "extra": 1}, {"X-Arbstr-Policy": "any"}
    )
    assert status == 200
    assert headers["x-arbstr-model"] == "small"
    assert headers["x-arbstr-provider"] == "beta"
    sent = fake_upstream.last_request.json
    assert sent["model"] == "small" and sent["extra"] == 1
    # the default policy names no models: auto routes by the request's tier (a short "hi"
    # is economy: the cheapest third of the listed models by price)
    status, headers, _ = await post(proxy, {**HI, "model": "auto"})
    assert status == 200
    assert headers["x-arbstr-tier"] == "economy" and headers["x-arbstr-model"] == "small"


async def test_max_sats_per_1k_output_drops_expensive_providers(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [
            provider("alpha", url, input_rate=1, output_rate=100),
            provider("beta", url, input_rate=50, output_rate=40),
        ],
        "policies": {"rules": [{"name": "capped", "max_sats_per_1k_output": 50}]},
    }
    proxy = start(proxies, data)
    _, headers, _ = await post(proxy, {**HI, "max_tokens": 1000})
    assert headers["x-arbstr-provider"] == "beta"  # cheaper for 1000 output tokens anyway
    long_prompt = {**HI, "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 4000}]}
    _, headers, _ = await post(proxy, long_prompt, {"X-Arbstr-Policy": "capped"})
    assert headers["x-arbstr-provider"] == "beta"
    _, headers, _ = await post(proxy, long_prompt)
    assert headers["x-arbstr-provider"] == "alpha"  # without the cap, cheaper here


async def test_upstream_client_error_passed_through(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    err = {"error": {"message": "context too long", "type": "invalid_request_error", "code": "x"}}
    fake_upstream.push(Reply(status=400, json=err))
    status, headers, body = await post(proxy, HI)
    assert status == 400
    assert json.loads(body) == err
    assert headers["x-arbstr-provider"] == "alpha"
    assert len(fake_upstream.chat_requests) == 1  # not retried
    assert (await last_record(proxy)).error_status == 400


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "invalid_request"),
        (b'{"messages":[{"role":"user","content":"hi"}]}', "missing_model"),
        (b'{"model":"gpt-4o"}', "missing_messages"),
        (b'{"model":"gpt-4o","messages":[]}', "missing_messages"),
        (b'{"model":7,"messages":[]}', "invalid_request"),
        (b'{"model":"nope","messages":[{"role":"user","content":"x"}]}', "no_provider"),
    ],
)
async def test_bad_requests_get_openai_errors(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], payload: bytes, code: str
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    status, headers, body = await post(proxy, payload)
    assert status == 400
    assert headers["content-type"] == "application/json"
    uuid.UUID(headers["x-arbstr-request-id"])
    assert_openai_error(body, code)
    assert fake_upstream.chat_requests == []


async def test_body_limit(fake_upstream: FakeUpstream, proxies: list[ProxyThread]) -> None:
    data = one_provider(fake_upstream.url)
    data["server"] = {"max_body_bytes": 1000}
    proxy = start(proxies, data)
    big = {**HI, "messages": [{"role": "user", "content": "x" * 2000}]}
    status, _, body = await post(proxy, big)
    assert status == 413
    assert_openai_error(body, "request_too_large")


async def test_routes_and_methods(fake_upstream: FakeUpstream, proxies: list[ProxyThread]) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + CHAT) as r:
            assert r.status == 405
            assert_openai_error(await r.read())
        async with s.get(proxy.url + "/nope") as r:
            assert r.status == 404
            assert_openai_error(await r.read(), "not_found")


# --- auth ---------------------------------------------------------------------------------


async def test_auth_token_enforced(fake_upstream: FakeUpstream, proxies: list[ProxyThread]) -> None:
    data = one_provider(fake_upstream.url)
    data["server"] = {"auth_token": "${TOKEN}"}
    proxy = start_with_env(proxies, data, {"TOKEN": "s3cret-token"})
    status, headers, body = await post(proxy, HI)
    assert status == 401
    assert_openai_error(body, "invalid_api_key")
    assert "x-arbstr-request-id" in headers
    status, _, _ = await post(proxy, HI, {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, _ = await post(proxy, HI, {"Authorization": "Bearer s3cret-token"})
    assert status == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/health") as r:
            assert r.status == 200
        async with s.get(proxy.url + "/v1/models") as r:
            assert r.status == 401
        async with s.get(
            proxy.url + "/providers", headers={"Authorization": "Bearer s3cret-token"}
        ) as r:
            assert r.status == 200
    assert fake_upstream.last_request.headers["authorization"] != "Bearer s3cret-token"


def start_with_env(
    proxies: list[ProxyThread], data: dict[str, Any], env: dict[str, str]
) -> ProxyThread:
    p = ProxyThread(make_config(data, env)).start()
    proxies.append(p)
    return p


# --- admin routes -------------------------------------------------------------------------


async def test_models_providers_health(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    url = fake_upstream.url
    data = {
        "providers": [
            provider("alpha", url, models=["gpt-4o", "b"], api_key="sk-verysecretkey-123456"),
            provider("beta", url, models=["b", "c"], apis=["chat", "embeddings"]),
        ]
    }
    proxy = start(proxies, data)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/v1/models") as r:
            models = await r.json()
        async with s.get(proxy.url + "/providers") as r:
            raw = await r.read()
        async with s.get(proxy.url + "/health") as r:
            health = await r.json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["b", "c", "gpt-4o"]
    assert all(m["object"] == "model" for m in models["data"])
    assert b"sk-verysecretkey-123456" not in raw
    provs = json.loads(raw)["data"]
    assert provs[0]["api_key"] == "sk-ver…***"
    assert provs[0]["apis"] == ["chat", "completions", "embeddings", "messages", "responses"]
    assert provs[1]["apis"] == ["chat", "embeddings"]
    assert provs[0]["rates"] == {
        "input_rate": 10.0,
        "output_rate": 30.0,
        "cache_read_rate": 10.0,
        "base_fee": 0.0,
    }
    assert health["status"] == "ok"
    assert health["providers"]["alpha"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "latency_ms_avg": None,
        "funds": "unknown",
    }


# --- streaming ----------------------------------------------------------------------------


async def read_sse(resp: aiohttp.ClientResponse) -> list[bytes]:
    """Data payloads of the events, in order."""
    raw = await resp.read()
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines))
    return out


async def test_stream_relayed_with_arbstr_chunk_and_done(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url, input_rate=10, output_rate=30))
    fake_upstream.push(Completion(content="one two three", prompt_tokens=20, completion_tokens=3))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-arbstr-streaming"] == "true"
        assert r.headers["x-arbstr-provider"] == "alpha"
        rid = r.headers["x-arbstr-request-id"]
        events = await read_sse(r)
    assert events[-1] == b"[DONE]"
    trailer = json.loads(events[-2])
    assert trailer["choices"] == []
    a = trailer["arbstr"]
    assert a["request_id"] == rid and a["provider"] == "alpha" and a["model"] == "gpt-4o"
    assert a["policy"] == "default"
    assert (a["input_tokens"], a["output_tokens"]) == (20, 3)
    assert a["cost_sats"] == pytest.approx(0.29)
    assert a["latency_ms"] >= a["ttft_ms"] >= 0
    chunks = [json.loads(e) for e in events[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "one two three"
    # usage was requested upstream on the client's behalf, and its chunk not forwarded
    assert fake_upstream.last_request.include_usage
    assert all(c.get("choices") for c in chunks)
    rec = await last_record(proxy)
    assert rec.streaming and rec.success and rec.output_tokens == 3 and rec.ttft_ms is not None


async def test_stream_usage_forwarded_when_client_asks_and_body_untouched(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    payload = json.dumps({**HI, "stream": True, "stream_options": {"include_usage": True}}).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, data=payload) as r,
    ):
        events = await read_sse(r)
    assert fake_upstream.last_request.body == payload
    usage_chunks = [json.loads(e) for e in events[:-1] if b'"usage"' in e]
    assert any(c["choices"] == [] and c["usage"]["completion_tokens"] == 5 for c in usage_chunks)


async def test_stream_options_without_include_usage_is_completed(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    payload = {**HI, "stream": True, "stream_options": {"include_usage": False, "x": 1}}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=payload) as r:
        events = await read_sse(r)
    sent = fake_upstream.last_request.json
    assert sent["stream_options"] == {"include_usage": True, "x": 1}
    assert not any(json.loads(e).get("usage") for e in events[:-2])
    assert json.loads(events[-2])["arbstr"]["output_tokens"] == 5


async def test_stream_bytes_forwarded_unchanged_across_odd_splits(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    c1 = sse(chunk("héllo "))
    c2 = sse(chunk("world"))
    upstream_bytes = b": keep-alive comment\r\n\r\n" + c1.replace(b"\n\n", b"\r\n\r\n") + c2 + DONE
    cuts = [3, 17, 30, len(upstream_bytes) - 4]
    pieces = [upstream_bytes[a:b] for a, b in zip([0, *cuts], [*cuts, None], strict=True)]
    fake_upstream.push(Stream(events=pieces, chunk_delay_s=0.01))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        got = await r.read()
    head, _, tail = got.rpartition(b"data: [DONE]\n\n")
    assert tail == b""
    assert head.startswith(upstream_bytes[: -len(DONE)])
    trailer = head[len(upstream_bytes) - len(DONE) :]
    assert trailer.startswith(b"data: ") and b'"arbstr"' in trailer


async def test_stream_chunks_arrive_as_sent_not_batched(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    events = [sse(chunk("a")), sse(chunk("b")), sse(chunk("c")), DONE]
    fake_upstream.push(Stream(events=events, chunk_delay_s=0.15))
    arrivals: list[float] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        t0 = time.monotonic()
        async for _ in r.content.iter_any():
            arrivals.append(time.monotonic() - t0)
    # the first event arrives long before the last one was even written upstream
    assert arrivals[0] < 0.1
    assert arrivals[-1] > 0.4
    assert len(arrivals) >= 3


async def test_stream_without_done_ends_with_error_event(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    fake_upstream.push(Stream(events=[sse(chunk("partial"))]))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        events = await read_sse(r)
    err = json.loads(events[-1])["error"]
    assert err["code"] == "stream_interrupted" and err["type"] == "upstream_error"
    assert not (await last_record(proxy)).success


async def test_client_disconnect_cancels_upstream_stream(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    fake_upstream.push(Stream(events=[sse(chunk("first"))], then_hang=True))
    async with aiohttp.ClientSession() as s:
        r = await s.post(proxy.url + CHAT, json={**HI, "stream": True})
        await r.content.readany()
        left = time.monotonic()
        r.close()
        gone = await fake_upstream.wait_disconnect(timeout_s=2.0)
    assert gone - left < 0.2
    await asyncio.sleep(0.05)
    assert (await last_record(proxy)).error_status == 499


async def test_client_disconnect_cancels_upstream_completion(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    fake_upstream.push(Completion(delay_s=5))
    async with aiohttp.ClientSession() as s:
        task = asyncio.create_task(s.post(proxy.url + CHAT, json=HI))
        await fake_upstream.wait_for_requests(1)
        left = time.monotonic()
        task.cancel()
        gone = await fake_upstream.wait_disconnect(timeout_s=2.0)
    assert gone - left < 0.2


async def test_upstream_connections_are_kept_alive_and_reused(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, one_provider(fake_upstream.url))
    for _ in range(5):
        status, _, _ = await post(proxy, HI)
        assert status == 200
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r,
    ):
        await r.read()
    assert len(fake_upstream.chat_requests) == 6
    assert fake_upstream.connection_count == 1
    head = fake_upstream.last_request.headers
    assert head["accept-encoding"] == "identity"
    assert head["content-type"] == "application/json"
