"""A stream read whole before the client sees any of it (``escalate_streams``): its chunks
kept to be replayed through the usual relay, its ``data:`` payloads kept to be judged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from arbstr.apinames import ApiName
from arbstr.server.streaming import AFTER_DONE_S
from arbstr.upstream.client import StreamReply
from arbstr.upstream.protocol import pump_by_reading
from arbstr.upstream.sse import SSEParser


@dataclass(slots=True)
class Buffered(StreamReply):
    """A read stream replayed chunk by chunk; the failure met reading it comes back at the
    point it happened, so the relay ends the response as it would have."""

    chunks: list[bytes] = field(default_factory=list)  # after first_chunk
    failure: TimeoutError | OSError | None = None
    complete: bool = False  # it reached its API's end event
    datas: list[bytes] = field(default_factory=list)  # every event's data, in order
    at: int = 0

    def pump(self, sink: Callable[[bytes], bool]) -> Awaitable[bool]:
        return pump_by_reading(self.next_chunk, sink)

    async def next_chunk(self) -> bytes | None:
        if self.at < len(self.chunks):
            self.at += 1
            return self.chunks[self.at - 1]
        if self.failure is not None:
            raise self.failure
        return None


def _ends(api: ApiName, data: bytes) -> bool:
    if api == "chat":
        return data.strip() == b"[DONE]"
    return b'"message_stop"' in data


async def buffer_stream(sr: StreamReply, api: ApiName) -> Buffered:
    """``sr`` read to its end (its API's end event, then briefly the rest of its body) or
    until it breaks or goes quiet for the idle timeout; nothing is sent."""
    buf = Buffered(sr.response, sr.first_chunk, sr.routstr_cost_msats)
    parser = SSEParser()

    def take(chunk: bytes) -> None:
        for e in parser.feed(chunk):
            if e.data is not None:
                buf.datas.append(e.data)
                if _ends(api, e.data):
                    buf.complete = True

    take(sr.first_chunk)
    try:
        while not buf.complete and (chunk := await sr.next_chunk()) is not None:
            buf.chunks.append(chunk)
            take(chunk)
    except (TimeoutError, OSError) as exc:
        buf.failure = exc
        return buf
    if buf.complete:  # the rest of the body, briefly, as the relay would
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(AFTER_DONE_S):
                while (chunk := await sr.next_chunk()) is not None:
                    buf.chunks.append(chunk)
    return buf
