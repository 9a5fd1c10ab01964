"""Tests for the built-in mock providers (arbstr.mock)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec
import openai
import pytest

from arbstr.mock import (
    DEFAULT_MOCKS,
    MockProvider,
    MockSpec,
    mock_config_data,
    start_mock_providers,
)

AUTH = {"Authorization": "Bearer sk-test"}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Write a haiku about the sea, please"},
]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": MESSAGES, **extra}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def alpha() -> AsyncIterator[MockProvider]:
    async with MockProvider(DEFAULT_MOCKS[0]) as provider:
        yield provider


async def post(
    session: aiohttp.ClientSession,
    provider: MockProvider,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    async with session.post(
        provider.url + "/chat/completions",
        json=body,
        headers=AUTH if headers is None else headers,
    ) as resp:
        return resp.status, await resp.json(), resp.headers


async def stream_events(
    session: aiohttp.ClientSession, provider: MockProvider, body: Any
) -> tuple[aiohttp.ClientResponse, list[bytes]]:
    async with session.post(provider.url + "/chat/completions", json=body, headers=AUTH) as resp:
        raw = await resp.read()
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    for event in events:
        assert event.startswith(b"data: ")
    return resp, [e[len(b"data: ") :] for e in events]


def expected_prompt_tokens(messages: list[dict[str, str]]) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return -(-chars // 4) + 3 * len(messages)


def test_default_mocks_alpha_cheaper_for_every_model() -> None:
    alpha, beta = DEFAULT_MOCKS[0], DEFAULT_MOCKS[1]
    assert alpha.name != beta.name
    assert set(alpha.models) == set(beta.models)
    assert {"gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet"} <= set(alpha.models)
    assert alpha.input_rate < beta.input_rate
    assert alpha.output_rate < beta.output_rate
    assert alpha.base_fee < beta.base_fee


async def test_completion_shape_usage_and_cost(
    alpha: MockProvider, session: aiohttp.ClientSession
) -> None:
    status, body, headers = await post(session, alpha, chat())
    assert status == 200
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o"
    assert body["system_fingerprint"]
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content == (
        "Hello from mock-alpha (gpt-4o)! You said: Write a haiku about the sea, please"
    )

    usage = body["usage"]
    assert usage["prompt_tokens"] == expected_prompt_tokens(MESSAGES)
    assert usage["completion_tokens"] == len(content.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    spec = alpha.spec
    cost = (
        usage["prompt_tokens"] * spec.input_rate + usage["completion_tokens"] * spec.output_rate
    ) / 1000 + spec.base_fee
    assert usage["cost"]["total_msats"] == round(cost * 1000)
    assert usage["cost_sats"] == pytest.approx(cost, abs=1e-3)
    assert headers["X-Routstr-Cost-Msats"] == str(usage["cost"]["total_msats"])
    assert alpha.requests_served == 1


async def test_reply_truncates_long_user_message_and_reads_content_parts(
    alpha: MockProvider, session: aiohttp.ClientSession
) -> None:
    long_text = "word " * 50
    body = chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": long_text}]}],
    )
    status, reply, _ = await post(session, alpha, body)
    assert status == 200
    content = reply["choices"][0]["message"]["content"]
    said = content.split("You said: ", 1)[1]
    assert said == " ".join(long_text[:60].split())


async def test_request_id_is_echoed(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    _, _, headers = await post(session, alpha, chat(), {**AUTH, "X-Request-Id": "req-123"})
    assert headers["X-Request-Id"] == "req-123"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_truncates(
    alpha: MockProvider, session: aiohttp.ClientSession, field: str
) -> None:
    status, body, _ = await post(session, alpha, chat(**{field: 3}))
    assert status == 200
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Hello from mock-alpha "
    assert body["usage"]["completion_tokens"] == 3


async def test_large_max_tokens_does_not_truncate(
    alpha: MockProvider, session: aiohttp.ClientSession
) -> None:
    _, body, _ = await post(session, alpha, chat(max_tokens=1000))
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_stream_without_usage(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    resp, events = await stream_events(session, alpha, chat(stream=True))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert "X-Routstr-Cost-Msats" in resp.headers
    assert events[-1] == b"[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    assert next(iter(ids)).startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == "gpt-4o"
        assert "usage" not in c
        assert len(c["choices"]) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["choices"][0]["delta"]["content"] == ""
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    middle = chunks[1:-1]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    text = "".join(c["choices"][0]["delta"]["content"] for c in middle)
    _, body, _ = await post(session, alpha, chat())
    assert text == body["choices"][0]["message"]["content"]
    assert len(middle) == body["usage"]["completion_tokens"]
    assert alpha.requests_served == 2


async def test_stream_with_usage_and_max_tokens(
    alpha: MockProvider, session: aiohttp.ClientSession
) -> None:
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=4)
    resp, events = await stream_events(session, alpha, body)
    assert events[-1] == b"[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["prompt_tokens"] == expected_prompt_tokens(MESSAGES)
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    assert usage["cost"]["total_msats"] == int(resp.headers["X-Routstr-Cost-Msats"])
    assert usage["cost_sats"] == usage["cost"]["total_msats"] / 1000
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"] is None  # like OpenAI: every other chunk has usage null
    assert len(chunks[1:-2]) == 4


async def test_stream_delays() -> None:
    spec = DEFAULT_MOCKS[1]
    async with (
        MockProvider(spec, chunk_delay_s=0.01, first_byte_delay_s=0.1) as beta,
        aiohttp.ClientSession() as session,
    ):
        start = time.monotonic()
        async with session.post(
            beta.url + "/chat/completions", json=chat(stream=True, max_tokens=3), headers=AUTH
        ) as resp:
            assert resp.status == 200
            first = await resp.content.readuntil(b"\n\n")
            ttfb = time.monotonic() - start
            rest = await resp.read()
        total = time.monotonic() - start
    assert first.startswith(b"data: ")
    assert rest.endswith(b"data: [DONE]\n\n")
    assert ttfb >= 0.1
    assert total >= 0.1 + 4 * 0.01  # 3 content chunks + final chunk, each after a pause


async def test_client_disconnect_mid_stream_stops_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with (
        MockProvider(DEFAULT_MOCKS[0], chunk_delay_s=0.05) as alpha,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            alpha.url + "/chat/completions", json=chat(stream=True), headers=AUTH
        ) as resp:
            await resp.content.readuntil(b"\n\n")
        await asyncio.sleep(0.15)
        assert alpha.requests_served == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unauthorized(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        status, body, _ = await post(session, alpha, chat(), headers)
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        assert isinstance(body["error"]["message"], str)
        assert isinstance(body["error"]["type"], str)
    assert alpha.requests_served == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b'{"messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "gpt-4o"}',
        b'{"model": "gpt-4o", "messages": []}',
        b'{"model": "gpt-4o", "messages": "hi"}',
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    ],
)
async def test_bad_request(alpha: MockProvider, session: aiohttp.ClientSession, raw: bytes) -> None:
    async with session.post(
        alpha.url + "/chat/completions",
        data=raw,
        headers={**AUTH, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["type"] == "invalid_request_error"


async def test_unknown_model(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    status, body, _ = await post(session, alpha, chat(model="gpt-5-ultra"))
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert "gpt-5-ultra" in body["error"]["message"]


async def test_unknown_route_and_method(
    alpha: MockProvider, session: aiohttp.ClientSession
) -> None:
    async with session.get(alpha.url + "/nope") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    async with session.get(alpha.url + "/chat/completions") as resp:
        assert resp.status == 405
        assert "error" in await resp.json()


async def test_models_sats_pricing(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    async with session.get(alpha.url + "/models") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(alpha.spec.models)
    for model in body["data"]:
        assert model["object"] == "model"
        pricing = model["sats_pricing"]
        assert pricing["prompt"] * 1000 == pytest.approx(alpha.spec.input_rate)
        assert pricing["completion"] * 1000 == pytest.approx(alpha.spec.output_rate)
        assert pricing["request"] == pytest.approx(alpha.spec.base_fee)


async def test_balance_info(alpha: MockProvider, session: aiohttp.ClientSession) -> None:
    async with session.get(alpha.url + "/balance/info", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert isinstance(body["balance"], int)
    assert body["balance"] > 0


async def test_start_mock_providers_and_config(mock_providers: list[MockProvider]) -> None:
    assert [p.spec for p in mock_providers] == list(DEFAULT_MOCKS)
    assert len({p.url for p in mock_providers}) == len(mock_providers)
    for p in mock_providers:
        assert p.url.startswith("http://127.0.0.1:")
        assert p.url.endswith("/v1")

    config = mock_config_data(mock_providers)
    assert set(config) == {"providers", "policies", "tiers"}
    assert [(t["name"], t["models"]) for t in config["tiers"]] == [
        ("economy", ["gpt-4o-mini"]),
        ("standard", ["gpt-4o"]),
        ("frontier", ["claude-3.5-sonnet"]),
    ]
    for entry, p in zip(config["providers"], mock_providers, strict=True):
        assert entry == {
            "name": p.spec.name,
            "url": p.url,
            "api_key": f"sk-mock-{p.spec.name}",
            "models": list(p.spec.models),
            "input_rate": p.spec.input_rate,
            "output_rate": p.spec.output_rate,
            "base_fee": p.spec.base_fee,
        }
    policies = config["policies"]
    assert policies["default_strategy"] == "lowest_cost"
    rules = {r["name"]: r for r in policies["rules"]}
    assert rules["code_generation"]["allowed_models"] == ["claude-3.5-sonnet", "gpt-4o"]
    assert rules["code_generation"]["max_sats_per_1k_output"] == 50
    assert rules["code_generation"]["keywords"] == ["code", "function", "implement"]
    assert rules["cheap"]["allowed_models"] == ["gpt-4o-mini"]
    # Every provider's output rate passes the code_generation cap.
    assert all(p.spec.output_rate <= 50 for p in mock_providers)


async def test_custom_spec_and_restart_guard() -> None:
    spec = MockSpec("solo", ("tiny",), input_rate=1, output_rate=2, base_fee=0.5)
    provider = MockProvider(spec)
    await provider.start()
    try:
        with pytest.raises(RuntimeError):
            await provider.start()
        async with aiohttp.ClientSession() as session:
            status, body, _ = await post(session, provider, chat(model="tiny"))
        assert status == 200
        assert body["choices"][0]["message"]["content"].startswith("Hello from solo (tiny)!")
    finally:
        await provider.close()
    await provider.close()  # idempotent


async def test_openai_sdk_end_to_end(alpha: MockProvider) -> None:
    client = openai.AsyncOpenAI(base_url=alpha.url, api_key="sk-test", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
        )
        assert completion.choices[0].message.content == (
            "Hello from mock-alpha (gpt-4o-mini)! You said: ping"
        )
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 7

        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "ping"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage_seen = None
        async for event in stream:
            for choice in event.choices:
                parts.append(choice.delta.content or "")
            if event.usage is not None:
                usage_seen = event.usage
        assert "".join(parts) == completion.choices[0].message.content
        assert usage_seen is not None
        assert usage_seen.completion_tokens == 7

        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
    finally:
        await client.close()


async def test_start_failure_cleans_up() -> None:
    first = MockProvider(DEFAULT_MOCKS[0])
    await first.start()
    try:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        clash = MockProvider(DEFAULT_MOCKS[1])
        with pytest.raises(OSError, match="in use"):
            await clash.start(port=port)
        with pytest.raises(OSError, match="assign"):
            await start_mock_providers([DEFAULT_MOCKS[1]], host="203.0.113.1")
    finally:
        await first.close()
