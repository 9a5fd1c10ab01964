"""Anthropic Messages and count_tokens through the real proxy, with the anthropic SDK: on
providers that serve Messages natively, and on providers that speak only chat completions
(arbstr translates, tool use and streams included)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import pytest

from arbstr.mock import MockProvider, mock_config_data
from harness import ProxyThread, make_config

MODEL = "claude-3.5-sonnet"
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK: Any = [{"role": "user", "content": "Please use the get_weather tool for Paris"}]
Start = Callable[..., Awaitable[tuple[ProxyThread, anthropic.AsyncAnthropic]]]


@pytest.fixture
def start(mock_providers: list[MockProvider], proxies: list[ProxyThread]) -> Start:
    async def go(
        apis: list[str] | None = None, auth: str | None = None
    ) -> tuple[ProxyThread, anthropic.AsyncAnthropic]:
        data = mock_config_data(mock_providers)
        for p in data["providers"]:
            p["balance_interval_s"] = 0
            if apis is not None:
                p["apis"] = apis
        if auth is not None:
            data["server"] = {"auth_token": auth}
        proxy = ProxyThread(make_config(data)).start()
        proxies.append(proxy)
        client = anthropic.AsyncAnthropic(
            base_url=proxy.url, api_key=auth or "unused", max_retries=0
        )
        return proxy, client

    return go


@pytest.mark.parametrize("apis", [None, ["chat"]], ids=["native", "translated"])
async def test_messages_json_and_stream_with_tool_use(start: Start, apis: list[str] | None) -> None:
    proxy, client = await start(apis)
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER]
    )
    message = raw.parse()
    assert raw.headers["x-arbstr-provider"] == "mock-alpha"
    assert raw.headers["x-arbstr-cost-source"] == "provider"
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "mock"}

    async with client.messages.stream(
        model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"]
    assert final.usage.output_tokens > 0

    follow_up: Any = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    answer = await client.messages.create(
        model=MODEL, max_tokens=200, messages=follow_up, tools=[WEATHER]
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text" and "sunny" in answer.content[0].text

    rows = proxy.records
    assert [r.api for r in rows] == ["messages"] * 3
    assert all(r.success and r.cost_msats for r in rows)
    assert [r.streaming for r in rows] == [False, True, False]


async def test_count_tokens_asks_a_native_provider(start: Start) -> None:
    proxy, client = await start()
    raw = await client.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "count these words please"}]
    )
    counted = raw.parse()
    assert raw.headers["x-arbstr-count-source"] == "provider"
    assert raw.headers["x-arbstr-provider"] == "mock-alpha"
    assert counted.input_tokens > 0
    assert proxy.records == []  # counting is free: no request-log row


async def test_count_tokens_is_estimated_without_a_native_provider(start: Start) -> None:
    _, client = await start(["chat"])
    text = "x" * 400
    raw = await client.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    counted = raw.parse()
    assert raw.headers["x-arbstr-count-source"] == "estimate"
    assert counted.input_tokens == 100  # ≈ characters / 4


async def test_count_tokens_errors_are_anthropic_shaped(start: Start) -> None:
    _, client = await start(auth="arbstr-secret-token-1234")
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.count_tokens(model=MODEL, messages=[])
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    wrong = anthropic.AsyncAnthropic(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.count_tokens(model=MODEL, messages=ASK)
    # the right token as x-api-key (how the anthropic SDK sends it) passes
    ok = await client.messages.count_tokens(model=MODEL, messages=ASK)
    assert ok.input_tokens > 0


async def test_messages_errors_are_anthropic_shaped(start: Start) -> None:
    _, client = await start()
    with pytest.raises(anthropic.BadRequestError) as missing:
        await client.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    body: Any = missing.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
