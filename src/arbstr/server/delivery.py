"""What goes on the wire besides the upstream's bytes: stream headers, arbstr's trailer and
error events, and a ``send`` that remembers how far the response got."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any

import msgspec

from arbstr.server.http import Headers, Message, Send

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-arbstr-streaming", b"true"),
]
_encode = msgspec.json.Encoder().encode


class TrackedSend:
    """Wraps ASGI ``send``: whether the response has started and ended (for the error
    boundary, which must not start a second response or end one twice)."""

    __slots__ = ("_send", "ended", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.ended = False

    def __call__(self, message: Message) -> Awaitable[None]:
        # (not a coroutine itself: the server's send is awaited directly, one frame less)
        if message["type"] == "http.response.start":
            self.started = True
        elif not message.get("more_body", False):
            self.ended = True
        return self._send(message)

    @property
    def server_send(self) -> Send:
        """The server's own ``send`` (for :func:`arbstr.server.http.body_writer`)."""
        return self._send


def trailer_event(
    *,
    chunk_id: str,
    request_id: str,
    provider: str | None,
    model: str,
    policy: str | None,
    tokens: tuple[int, int],
    cost: Mapping[str, object],
    latency_ms: float,
    ttft_ms: float | None,
) -> bytes:
    """arbstr's chunk before ``data: [DONE]``: OpenAI-chunk-shaped, ``choices`` empty;
    ``cost`` holds ``cost_sats`` and its parts (``Charge.trailer_fields``)."""
    payload: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "arbstr": {
            "request_id": request_id,
            "provider": provider,
            "model": model,
            "policy": policy,
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            **cost,
            "latency_ms": round(latency_ms, 2),
            "ttft_ms": None if ttft_ms is None else round(ttft_ms, 2),
        },
    }
    return b"data: " + _encode(payload) + b"\n\n"


def error_event(
    message: str, *, type: str = "upstream_error", code: str = "stream_interrupted"
) -> bytes:
    """A mid-stream error the openai SDK raises on."""
    err = {"error": {"message": message, "type": type, "code": code}}
    return b"data: " + _encode(err) + b"\n\n"
