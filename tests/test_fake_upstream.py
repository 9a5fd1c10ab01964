"""Tests for the scripted fake upstream used by the proxy's tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
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

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY = {**BODY, "stream": True}
USAGE_BODY = {**STREAM_BODY, "stream_options": {"include_usage": True}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def chat_url(up: FakeUpstream) -> str:
    return up.url + "/chat/completions"


async def read_chunks(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Everything the body delivered, and the error that ended it (if any)."""
    data = b""
    try:
        async for piece in resp.content.iter_any():
            data += piece
    except aiohttp.ClientError as exc:
        return data, exc
    return data, None


def split_events(raw: bytes) -> list[Any]:
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for event in raw[:-2].split(b"\n\n"):
        assert event.startswith(b"data: ")
        payload = event[len(b"data: ") :]
        out.append(payload.decode() if payload == b"[DONE]" else msgspec.json.decode(payload))
    return out


async def test_default_completion_json_and_recording(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    up = fake_upstream
    assert up.url.startswith("http://127.0.0.1:")
    async with session.post(
        chat_url(up), json=BODY, headers={"Authorization": "Bearer sk-x", "X-Request-Id": "r1"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "r1"
        body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"]["content"] == "Hello world"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}

    [rec] = up.requests
    assert rec is up.last_request
    assert up.chat_requests == [rec]
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == "Bearer sk-x"
    assert rec.headers["x-request-id"] == "r1"
    assert rec.json == BODY
    assert msgspec.json.decode(rec.body) == BODY
    assert not rec.stream
    assert isinstance(rec.action, Completion)
    assert rec.disconnected_at is None
    assert rec.peer is not None


async def test_default_completion_streams(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = split_events(await resp.read())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert words == ["Hello ", "world"]
    assert fake_upstream.last_request.stream
    assert not fake_upstream.last_request.include_usage

    async with session.post(chat_url(fake_upstream), json=USAGE_BODY) as resp:
        events = split_events(await resp.read())
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 10
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert fake_upstream.last_request.include_usage


async def test_completion_with_cost_and_options(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    action = Completion(
        "one two three",
        prompt_tokens=7,
        completion_tokens=3,
        usage_cost_msats=4200,
        headers={"X-Extra": "1"},
        model="served-model",
        finish_reason="length",
    )
    fake_upstream.push(action, action)
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert resp.headers["X-Routstr-Cost-Msats"] == "4200"
        assert resp.headers["X-Extra"] == "1"
        body = await resp.json()
    assert body["model"] == "served-model"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["cost"] == {"total_msats": 4200}
    assert body["usage"]["cost_sats"] == pytest.approx(4.2)

    async with session.post(chat_url(fake_upstream), json=USAGE_BODY) as resp:
        assert resp.headers["X-Routstr-Cost-Msats"] == "4200"
        events = split_events(await resp.read())
    assert "".join(c["choices"][0]["delta"]["content"] for c in events[1:-3]) == "one two three"
    assert events[-2]["usage"]["cost"] == {"total_msats": 4200}


async def test_queue_order_then_default(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    error = {"error": {"message": "busy", "type": "server_error", "code": None}}
    fake_upstream.push(
        Reply(status=503, json=error, headers={"Retry-After": "1"}),
        Reply(status=200, body=b"raw bytes", headers={"Content-Type": "text/plain"}),
    )
    assert fake_upstream.pending == 2
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.json() == error
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert resp.status == 200
        assert await resp.read() == b"raw bytes"
    assert fake_upstream.pending == 0
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert (await resp.json())["object"] == "chat.completion"

    fake_upstream.default = Reply(status=500, json=error)
    for _ in range(2):
        async with session.post(chat_url(fake_upstream), json=BODY) as resp:
            assert resp.status == 500
    assert len(fake_upstream.chat_requests) == 5
    # One keep-alive connection served everything.
    assert fake_upstream.connection_count == 1


async def test_reply_delay(fake_upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake_upstream.push(Reply(json={"ok": True}, delay_s=0.1))
    start = time.monotonic()
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert await resp.json() == {"ok": True}
    assert time.monotonic() - start >= 0.1


async def test_stream_writes_raw_bytes_exactly(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    events = [
        b": keep-alive comment\r\n\r\n",
        b'data: {"choices":[{"delta":{"content":"Hel',
        b'lo"}}]}\r\n\r\n',
        DONE,
    ]
    fake_upstream.push(Stream(events, chunk_delay_s=0.01, headers={"X-Up": "yes"}))
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        assert resp.status == 200
        assert resp.headers["X-Up"] == "yes"
        data, error = await read_chunks(resp)
    assert error is None
    assert data == b"".join(events)


async def test_stream_status_and_first_byte_delay(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake_upstream.push(Stream([sse({"x": 1})], first_byte_delay_s=0.1, status=201))
    start = time.monotonic()
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        headers_at = time.monotonic() - start
        assert resp.status == 201
        data = await resp.read()
        body_at = time.monotonic() - start
    assert headers_at < 0.1 <= body_at
    assert data == b'data: {"x":1}\n\n'


async def test_stream_then_reset(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    events = completion_events("a b c", done=False)[:3]
    fake_upstream.push(Stream(events, then_reset=True))
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        data, error = await read_chunks(resp)
    assert data == b"".join(events)
    assert error is not None
    assert fake_upstream.last_request.disconnected_at is None  # the server reset, not the client


async def test_reset_mid_body(fake_upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake_upstream.push(Reset(after_bytes=b'{"id": "chatcmpl-1", "obj', content_length=1000))
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert resp.status == 200
        data, error = await read_chunks(resp)
    assert data == b'{"id": "chatcmpl-1", "obj'
    assert error is not None

    fake_upstream.push(Reset(after_bytes=sse(chunk("Hi", role="assistant"))))
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        data, error = await read_chunks(resp)
    assert data.startswith(b"data: ")
    assert error is not None


async def test_reset_before_headers(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake_upstream.push(Reset(send_headers=False))
    with pytest.raises(aiohttp.ClientError):
        async with session.post(chat_url(fake_upstream), json=BODY) as resp:
            await resp.read()
    # The server is still fine afterwards.
    async with session.post(chat_url(fake_upstream), json=BODY) as resp:
        assert resp.status == 200


async def test_hang_until_client_disconnects(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake_upstream.push(Hang())
    request = asyncio.ensure_future(session.post(chat_url(fake_upstream), json=BODY))
    await fake_upstream.wait_for_requests(1)
    assert fake_upstream.in_flight == 1
    await asyncio.sleep(0.05)
    assert not request.done()
    assert not fake_upstream.disconnected.is_set()

    gone_at = time.monotonic()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    noticed_at = await fake_upstream.wait_disconnect(timeout_s=1.0)
    assert fake_upstream.disconnected.is_set()
    assert 0 <= noticed_at - gone_at < 0.2
    assert fake_upstream.last_request.disconnected_at == noticed_at
    await fake_upstream.wait_idle()


async def test_hang_with_client_timeout(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake_upstream.push(Hang())
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            chat_url(fake_upstream), json=BODY, timeout=aiohttp.ClientTimeout(total=0.1)
        ):
            pass
    await fake_upstream.wait_disconnect(timeout_s=1.0)


async def test_client_disconnect_mid_stream_is_seen_at_once(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake_upstream.push(Stream([sse(chunk("tick"))] * 100, chunk_delay_s=0.02, then_hang=True))
    async with session.post(chat_url(fake_upstream), json=STREAM_BODY) as resp:
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        resp.close()  # drop the connection mid-stream
        gone_at = time.monotonic()
    noticed_at = await fake_upstream.wait_disconnect(timeout_s=1.0)
    assert noticed_at - gone_at < 0.2
    await fake_upstream.wait_idle()


async def test_models_route(fake_upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.get(fake_upstream.url + "/models") as resp:
        body = await resp.json()
    assert [m["id"] for m in body["data"]] == ["gpt-4o", "gpt-4o-mini"]
    fake_upstream.models_reply = Reply(json={"data": [{"id": "x", "sats_pricing": {}}]})
    async with session.get(fake_upstream.url + "/models") as resp:
        assert (await resp.json())["data"][0]["id"] == "x"
    async with session.get(fake_upstream.url + "/other") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    assert fake_upstream.chat_requests == []
    assert [r.path for r in fake_upstream.requests] == ["/v1/models", "/v1/models", "/v1/other"]


async def test_non_json_body_is_recorded(
    fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    async with session.post(chat_url(fake_upstream), data=b"not json") as resp:
        assert resp.status == 200
    rec = fake_upstream.last_request
    assert rec.body == b"not json"
    assert rec.json is None


async def test_closed_port_url_refuses(session: aiohttp.ClientSession) -> None:
    url = closed_port_url()
    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(aiohttp.ClientConnectorError):
        async with session.post(url + "/chat/completions", json=BODY):
            pass


async def test_close_with_hanging_request_is_fast_and_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    up = FakeUpstream(Hang(), default=Hang())
    await up.start()
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(chat_url(up), json=BODY))
        await up.wait_for_requests(1)
        start = time.monotonic()
        await up.close()
        assert time.monotonic() - start < 0.5
        with pytest.raises(aiohttp.ClientError):
            await request
    assert up.disconnect_times == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_wait_helpers_time_out(fake_upstream: FakeUpstream) -> None:
    with pytest.raises(TimeoutError):
        await fake_upstream.wait_for_requests(1, timeout_s=0.05)
    with pytest.raises(TimeoutError):
        await fake_upstream.wait_disconnect(timeout_s=0.05)
    with pytest.raises(AssertionError):
        _ = fake_upstream.last_request
