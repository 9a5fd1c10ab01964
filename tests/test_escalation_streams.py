"""``escalate_streams = true`` through the real proxy: a tiered stream is buffered, judged,
and either re-asked one tier up or replayed to the client byte for byte."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai

from fake_upstream import Completion, FakeUpstream, Reply, Stream, completion_events
from harness import ProxyThread
from test_escalation_proxy import CHAT, MESSAGES, beta, chat, records, start

__all__ = ["beta"]  # (the fixture, shared)


def streamed(**rule: Any) -> dict[str, Any]:
    return {"escalate": True, "escalate_streams": True, **rule}


async def raw_stream(proxy: ProxyThread) -> tuple[dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=chat(stream=True)) as r:
        assert r.status == 200
        return dict(r.headers), await r.read()


def without_trailer(raw: bytes) -> tuple[bytes, int]:
    """The stream's events but arbstr's trailer (its ids and timings differ per request)."""
    events = raw.split(b"\n\n")
    kept = [e for e in events if b'"arbstr"' not in e]
    return b"\n\n".join(kept), len(events) - len(kept)


async def test_a_truncated_stream_is_re_asked_and_the_sdk_streams_the_better_answer(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, **streamed())
    fake_upstream.push(Completion("half an ans", finish_reason="length", completion_tokens=7))
    beta.push(Completion("the whole answer", completion_tokens=9))
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="arbstr/economy",
        messages=[{"role": "user", "content": "be careful"}],
        stream=True,
    )
    assert raw.headers["x-arbstr-escalated"] == "economy->standard (truncated)"
    assert raw.headers["x-arbstr-tier"] == "standard"
    text = ""
    async for c in raw.parse():
        if c.choices:
            text += c.choices[0].delta.content or ""
    assert text == "the whole answer"
    first, second = await records(proxy, 2)
    assert (first.tier, first.model, first.success, first.output_tokens) == (
        "economy",
        "tiny",
        True,
        7,
    )
    assert first.error_message == "escalated: truncated" and first.escalated_from is None
    assert first.cost_msats is not None and first.cost_msats > 0
    assert second.request_id == raw.headers["x-arbstr-request-id"] != first.request_id
    assert second.escalated_from == first.request_id and second.escalation == "truncated"
    assert (second.tier, second.model, second.success) == ("standard", "mid", True)
    assert second.cost_msats is not None and second.cost_msats > first.cost_msats
    assert second.streaming and first.streaming


async def test_a_good_buffered_stream_is_replayed_byte_for_byte(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    buffered = start(proxies, fake_upstream, beta, **streamed())
    plain = start(proxies, fake_upstream, beta, escalate=True)
    fake_upstream.push(Completion("all good here", completion_tokens=3))
    h1, got = await raw_stream(buffered)
    fake_upstream.push(Completion("all good here", completion_tokens=3))
    _, want = await raw_stream(plain)
    assert "x-arbstr-escalated" not in h1 and beta.requests == []
    assert without_trailer(got) == without_trailer(want)
    assert without_trailer(got)[1] == 1 and got.endswith(b"data: [DONE]\n\n")
    (row,) = await records(buffered, 1)
    assert row.success and row.error_message is None and row.cost_msats


async def test_a_failed_re_ask_leaves_the_buffered_stream(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, **streamed())
    fake_upstream.push(Completion("half", finish_reason="length", completion_tokens=7))
    beta.push(Reply(status=500, json={"error": {"message": "down"}}))
    headers, raw = await raw_stream(proxy)
    assert "x-arbstr-escalated" not in headers and b"half" in raw and b"[DONE]" in raw
    first, second = await records(proxy, 2)
    rows = {r.request_id: r for r in (first, second)}
    econ = rows[headers["x-arbstr-request-id"]]
    reask = next(r for r in rows.values() if r is not econ)
    assert econ.success and econ.error_message == "escalated: truncated"
    assert not reask.success and reask.escalated_from == econ.request_id


async def test_a_broken_stream_is_replayed_as_it_broke_not_judged(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    buffered = start(proxies, fake_upstream, beta, **streamed())
    # (a stream without [DONE] is a provider failure, not an answer to judge)
    events = completion_events("cut", model="tiny", done=False)
    fake_upstream.push(Stream(events=events))
    _, raw = await raw_stream(buffered)
    assert b"stream_interrupted" in raw and beta.requests == []


def event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def messages_stream(text: str, stop: str, model: str) -> Stream:
    return Stream(
        events=[
            event(
                "message_start",
                message={
                    "id": "m",
                    "model": model,
                    "usage": {"input_tokens": 5, "output_tokens": 1},
                },
            ),
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": text}),
            event("content_block_stop", index=0),
            event("message_delta", delta={"stop_reason": stop}, usage={"output_tokens": 3}),
            event("message_stop"),
        ]
    )


async def test_a_refused_messages_stream_escalates(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, **streamed())
    fake_upstream.push(messages_stream("", "refusal", "tiny"))
    beta.push(messages_stream("sure", "end_turn", "mid"))
    body = {
        "model": "arbstr/economy",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "careful now"}],
    }
    async with aiohttp.ClientSession() as s, s.post(proxy.url + MESSAGES, json=body) as r:
        assert r.status == 200
        headers, raw = r.headers.copy(), await r.read()
    assert headers["x-arbstr-escalated"] == "economy->standard (refusal)"
    assert b'"sure"' in raw and b"message_stop" in raw
    first, second = await records(proxy, 2)
    assert first.error_message == "escalated: refusal" and second.escalation == "refusal"
