"""The pipeline's generic stream path and its hooks, with a test-only Anthropic-like Api:
events forwarded byte for byte and read by the API's reader, the API's error event on a cut
stream, ``x-api-key`` auth, forwarded headers, and serving through a translator (chat)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import ApiRequest, Translator
from arbstr.apis.chat import CHAT
from arbstr.apis.registry import APIS
from arbstr.upstream.usage import Usage
from fake_upstream import DONE, Completion, FakeUpstream, Stream, chunk, sse
from harness import ProxyThread, make_config, provider

_dec = msgspec.json.Decoder().decode
_enc = msgspec.json.Encoder().encode


class EventsReader:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.upstream_error: str | None = None
        self.content_events = 0

    def read(self, event: bytes | None, data: bytes) -> None:
        obj = _dec(data)
        if event == b"delta":
            self.content_events += 1
        elif event == b"usage":
            self.usage = Usage(obj["in"], obj["out"])
        elif event == b"stop":
            self.done = True


class ToChat:
    """Translates the fake API to chat and back (what apis/translate does for messages)."""

    def translate_request(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        obj = _dec(body)
        chat: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": obj["q"]}]}
        if req.stream:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        return _enc(chat)

    def translate_reply(self, body: bytes, model: str) -> bytes:
        return _enc({"a": _dec(body)["choices"][0]["message"]["content"]})

    def stream_translator(self, model: str) -> StreamOut:
        return StreamOut()


class StreamOut:
    def feed(self, event: bytes | None, data: bytes) -> bytes:
        if data == b"[DONE]":
            return b""
        choices = _dec(data).get("choices") or []
        text = choices[0]["delta"].get("content") if choices else None
        return b"event: delta\ndata: " + _enc({"t": text}) + b"\n\n" if text else b""

    def finish(self) -> bytes:
        return b"event: stop\ndata: {}\n\n"


class FakeEventsApi:
    name: ApiName = "messages"
    path = "/v1/fake"
    upstream_path = "/messages"
    accepts_x_api_key = True
    forward_headers: tuple[str, ...] = ("Anthropic-Version",)
    translated_via: ApiName | None = "chat"
    translator: Translator | None = ToChat()

    def parse(self, body: bytes) -> ApiRequest:
        obj = _dec(body)
        return ApiRequest(
            "messages", obj["model"], bool(obj.get("stream")), len(obj["q"]), obj["q"], None
        )

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return body

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        u = _dec(body)["u"]
        return Usage(u["in"], u["out"])

    def stream_reader(self, provider: str, request_id: str) -> EventsReader:
        return EventsReader()

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return _enc({"type": "error", "error": {"type": f"fake_{status}", "message": message}})

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        return b"event: error\ndata: " + _enc({"type": "error", "message": message}) + b"\n\n"


def start(proxies: list[ProxyThread], url: str, **kw: Any) -> ProxyThread:
    data: dict[str, Any] = {
        "providers": [provider("alpha", url, models=["m"], **kw)],
        "server": {"auth_token": "tok-0123456789"},
    }
    p = ProxyThread(make_config(data), apis=(*APIS, FakeEventsApi())).start()
    proxies.append(p)
    return p


async def post(p: ProxyThread, body: Any, **headers: str) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            p.url + "/v1/fake", json=body, headers={"x-api-key": "tok-0123456789", **headers}
        ) as r,
    ):
        return r.status, r.headers, await r.read()


async def rows(p: ProxyThread) -> list[Any]:
    for _ in range(500):
        if p.records:
            return p.records
        await asyncio.sleep(0.01)
    raise AssertionError("no row")


EVENTS = [
    b'event: delta\ndata: {"t":"hi"}\n\n',
    b'event: usage\ndata: {"in":3,"out":2}\n\n',
    b"event: stop\ndata: {}\n\n",
]


async def test_native_stream_forwarded_byte_for_byte(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, fake_upstream.url, input_rate=10, output_rate=30)
    fake_upstream.push(Stream(EVENTS))
    status, headers, raw = await post(
        p, {"model": "m", "q": "hello", "stream": True}, **{"anthropic-version": "2023-06-01"}
    )
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"
    assert raw == b"".join(EVENTS)
    (req,) = fake_upstream.api_requests("/messages")
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "tok-0123456789" not in json.dumps(req.headers)
    (rec,) = await rows(p)
    assert rec.api == "messages" and rec.success and rec.streaming
    assert (rec.input_tokens, rec.output_tokens, rec.cost_msats) == (3, 2, 90)


async def test_native_stream_cut_ends_with_the_apis_error_event(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream([EVENTS[0], b'event: delta\ndata: {"t"'], then_reset=True))
    status, _, raw = await post(p, {"model": "m", "q": "x", "stream": True})
    assert status == 200
    assert raw.startswith(EVENTS[0]) and b"event: error\n" in raw
    assert b'{"t"' not in raw[len(EVENTS[0]) :]  # the half event is not forwarded
    (rec,) = await rows(p)
    assert not rec.success and rec.error_status == 502


async def test_errors_in_the_apis_shape(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, fake_upstream.url)
    status, headers, raw = await post(p, {"model": "m", "q": "x"}, **{"x-api-key": "wrong"})
    assert status == 401 and "x-arbstr-request-id" in headers
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "fake_401", "message": json.loads(raw)["error"]["message"]},
    }


async def test_served_through_the_translator(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    p = start(proxies, fake_upstream.url, apis=["chat"], input_rate=10, output_rate=30)
    fake_upstream.push(Completion("yes", prompt_tokens=4, completion_tokens=1))
    status, _, raw = await post(p, {"model": "m", "q": "ok?"})
    assert status == 200 and json.loads(raw) == {"a": "yes"}
    fake_upstream.push(
        Stream(
            [
                sse(chunk("a")),
                sse(chunk(" b")),
                sse(chunk(usage={"prompt_tokens": 2, "completion_tokens": 2})),
                DONE,
            ]
        )
    )
    status, _, raw = await post(p, {"model": "m", "q": "ok?", "stream": True})
    assert raw == (
        b'event: delta\ndata: {"t":"a"}\n\n'
        b'event: delta\ndata: {"t":" b"}\n\n'
        b"event: stop\ndata: {}\n\n"
    )
    chats = fake_upstream.chat_requests
    assert [r.json["messages"][0]["content"] for r in chats] == ["ok?", "ok?"]
    assert fake_upstream.api_requests("/messages") == []
    await asyncio.sleep(0.05)
    first, second = p.records
    assert (first.api, first.cost_msats) == ("messages", 70)
    assert second.success and (second.input_tokens, second.output_tokens) == (2, 2)
    assert CHAT.upstream_path == "/chat/completions"
