"""The mock's embeddings, legacy completions and chat tool calls through the openai SDK."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from arbstr.mock import DEFAULT_MOCKS, MockProvider

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "metric": {"type": "boolean"}},
            "required": ["city", "metric"],
        },
    },
}


@pytest.fixture
async def alpha() -> AsyncIterator[MockProvider]:
    async with MockProvider(DEFAULT_MOCKS[0]) as provider:
        yield provider


@pytest.fixture
async def client(alpha: MockProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=alpha.url, api_key="sk-test", max_retries=0) as c:
        yield c


async def test_embeddings_deterministic_unit_vectors(
    alpha: MockProvider, client: openai.AsyncOpenAI
) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it.
    first = await client.embeddings.create(model="gpt-4o", input=["alpha text", "beta"])
    floats = await client.embeddings.create(
        model="gpt-4o", input=["alpha text", "beta"], encoding_format="float"
    )
    again = await client.embeddings.create(model="gpt-4o", input="alpha text")
    assert [d.index for d in first.data] == [0, 1]
    a, b = (d.embedding for d in first.data)
    assert len(a) == 16
    assert a != b
    assert math.fsum(x * x for x in a) == pytest.approx(1.0, abs=1e-5)
    assert floats.data[0].embedding == a
    assert again.data[0].embedding == floats.data[0].embedding
    assert first.usage.prompt_tokens == 3 + 1
    assert first.usage.total_tokens == first.usage.prompt_tokens
    cost = first.usage.model_dump()["cost"]["total_msats"]
    assert cost == round(4 * alpha.spec.input_rate + alpha.spec.base_fee * 1000)
    wide = await client.embeddings.create(model="gpt-4o", input=[1, 2, 3], dimensions=40)
    assert len(wide.data[0].embedding) == 40
    assert wide.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "gpt-4o"},
        {"model": "gpt-4o", "input": []},
        {"model": "gpt-4o", "input": "x", "encoding_format": "hex"},
        {"model": "gpt-4o", "input": "x", "dimensions": 0},
    ],
)
async def test_embeddings_bad_request(alpha: MockProvider, bad: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            alpha.url + "/embeddings", json=bad, headers={"Authorization": "Bearer k"}
        ) as resp,
    ):
        assert resp.status == 400
        assert set((await resp.json())["error"]) == {"message", "type", "code"}


async def test_completions_json_and_stream(alpha: MockProvider, client: openai.AsyncOpenAI) -> None:
    plain = await client.completions.create(model="gpt-4o-mini", prompt="Once upon a time")
    assert plain.object == "text_completion"
    assert plain.id.startswith("cmpl-")
    [choice] = plain.choices
    assert choice.text == "Hello from mock-alpha (gpt-4o-mini)! You said: Once upon a time"
    assert choice.finish_reason == "stop"
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == 4
    assert plain.usage.completion_tokens == len(choice.text.split())

    stream = await client.completions.create(
        model="gpt-4o-mini",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    short = await client.completions.create(model="gpt-4o-mini", prompt="x", max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].text == "Hello from "


async def test_completions_stream_ends_with_done(alpha: MockProvider) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            alpha.url + "/completions",
            json={"model": "gpt-4o", "prompt": ["a", "b"], "stream": True},
            headers={"Authorization": "Bearer k"},
        ) as resp,
    ):
        raw = await resp.read()
    assert int(resp.headers["X-Routstr-Cost-Msats"]) > 0
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in raw


async def test_chat_tool_call_when_asked_then_text(client: openai.AsyncOpenAI) -> None:
    ask: list[Any] = [{"role": "user", "content": "Use the get_weather tool for Rome"}]
    completion = await client.chat.completions.create(model="gpt-4o", messages=ask, tools=[WEATHER])
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "metric": True}

    async with client.chat.completions.stream(
        model="gpt-4o", messages=ask, tools=[WEATHER], stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert streamed.message.tool_calls is not None
    assert streamed.message.tool_calls[0].function.arguments == call.function.arguments
    assert final.usage is not None
    assert completion.usage is not None
    assert final.usage.completion_tokens == completion.usage.completion_tokens

    follow_up: list[Any] = [
        *ask,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hot"},
    ]
    answer = await client.chat.completions.create(
        model="gpt-4o", messages=follow_up, tools=[WEATHER]
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "Hello from mock-alpha (gpt-4o)! The tool said: hot"


async def test_chat_tools_offered_but_not_asked(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER]
    )
    assert completion.choices[0].finish_reason == "stop"
    forced = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    with_tools = completion.usage
    plain = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert with_tools is not None
    assert plain.usage is not None
    assert with_tools.prompt_tokens > plain.usage.prompt_tokens  # tool definitions count
