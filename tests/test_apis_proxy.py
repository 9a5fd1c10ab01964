"""Embeddings and legacy completions through the real proxy: the openai SDK, rows with their
API, cost from usage and from a reported charge, retries, fallback, breaker, disconnects,
errors in shape, and the providers' ``apis`` in routing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from arbstr.storage import Store
from fake_apis import text_chunk
from fake_upstream import DONE, Completion, FakeUpstream, Reply, Stream, sse
from harness import ProxyThread, make_config, provider

FAST = {"backoff_base_ms": 5, "backoff_max_ms": 10}
BUSY = Reply(status=503, json={"error": {"message": "busy", "type": "server_error"}})


@pytest.fixture
async def beta() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def start(proxies: list[ProxyThread], data: dict[str, Any], **kw: Any) -> ProxyThread:
    p = ProxyThread(make_config(data), **kw).start()
    proxies.append(p)
    return p


def one(url: str, **kw: Any) -> dict[str, Any]:
    return {"providers": [provider("alpha", url, models=["m"], **kw)], "retry": FAST}


def two(a: str, b: str, **retry: Any) -> dict[str, Any]:
    return {
        "providers": [
            provider("alpha", a, models=["m"], input_rate=1, output_rate=1),
            provider("beta", b, models=["m"], input_rate=5, output_rate=5),
        ],
        "retry": {**FAST, **retry},
    }


async def post(p: ProxyThread, path: str, body: Any) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as s, s.post(p.url + path, json=body) as r:
        return r.status, r.headers, await r.read()


async def rows(p: ProxyThread, n: int = 1) -> list[Any]:
    for _ in range(500):
        if len(p.records) >= n:
            return p.records
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(p.records)} rows, expected {n}")


# -- embeddings -------------------------------------------------------------------------------


async def test_embeddings_sdk_row_and_cost(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url, input_rate=10, output_rate=30))
    fake_upstream.push(Completion(prompt_tokens=8))
    async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
        raw = await c.embeddings.with_raw_response.create(model="m", input=["a b", "c"])
    got = raw.parse()
    assert [len(d.embedding) for d in got.data] == [3, 3]
    assert raw.headers["x-arbstr-provider"] == "alpha"
    assert raw.headers["x-arbstr-cost-source"] == "computed"
    assert raw.headers["x-arbstr-cost-sats"] == "0.080"  # 8 tokens at 10 sats/1000
    (req,) = fake_upstream.api_requests("/embeddings")
    assert req.json["input"] == ["a b", "c"] and req.path.endswith("/embeddings")
    (rec,) = await rows(p)
    assert rec.api == "embeddings" and rec.success and not rec.streaming
    assert (rec.input_tokens, rec.output_tokens, rec.cost_msats) == (8, 0, 80)


async def test_embeddings_reported_charge_and_token_arrays(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url))
    fake_upstream.push(Completion(prompt_tokens=3, usage_cost_msats=1234))
    status, headers, _ = await post(p, "/v1/embeddings", {"model": "m", "input": [[1, 2, 3]]})
    assert status == 200
    assert (headers["x-arbstr-cost-sats"], headers["x-arbstr-cost-source"]) == ("1.234", "provider")
    (rec,) = await rows(p)
    assert rec.provider_cost_msats == 1234 and rec.cost_msats == 1234


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "m", "input": "x", "stream": True}, "invalid_stream"),
        ({"model": "m"}, "missing_input"),
        ({"model": "m", "input": []}, "invalid_request"),
        ({"input": "x"}, "missing_model"),
    ],
)
async def test_embeddings_bad_requests_in_shape(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], body: Any, code: str
) -> None:
    p = start(proxies, one(fake_upstream.url))
    status, headers, raw = await post(p, "/v1/embeddings", body)
    assert status == 400 and "x-arbstr-request-id" in headers
    assert json.loads(raw)["error"]["code"] == code
    (rec,) = await rows(p)
    assert rec.api == "embeddings" and rec.error_status == 400
    assert fake_upstream.requests == []


async def test_embeddings_fallback_on_503(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, two(fake_upstream.url, beta.url, max_attempts_per_provider=1))
    fake_upstream.push(BUSY)
    status, headers, _ = await post(p, "/embeddings", {"model": "m", "input": "hi"})
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "1/alpha"
    (rec,) = await rows(p)
    assert rec.api == "embeddings" and rec.attempts == 2


async def test_providers_without_the_api_are_not_offered(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = two(fake_upstream.url, beta.url)
    data["providers"][0]["apis"] = ["chat"]  # the cheaper one serves chat only
    p = start(proxies, data)
    status, headers, _ = await post(p, "/v1/embeddings", {"model": "m", "input": "hi"})
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert fake_upstream.requests == []
    data["providers"][1]["apis"] = ["chat"]
    p2 = start(proxies, data)
    status, _, raw = await post(p2, "/v1/embeddings", {"model": "m", "input": "hi"})
    assert status == 400 and json.loads(raw)["error"]["code"] == "no_provider"


# -- legacy completions ---------------------------------------------------------------------


async def test_completions_sdk_json(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url, input_rate=10, output_rate=30))
    fake_upstream.push(Completion("Hi there", prompt_tokens=4, completion_tokens=2))
    async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
        got = await c.completions.create(model="m", prompt="Say hi", max_tokens=7)
    assert got.choices[0].text == "Hi there"
    (req,) = fake_upstream.api_requests("/completions")
    assert req.json == {"model": "m", "prompt": "Say hi", "max_tokens": 7}
    (rec,) = await rows(p)
    assert rec.api == "completions" and (rec.input_tokens, rec.output_tokens) == (4, 2)
    assert rec.cost_msats == 100  # 4 * 10 + 2 * 30


async def test_completions_sdk_stream(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url, input_rate=10, output_rate=30))
    fake_upstream.push(Completion("one two three", prompt_tokens=5, completion_tokens=3))
    async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
        stream = await c.completions.create(model="m", prompt="count", stream=True)
        chunks = [ch async for ch in stream]
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "one two three"
    assert all(ch.choices for ch in chunks)  # no usage chunk (not asked), no trailer
    (req,) = fake_upstream.api_requests("/completions")
    assert req.include_usage  # asked on the client's behalf
    (rec,) = await rows(p)
    assert rec.api == "completions" and rec.streaming and rec.success
    assert (rec.input_tokens, rec.output_tokens, rec.cost_msats) == (5, 3, 140)


async def test_completions_stream_bytes_and_usage_when_asked(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url))
    usage = {"prompt_tokens": 2, "completion_tokens": 1, "cost": {"total_msats": 77}}
    events = [sse(text_chunk("yo", "m")), sse(text_chunk(None, "m", usage=usage)), DONE]
    fake_upstream.push(Stream(events))
    body = {
        "model": "m",
        "prompt": ["a"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, headers, raw = await post(p, "/v1/completions", body)
    assert status == 200 and headers["x-arbstr-streaming"] == "true"
    assert raw == b"".join(events)  # byte for byte: no trailer
    (rec,) = await rows(p)
    assert rec.cost_msats == 77 and rec.provider_cost_msats == 77


async def test_completions_stream_cut_ends_with_error(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url))
    fake_upstream.push(Stream([sse(text_chunk("half", "m"))], then_reset=True))
    async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
        stream = await c.completions.create(model="m", prompt="x", stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
    (rec,) = await rows(p)
    assert not rec.success and rec.api == "completions" and rec.error_status == 502


async def test_completions_disconnect_cancels_upstream(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, one(fake_upstream.url))
    fake_upstream.push(Stream([sse(text_chunk("a", "m"))], then_hang=True))
    async with aiohttp.ClientSession() as s:
        body = {"model": "m", "prompt": "x", "stream": True}
        async with s.post(p.url + "/v1/completions", json=body) as r:
            assert r.status == 200
            await r.content.readany()
    await fake_upstream.wait_disconnect(timeout_s=3)
    (rec,) = await rows(p)
    assert rec.error_status == 499 and rec.api == "completions"


async def test_completions_breaker_opens(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(
        proxies,
        two(fake_upstream.url, beta.url, max_attempts_per_provider=1, breaker_failures=1),
    )
    fake_upstream.push(BUSY)
    for _ in range(2):
        status, headers, _ = await post(p, "/v1/completions", {"model": "m", "prompt": "x"})
        assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert len(fake_upstream.api_requests("/completions")) == 1  # cooling down after one


# -- every route: errors in shape, headers, one row -------------------------------------------


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/completions", "/completions"])
async def test_get_is_405_and_auth_401(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], path: str
) -> None:
    data = one(fake_upstream.url)
    data["server"] = {"auth_token": "tok-0123456789"}
    p = start(proxies, data)
    async with aiohttp.ClientSession() as s:
        async with s.get(p.url + path) as r:
            assert r.status == 405 and "x-arbstr-request-id" in r.headers
            assert (await r.json())["error"]["code"] == "method_not_allowed"
        async with s.post(p.url + path, json={"model": "m", "input": "x"}) as r:
            assert r.status == 401 and "x-arbstr-request-id" in r.headers
        async with s.post(p.url + "/v1/nope", json={}) as r:
            assert r.status == 404
    got = await rows(p, 2)
    assert [r.error_status for r in got] == [405, 401]


async def test_stats_group_by_api_and_requests_filter(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], tmp_path: Path
) -> None:
    store = Store.open(str(tmp_path / "log.db"))
    p = start(proxies, one(fake_upstream.url), sink=store)
    await post(p, "/v1/embeddings", {"model": "m", "input": "x"})
    await post(p, "/v1/completions", {"model": "m", "prompt": "x"})
    await post(
        p, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert store.flush()
    async with aiohttp.ClientSession() as s:
        async with s.get(p.url + "/v1/stats", params={"group_by": "api"}) as r:
            stats = await r.json()
        async with s.get(p.url + "/v1/requests", params={"api": "embeddings"}) as r:
            page = await r.json()
        async with s.get(p.url + "/v1/stats", params={"api": "completions"}) as r:
            only = await r.json()
    assert sorted(stats["groups"]) == ["chat", "completions", "embeddings"]
    assert [item["api"] for item in page["data"]] == ["embeddings"]
    assert only["counts"]["total"] == 1
