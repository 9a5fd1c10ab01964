"""What to forward of an upstream SSE stream, and what it tells about the request. Pure: bytes
in, bytes out, no I/O.

Events go out as the upstream sent them, byte for byte, as soon as they are complete, with two
changes: the usage-only chunk is dropped when the client did not ask for usage (arbstr asked
on its behalf), and arbstr's trailer chunk goes just before ``data: [DONE]``.

It runs per chunk, so each event's JSON is decoded once, into a struct of the few parts the
relay reads (the rare ``error`` kept raw until present); only a chunk whose ``usage`` has an
unexpected shape is decoded again, leniently, so that it is still recognised.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from arbstr.upstream.sse import CRLF_TAIL, SSEEvent, SSEParser
from arbstr.upstream.usage import ABSENT, NULL, Usage, UsageFields, read_usage, usage_from

DONE = b"[DONE]"
MAX_ERROR_CHARS = 500


class _Chunk(msgspec.Struct):
    """The parts of a ``chat.completion.chunk`` the relay looks at, ``usage`` as usually typed."""

    id: msgspec.Raw = ABSENT
    choices: list[msgspec.Raw] | None = None
    usage: UsageFields | None = None
    error: msgspec.Raw = ABSENT


class _OddChunk(msgspec.Struct):
    """The same for a chunk whose ``usage`` does not fit: kept raw, read field by field."""

    id: msgspec.Raw = ABSENT
    choices: list[msgspec.Raw] | None = None
    usage: msgspec.Raw = ABSENT
    error: msgspec.Raw = ABSENT


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_odd_chunk = msgspec.json.Decoder(_OddChunk).decode
_decode_any = msgspec.json.Decoder().decode


class StreamRelay:
    """Feed it the upstream's bytes as they come; send the client what it returns."""

    __slots__ = (
        "_forward_usage",
        "_hidden",
        "_last_id",
        "_parser",
        "_provider",
        "_request_id",
        "_trailer",
        "content_chunks",
        "done",
        "held",
        "upstream_error",
        "usage",
    )

    def __init__(
        self,
        *,
        forward_usage_chunk: bool,
        trailer: Callable[[StreamRelay], bytes],
        provider: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self._parser = SSEParser()
        self._forward_usage = forward_usage_chunk
        self._trailer = trailer
        self._provider = provider
        self._request_id = request_id
        self._last_id = ABSENT
        self._hidden = False  # the last event was dropped: the LF ending its CRLF goes too
        self.usage: Usage | None = None
        self.done = False  # data: [DONE] seen
        self.content_chunks = 0  # chunks with choices: a lower bound on output tokens
        self.upstream_error: str | None = None  # message of the first error event, if any
        self.held: list[SSEEvent] | None = None  # events from a [DONE] that came with others

    @property
    def last_id(self) -> str | None:
        """The ``id`` of the last chunk that had one."""
        if not self._last_id:
            return None
        try:
            value = _decode_any(self._last_id)
        except msgspec.DecodeError:
            return None
        return value if isinstance(value, str) else None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send to the client now for this upstream chunk (may be empty). Events that
        came with ``[DONE]`` after others are held from it on (:attr:`held`): the trailer is
        built only once what came before is sent, so a failure building it loses no text."""
        events = self._parser.feed(chunk)
        if not events:
            return b""
        if len(events) == 1:
            return self._event(events[0])
        return self._events(events)

    def release(self) -> bytes:
        """The bytes of the events held at ``[DONE]`` (the trailer first)."""
        held, self.held = self.held, None
        return self._events(held) if held else b""

    def _events(self, events: list[SSEEvent]) -> bytes:
        out: list[bytes] = []
        some = False  # bytes to send before [DONE]
        for i, e in enumerate(events):
            if some and e.data == DONE and not self.done:
                self.held = events[i:]
                break
            b = self._event(e)
            out.append(b)
            some = some or bool(b)
        return b"".join(out)

    def finish(self) -> bytes:
        """Bytes to send when the upstream body ends: after ``[DONE]``, whatever it sent past
        its last complete event; before it, nothing (half an event would garble the error
        event that follows)."""
        rest = self._parser.flush()
        return rest if self.done else b""

    def _event(self, e: SSEEvent) -> bytes:
        if self._hidden:
            self._hidden = False
            if e is CRLF_TAIL:
                return b""
        data = e.data
        if data is None or self.done:
            return e.raw
        if data == DONE:
            self.done = True
            return self._trailer(self) + e.raw
        c: _Chunk | _OddChunk
        try:
            c = _decode_chunk(data)
        except msgspec.ValidationError:  # not an object, or usage of another shape (rare)
            try:
                c = _decode_odd_chunk(data)
            except msgspec.DecodeError:
                return e.raw
        except msgspec.DecodeError:
            return e.raw
        if c.id:
            self._last_id = c.id
        if c.choices:
            self.content_chunks += 1
        if c.error and c.error != NULL:
            if self.upstream_error is None:
                self.upstream_error = error_text(c.error)
            if c.usage is not None:
                self._read_usage(c.usage)
            return e.raw  # never hidden: the client must see the failure
        if (
            c.usage is not None
            and self._read_usage(c.usage)
            and not c.choices
            and not self._forward_usage
        ):
            self._hidden = True  # the usage-only chunk, which the client did not ask for
            return b""
        return e.raw

    def _read_usage(self, usage: UsageFields | msgspec.Raw) -> bool:
        """Keep what a chunk's ``usage`` says; whether it had one (JSON null is none)."""
        if isinstance(usage, UsageFields):
            self.usage = usage_from(usage, provider=self._provider, request_id=self._request_id)
            return True
        if not usage or usage == NULL:
            return False
        read = read_usage(usage, provider=self._provider, request_id=self._request_id)
        if read is not None:
            self.usage = read
        return True


def error_text(raw: msgspec.Raw) -> str:
    """The message of an upstream ``error`` value, on one line, at most
    :data:`MAX_ERROR_CHARS` characters."""
    try:
        value = _decode_any(raw)
    except msgspec.DecodeError:
        value = None
    if isinstance(value, dict):
        value = value.get("message")
    text = ""
    if isinstance(value, str):
        text = "".join(ch if ch.isprintable() else " " for ch in value[: 2 * MAX_ERROR_CHARS])
        text = " ".join(text.split())
    if not text:
        return "upstream sent an error event"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
