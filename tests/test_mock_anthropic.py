"""The mock's Anthropic Messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from arbstr.mock import DEFAULT_MOCKS, MockProvider

MODEL = "claude-3.5-sonnet"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "hourly": {"type": "boolean"},
            "note": {"type": "string"},
        },
        "required": ["location", "unit", "days", "hourly"],
    },
}
EXPECTED_ARGS = {"location": "mock", "unit": "celsius", "days": 1, "hourly": True}


@pytest.fixture
async def alpha() -> AsyncIterator[MockProvider]:
    async with MockProvider(DEFAULT_MOCKS[0]) as provider:
        yield provider


@pytest.fixture
async def client(alpha: MockProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    root = alpha.url.removesuffix("/v1")
    async with anthropic.AsyncAnthropic(base_url=root, api_key="sk-test", max_retries=0) as c:
        yield c


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_message_json_usage_and_cost(
    alpha: MockProvider, client: anthropic.AsyncAnthropic
) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, system="Be brief.", messages=user("ping pong")
    )
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text"
    assert block.text == "Hello from mock-alpha (claude-3.5-sonnet)! You said: ping pong"
    usage = message.usage
    assert usage.input_tokens == -(-len("Be brief.ping pong") // 4) + 3
    assert usage.output_tokens == len(block.text.split())
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation_input_tokens == 0
    spec = alpha.spec
    cost = (
        usage.input_tokens * spec.input_rate + usage.output_tokens * spec.output_rate
    ) / 1000 + spec.base_fee
    extra = usage.model_dump()
    assert extra["cost"]["total_msats"] == round(cost * 1000)
    assert extra["cost_sats"] == extra["cost"]["total_msats"] / 1000
    assert raw.headers["X-Routstr-Cost-Msats"] == str(extra["cost"]["total_msats"])
    assert alpha.requests_served == 1


async def test_stream_event_sequence_and_helper(client: anthropic.AsyncAnthropic) -> None:
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user("hi there")}
    plain = await client.messages.create(**request)
    events = [e async for e in await client.messages.create(**request, stream=True)]
    types = [e.type for e in events]
    n = plain.usage.output_tokens
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens == plain.usage.input_tokens
    last = events[-2]
    assert last.type == "message_delta"
    assert last.delta.stop_reason == "end_turn"
    assert last.usage.output_tokens == n
    assert last.usage.model_dump()["cost"]["total_msats"] > 0

    async with client.messages.stream(**request) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert plain.content[0].type == "text"
    assert text == plain.content[0].text
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.usage.output_tokens == n
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.stop_reason == "end_turn"


async def test_max_tokens_stops_early(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=3, messages=user("x"))
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    async with client.messages.stream(model=MODEL, max_tokens=3, messages=user("x")) as s:
        final = await s.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert [b.model_dump(exclude={"parsed_output"}) for b in final.content] == [
        b.model_dump() for b in message.content
    ]


async def test_tool_use_when_asked_then_text_after_result(
    client: anthropic.AsyncAnthropic,
) -> None:
    ask = user("Please use the get_weather tool for Paris")
    message = await client.messages.create(
        model=MODEL, max_tokens=200, messages=ask, tools=[WEATHER]
    )
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert block.input == EXPECTED_ARGS
    assert message.usage.output_tokens > 1

    async with client.messages.stream(
        model=MODEL, max_tokens=200, messages=ask, tools=[WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [streamed] = final.content
    assert streamed.type == "tool_use"
    assert streamed.name == "get_weather"
    assert streamed.input == EXPECTED_ARGS
    assert final.usage.output_tokens == message.usage.output_tokens

    follow_up: list[Any] = [
        *ask,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny 21C"}],
        },
    ]
    answer = await client.messages.create(
        model=MODEL, max_tokens=200, messages=follow_up, tools=[WEATHER]
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    assert answer.content[0].text.endswith("The tool said: sunny 21C")


async def test_many_tools_and_reminders_without_an_ask_answer_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    tools: Any = [{**WEATHER, "name": name} for name in ("Bash", "Read", "TodoWrite", "Edit")]
    content: Any = [
        {
            "type": "text",
            "text": "<system-reminder>If useful, use the TodoWrite tool.</system-reminder>",
        },
        {"type": "text", "text": "what is 2+2?"},
    ]
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": "You are a coding agent."}],
        messages=[{"role": "user", "content": content}],
        tools=tools,
    )
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text.endswith("You said: what is 2+2?")


@pytest.mark.parametrize(
    ("choice", "name"),
    [({"type": "tool", "name": "second"}, "second"), ({"type": "any"}, "get_weather")],
)
async def test_tool_choice_forces_a_call(
    client: anthropic.AsyncAnthropic, choice: Any, name: str
) -> None:
    tools = [WEATHER, {**WEATHER, "name": "second"}]
    message = await client.messages.create(
        model=MODEL, max_tokens=100, messages=user("hello"), tools=tools, tool_choice=choice
    )
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use"
    assert message.content[0].name == name


async def test_tool_choice_none_answers_text(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=user("use the get_weather tool"),
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert message.stop_reason == "end_turn"


async def test_count_tokens_matches_billed_input(client: anthropic.AsyncAnthropic) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "system": "sys",
        "messages": user("count these words please"),
        "tools": [WEATHER],
    }
    counted = await client.messages.count_tokens(**request)
    message = await client.messages.create(**request, max_tokens=50)
    assert counted.input_tokens == message.usage.input_tokens
    assert counted.input_tokens > 10  # the tool definition counts


async def test_errors_in_anthropic_shape(
    alpha: MockProvider, client: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        await client.messages.create(model="nope", max_tokens=5, messages=user("x"))
    body: Any = not_found.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "nope" in body["error"]["message"]
    url = alpha.url + "/messages"
    async with aiohttp.ClientSession() as session:
        request = {"model": MODEL, "max_tokens": 5, "messages": user("x")}
        async with session.post(url, json=request) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
        for headers in ({"x-api-key": "k"}, {"Authorization": "Bearer k"}):
            async with session.post(url, json=request, headers=headers) as resp:
                assert resp.status == 200
        for bad in ({**request, "max_tokens": None}, {**request, "messages": []}, [1]):
            async with session.post(url, json=bad, headers={"x-api-key": "k"}) as resp:
                assert resp.status == 400
                error = await resp.json()
                assert error["type"] == "error"
                assert error["error"]["type"] == "invalid_request_error"
        async with session.get(url, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 405
            assert (await resp.json())["type"] == "error"


async def test_bearer_auth_through_the_sdk(alpha: MockProvider) -> None:
    root = alpha.url.removesuffix("/v1")
    async with anthropic.AsyncAnthropic(base_url=root, auth_token="tok", max_retries=0) as c:
        # Claude Code's route: the beta client, /v1/messages?beta=true.
        message = await c.beta.messages.create(model=MODEL, max_tokens=5, messages=user("x"))
    assert message.stop_reason == "max_tokens"
