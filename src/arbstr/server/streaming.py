"""Relaying one upstream stream to the client, event by event, as it arrives.

The upstream's bytes go out as they came (redacted only where a secret appears), with arbstr's
trailer before ``data: [DONE]``; a stream that breaks, goes quiet or ends without ``[DONE]``
ends with a ``stream_interrupted`` error event. After ``[DONE]`` the rest of the upstream body
is awaited only briefly: the client has everything, so a quiet upstream cannot hold it.

After the first chunk, events are relayed from the upstream connection's data callback
(``pump``) straight to the client's socket (``body_writer``), without a task switch per
chunk; when the client's buffer is full, the next chunk goes through ``send``, which waits
for it to drain, and pumping resumes after."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from arbstr.apis.base import StreamReader, StreamTranslator
from arbstr.server.delivery import error_event
from arbstr.server.http import Headers, Send, body_writer
from arbstr.upstream import StreamRelay, StreamReply
from arbstr.upstream.sse import SSEParser

AFTER_DONE_S = 1.0  # how long the end of the upstream body is awaited after [DONE]


async def relay_stream(
    sr: StreamReply,
    relay: StreamRelay,
    send: Send,
    headers: Headers,
    *,
    provider: str,
    idle_timeout_s: float,
    redact: Callable[[bytes], bytes],
    before_last_send: Callable[[], None],
) -> str | None:
    """Send the response: head, every event, and the end; return why the stream failed on the
    way (None: it reached ``[DONE]``). ``before_last_send`` runs just before the final body
    part, when the disconnect watch may stop."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    error: str | None = None
    chunk: bytes | None = sr.first_chunk
    write = body_writer(send)  # (after the head: uvicorn knows the body is chunked now)

    def sink(chunk: bytes) -> bool:  # pumped, in the upstream's data callback: stop?
        assert write is not None
        more = write(redact(relay.feed(chunk)))
        if relay.held is not None:  # (as below)
            more = write(redact(relay.release())) and more
        return relay.done or not more

    try:
        # per chunk: feed and send inline (a helper coroutine would cost a frame per chunk)
        while chunk is not None:
            data = relay.feed(chunk)
            if data:
                await send({"type": "http.response.body", "body": redact(data), "more_body": True})
            if relay.held is not None:  # [DONE] came with other events: they went out first
                data = relay.release()
                await send({"type": "http.response.body", "body": redact(data), "more_body": True})
            if relay.done:
                break
            if write is not None:  # the rest straight from the upstream's callback
                if not await sr.pump(sink):
                    break  # the body ended without [DONE]
                if relay.done:
                    break
                # the client's buffer is full: the next part goes through send, which waits
            chunk = await sr.next_chunk()
    except TimeoutError:
        error = f"{provider}: no data for {idle_timeout_s:g} s (stream_idle_timeout_s)"
    except OSError as exc:
        error = f"{provider}: stream broken: {exc or type(exc).__name__}"
    if relay.done:  # the rest of the body (usually only its end), briefly; silence fails nothing
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(AFTER_DONE_S):
                while (chunk := await sr.next_chunk()) is not None:
                    data = relay.feed(chunk)
                    if data:
                        await send(
                            {"type": "http.response.body", "body": redact(data), "more_body": True}
                        )
    elif error is None:
        error = f"{provider}: stream ended without [DONE]"
    tail = redact(relay.finish())
    if error is not None and relay.upstream_error is None:
        tail += error_event(error)  # (an upstream error event already went out as it came)
    before_last_send()
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    return error


async def relay_events(
    sr: StreamReply,
    reader: StreamReader,
    send: Send,
    headers: Headers,
    *,
    provider: str,
    idle_timeout_s: float,
    redact: Callable[[bytes], bytes],
    before_last_send: Callable[[], None],
    stream_error: Callable[[str, str, str], bytes],
    translator: StreamTranslator | None = None,
) -> str | None:
    """Like :func:`relay_stream` for any API: each complete event goes out as the upstream
    sent it (or as ``translator`` turns it), each read by ``reader``; a failure on the way
    ends the response with ``stream_error``. Returns why the stream failed (None: the
    reader saw its normal end)."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    parser = SSEParser()
    error: str | None = None
    chunk: bytes | None = sr.first_chunk
    read = reader.read

    def take(chunk: bytes) -> bytes:
        events = parser.feed(chunk)
        if translator is None:
            for e in events:
                if e.data is not None:
                    read(e.event, e.data)
            return b"".join([e.raw for e in events])
        out = []
        for e in events:
            if e.data is not None:
                read(e.event, e.data)
                out.append(translator.feed(e.event, e.data))
        return b"".join(out)

    write = body_writer(send)

    def sink(chunk: bytes) -> bool:  # as in relay_stream
        assert write is not None
        return not write(redact(take(chunk))) or reader.done

    try:
        while chunk is not None:
            data = take(chunk)
            if data:
                await send({"type": "http.response.body", "body": redact(data), "more_body": True})
            if reader.done:
                break
            if write is not None:
                if not await sr.pump(sink):
                    break  # the body ended before its end event
                if reader.done:
                    break
            chunk = await sr.next_chunk()
    except TimeoutError:
        error = f"{provider}: no data for {idle_timeout_s:g} s (stream_idle_timeout_s)"
    except OSError as exc:
        error = f"{provider}: stream broken: {exc or type(exc).__name__}"
    if reader.done:
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(AFTER_DONE_S):
                while (chunk := await sr.next_chunk()) is not None:
                    data = take(chunk)
                    if data:
                        await send(
                            {"type": "http.response.body", "body": redact(data), "more_body": True}
                        )
    elif error is None:
        error = f"{provider}: stream ended before its end event"
    if translator is None:
        tail = parser.flush() if reader.done else b""
    else:
        tail = translator.finish() if reader.done else b""
    tail = redact(tail)
    if reader.upstream_error is not None and translator is not None:
        # (natively the upstream's error event went out as it came; translated, say it)
        tail += stream_error("upstream_error", "upstream_error", reader.upstream_error)
    elif error is not None and reader.upstream_error is None:
        tail += stream_error("upstream_error", "stream_interrupted", error)
    before_last_send()
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    return error
