"""Body parts written straight to the client's socket (``body_writer``), the stream relay's
fast path: only for a started chunked response on uvicorn's httptools server, framed as
``send`` frames them, backing off to ``send`` when the client stops reading; and the relay
gives the same bytes either way."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn

from arbstr.server.delivery import TrackedSend
from arbstr.server.http import Message, Receive, Scope, Send, body_writer
from arbstr.upstream.connection import Connection
from fake_upstream import DONE, FakeUpstream, Stream, chunk, sse
from harness import ProxyThread, make_config, provider

App = Callable[[Scope, Receive, Send], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serve(app: App, http: str) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    cfg = uvicorn.Config(app, http=http, loop="none", lifespan="off", log_config=None)
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):  # uvicorn has no "started" event
        if server.started:
            break
        await asyncio.sleep(0.005)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _get(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return reader, writer


async def _body(reader: asyncio.StreamReader) -> bytes:
    """The de-chunked body of one response."""
    await reader.readuntil(b"\r\n\r\n")
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        parts.append((await reader.readexactly(size + 2))[:-2])
    await reader.readexactly(2)
    return b"".join(parts)


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_only_a_started_chunked_httptools_response_is_written_directly(http: str) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["before start"] = body_writer(send)
        tracked = TrackedSend(send)
        await tracked({"type": "http.response.start", "status": 200, "headers": []})
        write = seen["writer"] = body_writer(tracked)
        if write is None:
            await tracked({"type": "http.response.body", "body": b"one two", "more_body": True})
        else:
            assert write(b"one ") and write(b"") and write(b"two")  # (empty: skipped)
        await tracked({"type": "http.response.body", "body": b"!", "more_body": False})

    async with _serve(app, http) as port:
        reader, writer = await _get(port)
        assert await _body(reader) == b"one two!"
        writer.close()
    assert seen["before start"] is None
    assert (seen["writer"] is not None) == (http == "httptools")  # h11 frames bodies itself


async def test_a_plain_send_gets_no_writer() -> None:
    async def send(message: Message) -> None:
        pass

    assert body_writer(send) is None


async def test_a_client_that_stops_reading_turns_the_writer_back_to_send() -> None:
    """The writer says so once the socket's buffer is full; ``send`` then waits for the
    client, so a stalled client cannot make the proxy buffer a whole stream."""
    part = b"x" * 65536
    result: dict[str, int] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        write = body_writer(send)
        assert write is not None
        n = 1
        while write(part):
            n += 1
            assert n < 1000, "the writer never backed off"
        result["direct"] = n
        for _ in range(5):  # through send, which waits until the client reads
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with _serve(app, "httptools") as port:
        reader, writer = await _get(port)
        await asyncio.sleep(0.3)  # not reading: the server's buffers fill
        assert "direct" in result
        body = await _body(reader)
        assert body == part * (result["direct"] + 5)
        writer.close()


async def test_a_relayed_stream_is_pumped_and_the_same_as_through_send(
    fake_upstream: FakeUpstream,
    proxies: list[ProxyThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through uvicorn's httptools server the relay reads a 200-chunk stream without awaiting
    each chunk; on h11 it awaits every one; the client gets the same events both ways."""
    reads = [0]
    next_body = Connection.next_body

    def counted(self: Connection) -> Any:
        reads[0] += 1
        return next_body(self)

    monkeypatch.setattr(Connection, "next_body", counted)
    events = [sse(chunk(f"w{i} ")) for i in range(200)] + [DONE]
    data = {"providers": [provider("p", fake_upstream.url, models=["gpt-4o"])]}
    got: dict[str, list[bytes]] = {}
    counts: dict[str, int] = {}
    for http in ("httptools", "h11"):
        proxy = ProxyThread(make_config(data), http=http).start()
        proxies.append(proxy)
        fake_upstream.push(Stream(events, chunk_delay_s=0.0005))
        reads[0] = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        body = (
            b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
        )
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        text = await _body(reader)
        writer.close()
        got[http] = [e for e in text.split(b"\n\n") if e and b'"arbstr"' not in e]
        counts[http] = reads[0]
        assert proxy.records[-1].success
    assert got["httptools"] == got["h11"]
    assert len(got["h11"]) == 201  # every chunk and [DONE], the trailer left out
    assert counts["httptools"] < 10  # (the first chunk, the rest after [DONE])
    assert counts["h11"] > 50
