"""What the OpenAI-shaped APIs (chat, completions, embeddings) share: their error shapes and
a reader of their ``data:`` chunk streams. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.errors import error_body
from arbstr.upstream.relay import DONE, error_text
from arbstr.upstream.usage import ABSENT, NULL, Usage, read_usage

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


class _Chunk(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: msgspec.Raw = ABSENT
    error: msgspec.Raw = ABSENT


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


class OpenAIChunkReader:
    """A :class:`~arbstr.apis.base.StreamReader` of OpenAI chunks ending ``data: [DONE]``."""

    __slots__ = ("_provider", "_request_id", "content_events", "done", "upstream_error", "usage")

    def __init__(self, provider: str | None, request_id: str | None) -> None:
        self._provider = provider
        self._request_id = request_id
        self.usage: Usage | None = None
        self.done = False
        self.upstream_error: str | None = None
        self.content_events = 0

    def read(self, event: bytes | None, data: bytes) -> None:
        if data == DONE:
            self.done = True
            return
        try:
            c = _decode_chunk(data)
        except msgspec.DecodeError:  # (ValidationError included: not an object)
            return
        if c.choices:
            self.content_events += 1
        if c.error and c.error != NULL and self.upstream_error is None:
            self.upstream_error = error_text(c.error)
        if c.usage and c.usage != NULL:
            usage = read_usage(c.usage, provider=self._provider, request_id=self._request_id)
            if usage is not None:
                self.usage = usage


def openai_error(status: int, type: str, code: str | None, message: str) -> bytes:
    """``{"error": {"message", "type", "code"}}``."""
    return error_body(message, type, code)


def openai_stream_error(type: str, code: str, message: str) -> bytes:
    """A ``data: {"error": ...}`` event, which the openai SDK raises on."""
    err: dict[str, Any] = {"error": {"message": message, "type": type, "code": code}}
    return b"data: " + _encode(err) + b"\n\n"
