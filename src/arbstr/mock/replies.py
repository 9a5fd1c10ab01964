"""What a mock provider answers, as bytes: request parsing, the reply, its usage and cost, the
JSON completion and the SSE frames of a stream. No I/O here (see :mod:`.server`).

Streams are built from pre-encoded byte pieces: the mock must stay cheap next to the proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from arbstr.apis.chat import Message, StreamOptions, text_of
from arbstr.mock.spec import MockSpec

JSON = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_SNIPPET_CHARS = 60
_FINGERPRINT = "fp_arbstr_mock"
_DONE = b"data: [DONE]\n\n"


class ChatRequest(msgspec.Struct):
    """Only the fields the mock needs; unknown fields are ignored."""

    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_decoder = msgspec.json.Decoder(ChatRequest)
encode = msgspec.json.Encoder().encode


class BadRequest(Exception):
    """Raised while parsing a chat request; becomes a 400 OpenAI-shaped error."""


def parse_chat(raw: bytes) -> ChatRequest:
    try:
        req = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Invalid request body: {exc}") from None
    if not req.messages:
        raise BadRequest("'messages' must be a non-empty array")
    for field, value in (
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ):
        if value is not None and value < 1:
            raise BadRequest(f"'{field}' must be at least 1")
    return req


def prompt_tokens(messages: list[Message]) -> int:
    chars = sum(len(text_of(m.content)) for m in messages)
    return max(1, math.ceil(chars / 4)) + 3 * len(messages)


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return text_of(message.content)
    return text_of(messages[-1].content)


def opening_words(spec: MockSpec, model: str) -> tuple[str, ...]:
    """The fixed start of every reply of this provider for this model."""
    return ("Hello", "from", spec.name, f"({model})!", "You", "said:")


def models_body(spec: MockSpec) -> bytes:
    """The ``GET /v1/models`` document, with Routstr's ``sats_pricing`` (sats per token)."""
    return encode(
        {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": 1700000000,
                    "owned_by": spec.name,
                    "sats_pricing": {
                        "prompt": spec.input_rate / 1000,
                        "completion": spec.output_rate / 1000,
                        "request": spec.base_fee,
                    },
                }
                for model in spec.models
            ],
        }
    )


@dataclass(frozen=True, slots=True)
class Reply:
    tokens: list[str]
    finish_reason: str
    usage: dict[str, Any]
    total_msats: int


def plan_reply(spec: MockSpec, opening: tuple[str, ...], req: ChatRequest) -> Reply:
    """The reply's tokens (cut at the request's token limit), its usage and its cost."""
    words = [*opening, *_last_user_text(req.messages)[:_SNIPPET_CHARS].split()]
    tokens = [w + " " for w in words]
    tokens[-1] = words[-1]
    limit = req.max_completion_tokens or req.max_tokens
    finish_reason = "stop"
    if limit is not None and limit < len(tokens):
        del tokens[limit:]
        finish_reason = "length"
    n_prompt = prompt_tokens(req.messages)
    n_completion = len(tokens)
    cost_sats = (
        n_prompt * spec.input_rate + n_completion * spec.output_rate
    ) / 1000 + spec.base_fee
    total_msats = round(cost_sats * 1000)
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
        "cost_sats": total_msats / 1000,
        "cost": {"total_msats": total_msats},
    }
    return Reply(tokens, finish_reason, usage, total_msats)


def completion_body(completion_id: str, created: int, model: str, reply: Reply) -> bytes:
    return encode(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(reply.tokens),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": reply.usage,
            "system_fingerprint": _FINGERPRINT,
        }
    )


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """A stream's SSE events: ``first`` (the role), then ``paced`` (one per token, then the
    finish reason; the mock may pause before each), then ``rest`` (usage, ``[DONE]``)."""

    first: bytes
    paced: list[bytes]
    rest: list[bytes]


def stream_frames(
    completion_id: str, created: int, model: str, reply: Reply, include_usage: bool
) -> StreamFrames:
    head = b"".join(
        (
            b'data: {"id":',
            encode(completion_id),
            b',"object":"chat.completion.chunk","created":',
            str(created).encode(),
            b',"model":',
            encode(model),
            b',"system_fingerprint":"',
            _FINGERPRINT.encode(),
            b'","choices":[{"index":0,"delta":',
        )
    )
    usage_null = b',"usage":null' if include_usage else b""
    tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    paced = [head + b'{"content":' + encode(token) + b"}" + tail for token in reply.tokens]
    paced.append(
        head
        + b'{},"logprobs":null,"finish_reason":"'
        + reply.finish_reason.encode()
        + b'"}]'
        + usage_null
        + b"}\n\n"
    )
    rest = [_DONE]
    if include_usage:
        usage_event = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [],
            "usage": reply.usage,
        }
        rest.insert(0, b"data: " + encode(usage_event) + b"\n\n")
    first = head + b'{"role":"assistant","content":"","refusal":null}' + tail
    return StreamFrames(first, paced, rest)
