"""What to forward of an upstream SSE stream. Pure: bytes in, bytes out, no I/O.

Events are forwarded as the upstream sent them, byte for byte, as soon as they are complete.
Two exceptions, both from the spec: the upstream's usage-only chunk is dropped when the client
did not ask for usage (arbstr asked for it on the client's behalf), and arbstr's own trailer
chunk goes just before ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from arbstr.upstream.sse import SSEParser
from arbstr.upstream.usage import Usage, chunk_decoder

DONE = b"[DONE]"


class StreamRelay:
    def __init__(self, *, forward_usage_chunk: bool, trailer: Callable[[StreamRelay], bytes]):
        self._parser = SSEParser()
        self._forward_usage = forward_usage_chunk
        self._trailer = trailer
        self.usage: Usage | None = None
        self.done = False
        self.content_chunks = 0  # chunks with choices: a lower bound on output tokens
        self.last_id: str | None = None
        self.error_seen = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send to the client now for this upstream chunk (may be empty)."""
        events = self._parser.feed(chunk)
        if not events:
            return b""
        if len(events) == 1:
            return self._event(events[0].raw, events[0].data)
        return b"".join([self._event(e.raw, e.data) for e in events])

    def leftover(self) -> bytes:
        """Bytes of an unfinished event when the upstream stopped mid-event."""
        return self._parser.flush()

    def _event(self, raw: bytes, data: bytes | None) -> bytes:
        if data is None or self.done:
            return raw
        if data == DONE:
            self.done = True
            return self._trailer(self) + raw
        try:
            c = chunk_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return raw
        if c.error is not None:
            self.error_seen = True
        if c.id is not None:
            self.last_id = c.id
        if c.choices:
            self.content_chunks += 1
        if c.usage is not None:
            self.usage = c.usage
            if not c.choices and not self._forward_usage:
                return b""
        return raw
