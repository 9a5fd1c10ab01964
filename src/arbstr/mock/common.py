"""What every mock API shares: encoding, request errors, the per-provider context, the reply
plan (text or a tool call, its token counts and Routstr-style cost) and a stream's frames.
Pure: the server (:mod:`.server`) does the I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from arbstr.mock.spec import MockSpec

JSON = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
SNIPPET_CHARS = 60
FINGERPRINT = "fp_arbstr_mock"
DONE = b"data: [DONE]\n\n"
ARG_PIECE_CHARS = 4  # a tool call's arguments stream in pieces this long, one token each

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder().decode
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


class MockError(Exception):
    """A request the mock refuses: becomes an error answer in the route's own shape."""

    def __init__(self, status: int, type_: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "invalid_request") -> MockError:
    return MockError(400, "invalid_request_error", code, message)


def decode_object(raw: bytes) -> dict[str, Any]:
    try:
        obj = decode(raw)
    except msgspec.DecodeError as exc:
        raise bad_request(f"Invalid request body: {exc}", "invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request("Invalid request body: expected a JSON object")
    return obj


def opt_int(body: dict[str, Any], field: str) -> int | None:
    """An optional positive integer field."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{field}' must be an integer of at least 1")
    return value


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "missing_model")
    return model


def text_tokens(chars: int) -> int:
    """≈ chars / 4, at least 1."""
    return max(1, math.ceil(chars / 4))


def clean_user_text(text: str) -> str:
    """A user turn's own words: client-injected ``<system-reminder>`` blocks removed."""
    return _REMINDER.sub("", text).strip() if "<system-reminder>" in text else text


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    args: Any  # the arguments, decoded
    arguments: str  # the same as JSON text
    pieces: list[str]  # ``arguments`` cut for streaming


@dataclass(frozen=True, slots=True)
class Plan:
    """One answer: its text tokens (empty for a tool call) or tool call, and its usage."""

    tokens: list[str]
    call: ToolCall | None
    truncated: bool
    prompt_tokens: int
    completion_tokens: int
    total_msats: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def cost_fields(self) -> dict[str, Any]:
        """Routstr's reported charge, as the chat mock sends it inside ``usage``."""
        return {"cost_sats": self.total_msats / 1000, "cost": {"total_msats": self.total_msats}}


def cost_msats(spec: MockSpec, prompt_tokens: int, completion_tokens: int) -> int:
    sats = (prompt_tokens * spec.input_rate + completion_tokens * spec.output_rate) / 1000
    return round((sats + spec.base_fee) * 1000)


def tool_said(opening: tuple[str, ...]) -> tuple[str, ...]:
    """The opening of an answer to a tool result: "Hello from X (model)! The tool said:"."""
    return (*opening[:4], "The", "tool", "said:")


def plan_text(
    spec: MockSpec, opening: tuple[str, ...], said: str, prompt_tokens: int, limit: int | None
) -> Plan:
    """A text answer: the opening, then the start of ``said`` (the user's own words); cut at
    ``limit`` tokens."""
    words = [*opening, *clean_user_text(said)[:SNIPPET_CHARS].split()]
    tokens = [w + " " for w in words]
    tokens[-1] = words[-1]
    truncated = limit is not None and limit < len(tokens)
    if truncated:
        del tokens[limit:]
    n = len(tokens)
    return Plan(tokens, None, truncated, prompt_tokens, n, cost_msats(spec, prompt_tokens, n))


def plan_call(spec: MockSpec, call_id: str, name: str, args: Any, prompt_tokens: int) -> Plan:
    """A tool call answer; its output tokens are the name plus one per arguments piece."""
    arguments = encode(args).decode()
    step = ARG_PIECE_CHARS
    pieces = [arguments[i : i + step] for i in range(0, len(arguments), step)]
    n = 1 + len(pieces)
    call = ToolCall(call_id, name, args, arguments, pieces)
    return Plan([], call, False, prompt_tokens, n, cost_msats(spec, prompt_tokens, n))


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """A stream's SSE events: ``first``, then ``paced`` (one per token, then the finish; the
    mock may pause before each), then ``rest`` (usage, the end)."""

    first: bytes
    paced: list[bytes]
    rest: list[bytes]


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON body or a stream, and the charge reported in ``X-Routstr-Cost-Msats``."""

    body: bytes | None = None
    frames: StreamFrames | None = None
    total_msats: int | None = None


def sse(event: str | None, obj: Any) -> bytes:
    data = b"data: " + encode(obj) + b"\n\n"
    return data if event is None else b"event: " + event.encode() + b"\n" + data


@dataclass
class Ctx:
    """One provider's answering state: its spec, reply openings, ids and clock."""

    spec: MockSpec
    openings: dict[str, tuple[str, ...]]
    ids: Iterator[int]
    id_suffix: str
    now: Callable[[], float]

    def opening(self, model: str) -> tuple[str, ...]:
        opening = self.openings.get(model)
        if opening is None:
            raise MockError(
                404,
                "invalid_request_error",
                "model_not_found",
                f"The model `{model}` does not exist or is not served by {self.spec.name}",
            )
        return opening

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{self.id_suffix}{next(self.ids):x}"

    def created(self) -> int:
        return int(self.now())
