"""The OpenAI Responses API (``POST /v1/responses``) as arbstr reads it.

Pure. msgspec Structs decode only what routing needs (model, prompt text, output cap,
stream); everything else is forwarded untouched, and the body is re-encoded only when the
model must be rewritten. Usage comes from ``usage`` (``input_tokens`` includes the cached
ones) in the answer or in the stream's ``response.completed`` / ``response.incomplete`` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.base import ApiName, ApiRequest, RequestFeatures, Translator
from arbstr.apis.chat import require_model, rewrite_model
from arbstr.apis.features import count_items, first_byte, response_format, tool_choice_required
from arbstr.apis.usage_fields import (
    Where,
    as_object,
    count,
    ignored,
    reported_cost,
    usage_object,
)
from arbstr.errors import InvalidRequest, error_body
from arbstr.upstream.usage import ABSENT, NotACompletion, Usage

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


class _Part(msgspec.Struct):
    type: str | None = None
    text: str | None = None  # input_text / output_text parts; input_image has none


class _Item(msgspec.Struct):
    type: str | None = None  # None: a message given as {"role", "content"}
    role: str | None = None
    content: msgspec.Raw = ABSENT  # messages: a string or parts
    arguments: msgspec.Raw = ABSENT  # function_call: a JSON string
    output: msgspec.Raw = ABSENT  # function_call_output: a string or parts


class _View(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    input: str | list[_Item] | None = None
    instructions: str | list[_Item] | None = None
    max_output_tokens: int | None = None
    stream: bool | None = None
    tools: msgspec.Raw = ABSENT
    tool_choice: msgspec.Raw = ABSENT
    text: msgspec.Raw = ABSENT  # {"format": {"type": "json_schema", ...}}


class _TextOptions(msgspec.Struct):
    format: msgspec.Raw = ABSENT


_view_decoder = msgspec.json.Decoder(_View)
_text_options_decoder = msgspec.json.Decoder(_TextOptions)
_content_decoder = msgspec.json.Decoder(str | list[_Part] | None)


def _parts_text(content: str | list[_Part] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if p.text)


def _message_text(item: _Item, where: str) -> tuple[str, int]:
    """A message item's text and its number of image parts."""
    if not item.content:
        return "", 0
    try:
        content = _content_decoder.decode(item.content)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid {where}.content: {exc}", code="invalid_request") from None
    if isinstance(content, list):
        return _parts_text(content), sum(1 for p in content if p.type == "input_image")
    return _parts_text(content), 0


def _loose_chars(raw: msgspec.Raw) -> int:
    """Characters of a tool item's text: the string or text parts, else the JSON itself."""
    if not raw:
        return 0
    try:
        return len(_parts_text(_content_decoder.decode(raw)))
    except msgspec.DecodeError:
        return len(raw)


class _Items:
    """What a list of input items holds: characters of text, the last user and system texts,
    image parts and tool outputs."""

    __slots__ = ("chars", "first_user", "images", "last_system", "last_user", "tool_results")

    def __init__(self, items: list[_Item], where: str) -> None:
        self.chars = self.images = self.tool_results = 0
        self.last_user: str | None = None
        self.first_user: str | None = None
        self.last_system: str | None = None
        for i, item in enumerate(items):
            if item.type is None or item.type == "message":
                text, images = _message_text(item, f"{where}[{i}]")
                self.chars += len(text)
                self.images += images
                if item.role == "user":
                    self.last_user = text
                    if self.first_user is None:
                        self.first_user = text
                elif item.role == "system" or item.role == "developer":
                    self.last_system = text
            elif item.type == "function_call":
                self.chars += _loose_chars(item.arguments)
            elif item.type == "function_call_output" or item.type == "custom_tool_call_output":
                self.chars += _loose_chars(item.output)
                self.tool_results += 1


def _text_format(raw: msgspec.Raw) -> msgspec.Raw:
    """``text.format`` of a Responses body (absent when ``text`` is not such an object)."""
    if not raw or first_byte(raw) != 0x7B:
        return ABSENT
    try:
        return _text_options_decoder.decode(raw).format
    except msgspec.DecodeError:
        return ABSENT


def parse_responses(body: bytes) -> ApiRequest:
    """Decode and check a Responses body. Raises :class:`InvalidRequest` (400)."""
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}", code="invalid_request") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    model = require_model(view.model)
    chars = len(view.tools) if view.tools and view.tools != b"null" else 0
    last_user: str | None = None
    first_user: str | None = None
    system: str | None = None
    turns = images = tool_results = 0
    if isinstance(view.input, str):
        chars += len(view.input)
        last_user = first_user = view.input
        turns = 1
    elif view.input is not None:
        items = _Items(view.input, "input")
        chars += items.chars
        last_user, system, first_user = items.last_user, items.last_system, items.first_user
        turns, images, tool_results = len(view.input), items.images, items.tool_results
    if isinstance(view.instructions, str):
        chars += len(view.instructions)
        system = view.instructions
    elif view.instructions is not None:
        instructions = _Items(view.instructions, "instructions")
        chars += instructions.chars
        system = instructions.last_system or instructions.last_user
    features = RequestFeatures(
        turns=turns,
        tools=count_items(view.tools),
        tool_results=tool_results,
        images=images,
        response_format=response_format(_text_format(view.text)),
        tool_choice_required=tool_choice_required(view.tool_choice),
        system_text=system,
        first_user_text=first_user,
    )
    return ApiRequest(
        api="responses",
        model=model,
        stream=bool(view.stream),
        text_chars=chars,
        last_user_text=last_user,
        max_tokens=view.max_output_tokens,
        features=features,
    )


# -- usage ------------------------------------------------------------------------------------


def responses_usage(raw: msgspec.Raw, where: Where) -> Usage | None:
    """A Responses ``usage`` object (None when absent, null or not an object)."""
    obj = usage_object(raw, "usage", where)
    if obj is None:
        return None
    details = as_object(obj.get("input_tokens_details"), "usage.input_tokens_details", where)
    total_msats, sats_msats = reported_cost(raw, where)
    return Usage(
        prompt_tokens=count(obj, "input_tokens", "usage.input_tokens", where),
        completion_tokens=count(obj, "output_tokens", "usage.output_tokens", where),
        total_msats=total_msats,
        sats_msats=sats_msats,
        cached_tokens=count(
            details, "cached_tokens", "usage.input_tokens_details.cached_tokens", where
        ),
        cache_write_tokens=count(
            details, "cache_write_tokens", "usage.input_tokens_details.cache_write_tokens", where
        ),
    )


class _Reply(msgspec.Struct):
    usage: msgspec.Raw = ABSENT


_reply_decoder = msgspec.json.Decoder(_Reply)


# -- streams ----------------------------------------------------------------------------------

# events that carry output (text, tool arguments, reasoning, refusals): a lower bound on tokens
CONTENT_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
_ENDS = frozenset({"response.completed", "response.incomplete"})
_FAILED = "response.failed"
_ERROR = "error"


class _Type(msgspec.Struct):
    type: Any = None


class _Response(msgspec.Struct):
    usage: msgspec.Raw = ABSENT
    error: Any = None


class _Event(msgspec.Struct):
    type: Any = None
    response: msgspec.Raw = ABSENT
    message: Any = None  # error event: top-level message (as documented)
    error: Any = None  # error event: nested {"type","code","message"} (as sent in practice)


_type_decoder = msgspec.json.Decoder(_Type)
_event_decoder = msgspec.json.Decoder(_Event)
_response_decoder = msgspec.json.Decoder(_Response)


def _message_of(error: object) -> str | None:
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
    return None


class ResponsesReader:
    """Reads a Responses stream: usage and the normal end from ``response.completed`` (or
    ``response.incomplete``), the error from ``response.failed`` or an ``error`` event."""

    __slots__ = ("_warned", "_where", "content_events", "done", "upstream_error", "usage")

    def __init__(self, provider: str, request_id: str) -> None:
        self._where: Where = (provider, request_id)
        self._warned = False
        self.usage: Usage | None = None
        self.done = False
        self.upstream_error: str | None = None
        self.content_events = 0

    def read(self, event: bytes | None, data: bytes) -> None:
        if event is not None:
            name = event.decode("utf-8", "replace")
        else:
            try:
                kind = _type_decoder.decode(data).type
            except msgspec.DecodeError:
                return  # not an event object: nothing to learn from it
            name = kind if isinstance(kind, str) else ""
        if name in CONTENT_EVENTS:
            self.content_events += 1
            return
        if name in _ENDS:
            self.done = True
        elif name != _FAILED and name != _ERROR:
            return
        try:
            ev = _event_decoder.decode(data)
        except msgspec.DecodeError:
            self._warn(name)
            ev = _Event()
        if name == _ERROR:
            self._error(_message_of(ev.error) or _text(ev.message) or "upstream stream error")
            return
        response = _Response()
        if ev.response:
            try:
                response = _response_decoder.decode(ev.response)
            except msgspec.DecodeError:
                self._warn(name)
        elif name != _FAILED:
            self._warn(name)  # a completed response without its response object
        usage = responses_usage(response.usage, self._where)
        if usage is not None:
            self.usage = usage
        if name == _FAILED:
            self._error(_message_of(response.error) or "the response failed")

    def _error(self, message: str) -> None:
        if self.upstream_error is None:
            self.upstream_error = message

    def _warn(self, name: str) -> None:
        if not self._warned:
            self._warned = True
            ignored(f"a {name} event", "not the expected object", self._where)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- the Api ----------------------------------------------------------------------------------


class ResponsesApi:
    """The Responses API as the pipeline serves it."""

    name: ApiName = "responses"
    path = "/v1/responses"
    upstream_path = "/responses"
    accepts_x_api_key = False
    forward_headers: tuple[str, ...] = ()
    translated_via: ApiName | None = None  # a provider without it is not a candidate
    translator: Translator | None = None

    def parse(self, body: bytes) -> ApiRequest:
        return parse_responses(body)

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return rewrite_model(body, req, model)

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        try:
            raw = _reply_decoder.decode(body).usage
        except msgspec.DecodeError:
            raise NotACompletion("not a JSON object") from None
        return responses_usage(raw, (provider, request_id))

    def stream_reader(self, provider: str, request_id: str) -> ResponsesReader:
        return ResponsesReader(provider, request_id)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return error_body(message, type, code)

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        """An ``error`` event with the error nested under ``error`` (what OpenAI sends, and
        what the openai SDKs raise ``APIError`` on), then ``response.failed`` with status
        failed, the terminal event for clients that follow the response's lifecycle."""
        error = _encode(
            {
                "type": "error",
                "code": code,
                "message": message,
                "param": None,
                "error": {"type": type, "code": code, "message": message, "param": None},
            }
        )
        failed = _encode(
            {
                "type": "response.failed",
                "response": {
                    "object": "response",
                    "status": "failed",
                    "error": {"code": code, "message": message},
                    "output": [],
                },
            }
        )
        return (
            b"event: error\ndata: "
            + error
            + b"\n\nevent: response.failed\ndata: "
            + failed
            + b"\n\n"
        )


RESPONSES = ResponsesApi()
