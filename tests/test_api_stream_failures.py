"""A stream that breaks mid-way, through the proxy, on the Anthropic Messages and Responses
routes: the client's own SDK raises on what arbstr sends, and the row is a failure with
the partial usage known so far."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from fake_upstream import FakeUpstream, Stream
from harness import ProxyThread, make_config, provider


def event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


MESSAGE_START = event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3.5-sonnet",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    },
)
BLOCK_START = event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
DELTA = event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
)
RESPONSE_CREATED = event(
    "response.created",
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": {
            "id": "resp_1",
            "object": "response",
            "created_at": 1700000000,
            "model": "gpt-4o",
            "status": "in_progress",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        },
    },
)
TEXT_DELTA = event(
    "response.output_text.delta",
    {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hel",
        "logprobs": [],
    },
)


def start(proxies: list[ProxyThread], upstream: FakeUpstream, model: str) -> ProxyThread:
    data = {"providers": [provider("p", upstream.url, models=[model])]}
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    return proxy


async def test_a_broken_messages_stream_raises_in_the_anthropic_sdk(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, "claude-3.5-sonnet")
    fake_upstream.push(Stream([MESSAGE_START, BLOCK_START, DELTA], then_reset=True))
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="x", max_retries=0)
    got: list[str] = []

    async def read_all() -> None:
        async with client.messages.stream(
            model="claude-3.5-sonnet",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            async for text in stream.text_stream:
                got.append(text)

    with pytest.raises(anthropic.APIStatusError) as failed:
        await read_all()
    assert got == ["Hel"]  # what came before the break reached the client at once
    assert "stream" in str(failed.value.body)
    [row] = proxy.records
    assert row.api == "messages" and row.streaming and not row.success
    assert row.input_tokens == 12  # message_start's usage, known before the break
    assert row.cost_msats is None and row.possibly_billed_msats  # the node may bill it all


async def test_a_broken_responses_stream_raises_in_the_openai_sdk(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, "gpt-4o")
    fake_upstream.push(Stream([RESPONSE_CREATED, TEXT_DELTA], then_reset=True))
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
    seen: list[str] = []

    async def read_all() -> None:
        stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        async for ev in stream:
            seen.append(ev.type)

    with pytest.raises(openai.APIError):
        await read_all()
    assert seen == ["response.created", "response.output_text.delta"]
    [row] = proxy.records
    assert row.api == "responses" and row.streaming and not row.success
    assert row.error_status == 502
