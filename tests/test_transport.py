"""The hot-path HTTP/1.1 client against raw loopback servers: body framings, keep-alive,
broken answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from arbstr.upstream.connection import Response
from arbstr.upstream.protocol import ConnectFailed, ResponseBroken, Target
from arbstr.upstream.transport import Transport


@dataclass
class Script:
    answers: list[bytes] = field(default_factory=list)  # raw responses, one per request
    seen: list[bytes] = field(default_factory=list)  # the raw requests received
    hang: bool = False  # keep the connection open after the last answer


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, asyncio.Server]]:
    """Answers each request with the next scripted raw response; records the requests."""
    script = Script()
    answers, seen = script.answers, script.seen

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                seen.append(await _read_request(reader))
                writer.write(answers.pop(0))
                await writer.drain()
            if script.hang:
                await reader.read()  # keep the connection open until the client leaves
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield script, srv
    srv.close()


async def chunks(r: Response, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """A streamed body as it arrives, the way the chat path reads one."""
    r.stream_timeouts(idle_timeout_s)
    while (chunk := await r.next_chunk()) is not None:
        yield chunk


def target(srv: asyncio.Server) -> Target:
    port = srv.sockets[0].getsockname()[1]
    return Target.for_url(f"http://127.0.0.1:{port}/v1/chat/completions", {"X-A": "b"})


async def test_content_length_and_chunked_bodies_on_one_connection(
    server: tuple[Script, asyncio.Server],
) -> None:
    script, srv = server
    answers, seen = script.answers, script.seen
    answers += [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Routstr-Cost-Msats: 7\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    ]
    t = Transport()
    r1 = await t.post(target(srv), b"{}", b"X-Request-Id: 1\r\n", 5, 5)
    assert r1.status == 200 and r1.headers["x-routstr-cost-msats"] == "7"
    assert await r1.read() == b"hello"
    r2 = await t.post(target(srv), b"[1]", b"", 5, 5)
    assert b"".join([c async for c in chunks(r2, 5)]) == b"abcde"
    r2.close()
    assert len(seen) == 2
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-A: b\r\nX-Request-Id: 1\r\nContent-Length: 2\r\n\r\n{}" in seen[0]
    t.close()


async def test_body_delimited_by_connection_close(
    server: tuple[Script, asyncio.Server],
) -> None:
    script, srv = server
    answers = script.answers
    answers.append(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    t = Transport()
    r = await t.post(target(srv), b"{}", b"", 5, 5)
    assert await r.read() == b"until the end"
    t.close()


async def test_cut_body_and_garbage_are_response_broken(
    server: tuple[Script, asyncio.Server],
) -> None:
    script, srv = server
    answers = script.answers
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    t = Transport()
    r = await t.post(target(srv), b"{}", b"", 5, 5)
    with pytest.raises(ResponseBroken, match="mid-body"):
        await r.read()
    answers.append(b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(ResponseBroken):
        await t.post(target(srv), b"{}", b"", 5, 5)
    t.close()


async def test_connect_refused_is_connect_failed() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    tgt = target(srv)
    srv.close()
    await srv.wait_closed()
    with pytest.raises(ConnectFailed):
        await Transport().post(tgt, b"{}", b"", 2, 2)


async def test_idle_timeout_between_chunks(
    server: tuple[Script, asyncio.Server],
) -> None:
    script, srv = server
    answers = script.answers
    script.hang = True
    answers.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    t = Transport()
    r = await t.post(target(srv), b"{}", b"", 5, 5)
    it = chunks(r, 0.2).__aiter__()
    assert await it.__anext__() == b"abc"
    with pytest.raises(TimeoutError):
        await it.__anext__()
    r.close()
    t.close()


async def test_deadline_covers_the_whole_answer(
    server: tuple[Script, asyncio.Server],
) -> None:
    script, srv = server
    script.hang = True
    script.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    t = Transport()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await t.post(target(srv), b"{}", b"", 5, 0.3)
    with pytest.raises(TimeoutError, match="no complete response"):
        await r.read()
    assert 0.25 <= loop.time() - t0 < 2
    t.close()


async def test_idle_timer_is_rearmed_by_data_not_reset_per_chunk() -> None:
    """A stream sending every 0.1 s outlives a 0.25 s idle timeout for 1 s, then times out
    ~0.25 s after its last chunk; the first-byte deadline no longer applies."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        await reader.read()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    t = Transport()
    loop = asyncio.get_running_loop()
    r = await t.post(target(srv), b"{}", b"", 5, 0.15)
    got = b""
    last = loop.time()

    async def drain() -> None:
        nonlocal got, last
        async for chunk in chunks(r, 0.25):
            got += chunk
            last = loop.time()

    with pytest.raises(TimeoutError, match=r"no data for 0\.25 s"):
        await drain()
    assert got == b"x" * 10
    assert 0.2 <= loop.time() - last < 1.0
    r.close()
    t.close()
    srv.close()
