"""The mock's OpenAI Responses API through the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import openai
import pytest

from arbstr.mock import DEFAULT_MOCKS, MockProvider

MODEL = "gpt-4o"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": ["integer", "null"]}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
async def alpha() -> AsyncIterator[MockProvider]:
    async with MockProvider(DEFAULT_MOCKS[0]) as provider:
        yield provider


@pytest.fixture
async def client(alpha: MockProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=alpha.url, api_key="sk-test", max_retries=0) as c:
        yield c


async def test_json_response_text_usage_and_cost(
    alpha: MockProvider, client: openai.AsyncOpenAI
) -> None:
    raw = await client.responses.with_raw_response.create(
        model=MODEL, input="tell me a joke", instructions="Be funny."
    )
    response = raw.parse()
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == MODEL
    assert response.instructions == "Be funny."
    assert response.output_text == "Hello from mock-alpha (gpt-4o)! You said: tell me a joke"
    [item] = response.output
    assert item.type == "message"
    assert item.role == "assistant"
    assert item.content[0].type == "output_text"
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == -(-len("Be funny.tell me a joke") // 4) + 3
    assert usage.output_tokens == len(response.output_text.split())
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    spec = alpha.spec
    cost = (
        usage.input_tokens * spec.input_rate + usage.output_tokens * spec.output_rate
    ) / 1000 + spec.base_fee
    extra = usage.model_dump()
    assert extra["cost"]["total_msats"] == round(cost * 1000)
    assert extra["cost_sats"] == extra["cost"]["total_msats"] / 1000
    assert raw.headers["X-Routstr-Cost-Msats"] == str(extra["cost"]["total_msats"])


async def test_stream_event_sequence(client: openai.AsyncOpenAI) -> None:
    plain = await client.responses.create(model=MODEL, input="stream me")
    stream = await client.responses.create(model=MODEL, input="stream me", stream=True)
    events = [e async for e in stream]
    assert plain.usage is not None
    n = plain.usage.output_tokens
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == plain.output_text
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == plain.output_text
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == n
    assert done.response.usage.model_dump()["cost"]["total_msats"] > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


async def test_raw_sse_has_event_names(alpha: MockProvider) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            alpha.url + "/responses",
            json={"model": MODEL, "input": "x", "stream": True},
            headers={"Authorization": "Bearer k"},
        ) as resp,
    ):
        raw = await resp.read()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    for block in raw.strip().split(b"\n\n"):
        name, data = block.split(b"\n")
        event = msgspec.json.decode(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        assert isinstance(event["sequence_number"], int)


async def test_stream_helper_final_response(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model=MODEL, input="helper") as stream:
        texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(texts) == final.output_text
    assert final.output_text.endswith("You said: helper")
    assert final.usage is not None
    assert final.usage.output_tokens == len(texts)


async def test_function_call_when_asked_then_text_after_output(
    client: openai.AsyncOpenAI,
) -> None:
    ask: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "use the get_weather tool"}]}
    ]
    response = await client.responses.create(model=MODEL, input=ask, tools=[WEATHER])
    [call] = response.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "mock", "days": 1}

    async with client.responses.stream(model=MODEL, input=ask, tools=[WEATHER]) as stream:
        types = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    [streamed] = final.output
    assert streamed.type == "function_call"
    assert streamed.arguments == call.arguments
    assert final.usage is not None
    assert response.usage is not None
    assert final.usage.output_tokens == response.usage.output_tokens

    follow_up: list[Any] = [
        *ask,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
    ]
    answer = await client.responses.create(model=MODEL, input=follow_up, tools=[WEATHER])
    assert answer.output_text.endswith("The tool said: rainy")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
async def test_tool_choice_forces_a_call(client: openai.AsyncOpenAI, choice: Any) -> None:
    response = await client.responses.create(
        model=MODEL,
        input="hello",
        tools=[WEATHER],
        tool_choice=choice,
    )
    assert response.output[0].type == "function_call"


async def test_max_output_tokens_incomplete(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="x", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello from "
    stream = await client.responses.create(model=MODEL, input="x", max_output_tokens=2, stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens == 2


async def test_codex_like_request(client: openai.AsyncOpenAI) -> None:
    """The shape Codex CLI sends: developer and user items, reasoning, many tool kinds."""
    body: dict[str, Any] = {
        "model": MODEL,
        "instructions": "You are Codex.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "d"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "summary": [], "encrypted_content": None},
        ],
        "tools": [
            {**WEATHER, "name": "shell"},
            {"type": "custom", "name": "apply_patch", "format": {"type": "text"}},
            {"type": "web_search"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "abc",
    }
    stream = await client.responses.create(**body)
    events = [e async for e in stream]
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text.endswith("You said: hi")
    assert done.response.parallel_tool_calls is False
    items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in items] == ["message"]


async def test_errors(alpha: MockProvider, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="x")
    for bad in ({"model": MODEL}, {"model": MODEL, "input": []}, {"input": "x"}):
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(**bad)
        assert exc.value.code is not None
    async with (
        aiohttp.ClientSession() as session,
        session.post(alpha.url + "/responses", json={"model": MODEL, "input": "x"}) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
