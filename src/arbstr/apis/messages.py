"""The Anthropic Messages API (``POST /v1/messages``) as arbstr reads it.

Pure. msgspec Structs decode only what routing needs (model, prompt text, ``max_tokens``,
stream); everything else is forwarded untouched, and the body is re-encoded only when the
model must be rewritten. Anthropic counts cache reads and writes apart from ``input_tokens``;
arbstr's :class:`~arbstr.upstream.usage.Usage` counts every prompt token in ``prompt_tokens``
(OpenAI's convention), so the parts are added up. Errors take Anthropic's shape.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.base import ApiName, ApiRequest, RequestFeatures, Translator
from arbstr.apis.chat import check_model, rewrite_model
from arbstr.apis.features import count_items, response_format, tool_choice_required
from arbstr.apis.translate.via_chat import MESSAGES_VIA_CHAT
from arbstr.apis.usage_fields import Where, count, ignored, reported_cost, total, usage_object
from arbstr.errors import InvalidRequest
from arbstr.upstream.usage import ABSENT, NotACompletion, Usage

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


class _Block(msgspec.Struct):
    type: str | None = None
    text: str | None = None  # text blocks
    input: msgspec.Raw = ABSENT  # tool_use: the arguments object
    content: msgspec.Raw = ABSENT  # tool_result: a string or blocks


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[_Block] | None = None


class _View(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    max_tokens: int | msgspec.UnsetType = msgspec.UNSET
    system: str | list[_Block] | None = None
    messages: list[_Message] | msgspec.UnsetType = msgspec.UNSET
    stream: bool | None = None
    tools: msgspec.Raw = ABSENT
    tool_choice: msgspec.Raw = ABSENT  # {"type": "auto" | "any" | "tool" | "none"}
    output_format: msgspec.Raw = ABSENT  # structured outputs: {"type": "json_schema", ...}


_view_decoder = msgspec.json.Decoder(_View)
_result_decoder = msgspec.json.Decoder(str | list[_Block] | None)


def _text(blocks: str | list[_Block] | None) -> str:
    """The text of a content: the string, or its text blocks joined."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    return "".join(b.text for b in blocks if b.text and (b.type is None or b.type == "text"))


def _raw_chars(raw: msgspec.Raw) -> int:
    return len(raw) if raw and raw != b"null" else 0


def _result_chars(raw: msgspec.Raw) -> int:
    """Characters of a tool_result's content: its string or text blocks, else its JSON."""
    if not raw:
        return 0
    try:
        return len(_text(_result_decoder.decode(raw)))
    except msgspec.DecodeError:
        return len(raw)


def _content_chars(content: str | list[_Block] | None) -> int:
    if content is None or isinstance(content, str):
        return len(content or "")
    chars = 0
    for b in content:
        if b.type == "tool_use":
            chars += _raw_chars(b.input)
        elif b.type == "tool_result":
            chars += _result_chars(b.content)
        elif b.text and (b.type is None or b.type == "text"):
            chars += len(b.text)
    return chars


def parse_messages(body: bytes, *, need_max_tokens: bool = True) -> ApiRequest:
    """Decode and check a Messages body (``count_tokens`` bodies have no ``max_tokens``).
    Raises :class:`InvalidRequest` (400)."""
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}", code="invalid_request") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if view.model is msgspec.UNSET or not view.model:
        raise InvalidRequest("model: Field required", code="missing_model")
    check_model(view.model)
    max_tokens = None if view.max_tokens is msgspec.UNSET else view.max_tokens
    if need_max_tokens and max_tokens is None:
        raise InvalidRequest("max_tokens: Field required", code="missing_max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidRequest("max_tokens: must be at least 1", code="invalid_max_tokens")
    if view.messages is msgspec.UNSET or not view.messages:
        raise InvalidRequest("messages: at least one message is required", code="missing_messages")
    chars = _raw_chars(view.tools) + _content_chars(view.system)
    last_user: str | None = None
    first_user: str | None = None
    images = tool_results = 0
    for m in view.messages:
        content = m.content
        chars += _content_chars(content)
        if m.role == "user":
            text = _text(content)
            if text:  # a turn of only tool results is not what the user asked
                last_user = text
                if first_user is None:
                    first_user = text
        if isinstance(content, list):
            for b in content:
                if b.type == "image":
                    images += 1
                elif b.type == "tool_result":
                    tool_results += 1
    system = view.system
    features = RequestFeatures(
        turns=len(view.messages),
        tools=count_items(view.tools),
        tool_results=tool_results,
        images=images,
        response_format=response_format(view.output_format),
        tool_choice_required=tool_choice_required(view.tool_choice),
        system_text=system if isinstance(system, str) else (_text(system) or None),
        first_user_text=first_user,
    )
    return ApiRequest(
        api="messages",
        model=view.model,
        stream=bool(view.stream),
        text_chars=chars,
        last_user_text=last_user,
        max_tokens=max_tokens,
        features=features,
    )


# -- usage ------------------------------------------------------------------------------------

_COUNTS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class _Counts:
    """Anthropic's usage counts as a stream reveals them (a later report replaces an earlier
    one, field by field), and the reported cost."""

    __slots__ = ("cost", "fields")

    def __init__(self) -> None:
        self.fields: dict[str, int] = {}
        self.cost: tuple[int | None, int | None] = (None, None)

    def add(self, raw: msgspec.Raw, field: str, where: Where) -> bool:
        """Read one usage object; False when there was none."""
        obj = usage_object(raw, field, where)
        if obj is None:
            return False
        for key in (*_COUNTS, "output_tokens"):
            n = count(obj, key, f"{field}.{key}", where)
            if n is not None:
                self.fields[key] = n
        total_msats, sats_msats = reported_cost(raw, where)
        old_total, old_sats = self.cost
        self.cost = (
            old_total if total_msats is None else total_msats,
            old_sats if sats_msats is None else sats_msats,
        )
        return True

    def usage(self, where: Where) -> Usage:
        f = self.fields
        read, write = f.get("cache_read_input_tokens"), f.get("cache_creation_input_tokens")
        return Usage(
            prompt_tokens=total((f.get("input_tokens"), read, write), "usage.input_tokens", where),
            completion_tokens=f.get("output_tokens"),
            total_msats=self.cost[0],
            sats_msats=self.cost[1],
            cached_tokens=read,
            cache_write_tokens=write,
        )


def messages_usage(raw: msgspec.Raw, where: Where) -> Usage | None:
    """An Anthropic ``usage`` object (None when absent, null or not an object)."""
    counts = _Counts()
    return counts.usage(where) if counts.add(raw, "usage", where) else None


class _Reply(msgspec.Struct):
    usage: msgspec.Raw = ABSENT


_reply_decoder = msgspec.json.Decoder(_Reply)


# -- streams ----------------------------------------------------------------------------------


class _Start(msgspec.Struct):
    usage: msgspec.Raw = ABSENT


class _Event(msgspec.Struct):
    type: Any = None
    message: _Start | None = None  # message_start
    usage: msgspec.Raw = ABSENT  # message_delta
    error: Any = None  # error


_event_decoder = msgspec.json.Decoder(_Event)


class MessagesReader:
    """Reads an Anthropic Messages stream: prompt and cache counts from ``message_start``,
    the cumulative output count from ``message_delta``, the end from ``message_stop``, the
    error from an ``error`` event."""

    __slots__ = (
        "_counts",
        "_warned",
        "_where",
        "content_events",
        "done",
        "upstream_error",
        "usage",
    )

    def __init__(self, provider: str, request_id: str) -> None:
        self._where: Where = (provider, request_id)
        self._counts = _Counts()
        self._warned = False
        self.usage: Usage | None = None
        self.done = False
        self.upstream_error: str | None = None
        self.content_events = 0

    def read(self, event: bytes | None, data: bytes) -> None:
        if event == b"content_block_delta":
            self.content_events += 1
            return
        if event in (b"content_block_start", b"content_block_stop", b"ping"):
            return
        try:
            ev = _event_decoder.decode(data)
        except msgspec.DecodeError:
            ev = None
        name = event.decode("utf-8", "replace") if event is not None else None
        if name is None:
            name = ev.type if ev is not None and isinstance(ev.type, str) else ""
            if name == "content_block_delta":
                self.content_events += 1
                return
        if name == "message_stop":
            self.done = True
            return
        if name not in ("message_start", "message_delta", "error"):
            return
        if ev is None:
            self._warn(name)
            if name == "error":
                self._error("upstream stream error")
            return
        if name == "error":
            message = ev.error.get("message") if isinstance(ev.error, dict) else None
            self._error(
                message if isinstance(message, str) and message else "upstream stream error"
            )
            return
        if name == "message_start":
            raw = ev.message.usage if ev.message is not None else ABSENT
            field = "message.usage"
        else:
            raw, field = ev.usage, "usage"
        if self._counts.add(raw, field, self._where):
            self.usage = self._counts.usage(self._where)

    def _error(self, message: str) -> None:
        if self.upstream_error is None:
            self.upstream_error = message

    def _warn(self, name: str) -> None:
        if not self._warned:
            self._warned = True
            ignored(f"a {name} event", "not the expected object", self._where)


# -- errors -----------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}
_ANTHROPIC_TYPES = frozenset(ERROR_TYPES.values()) | {"timeout_error"}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    t = ERROR_TYPES.get(status)
    if t is not None:
        return t
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error(type: str, message: str) -> bytes:
    return _encode({"type": "error", "error": {"type": type, "message": message}})


# -- the Api ----------------------------------------------------------------------------------


class MessagesApi:
    """The Anthropic Messages API as the pipeline serves it."""

    name: ApiName = "messages"
    path = "/v1/messages"
    upstream_path = "/messages"
    accepts_x_api_key = True  # Anthropic clients send the key in x-api-key
    forward_headers: tuple[str, ...] = ("anthropic-version", "anthropic-beta")
    # providers without ``messages`` in their apis serve it through chat completions
    translated_via: ApiName | None = "chat"
    translator: Translator | None = MESSAGES_VIA_CHAT

    def parse(self, body: bytes) -> ApiRequest:
        return parse_messages(body)

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return rewrite_model(body, req, model)

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        try:
            raw = _reply_decoder.decode(body).usage
        except msgspec.DecodeError:
            raise NotACompletion("not a JSON object") from None
        return messages_usage(raw, (provider, request_id))

    def stream_reader(self, provider: str, request_id: str) -> MessagesReader:
        return MessagesReader(provider, request_id)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        """Anthropic's error shape; the type follows the status (arbstr's own types and
        codes have no place in it)."""
        return anthropic_error(error_type(status), message)

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        """An ``error`` event, on which the anthropic SDK raises ``APIStatusError``."""
        t = type if type in _ANTHROPIC_TYPES else "api_error"
        return b"event: error\ndata: " + anthropic_error(t, message) + b"\n\n"


MESSAGES = MessagesApi()
