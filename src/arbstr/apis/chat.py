"""The OpenAI chat completions API (``CHAT``): the request as arbstr reads it, and the only
rewrites it makes.

Pure: bytes in, values or bytes out. msgspec Structs decode just the fields arbstr needs;
everything else in the body is forwarded untouched. Shared by the proxy and the mock."""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import ApiRequest, RequestFeatures, Translator
from arbstr.apis.features import count_items, response_format, tool_choice_required
from arbstr.apis.openai import OpenAIChunkReader, openai_error, openai_stream_error
from arbstr.errors import InvalidRequest
from arbstr.upstream.usage import ABSENT, completion_usage

MAX_MODEL_CHARS = 256


class ContentPart(msgspec.Struct):
    type: str | None = None
    text: str | None = None  # text parts; image and audio parts have none


class Message(msgspec.Struct):
    role: str = ""
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatView(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    messages: list[Message] | msgspec.UnsetType = msgspec.UNSET
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: StreamOptions | msgspec.UnsetType | None = msgspec.UNSET
    # read only when present (for the complexity features); forwarded untouched
    tools: msgspec.Raw = ABSENT
    tool_choice: msgspec.Raw = ABSENT
    response_format: msgspec.Raw = ABSENT


ChatRequest = ApiRequest  # (the name the chat code has always used)

_view_decoder = msgspec.json.Decoder(ChatView)
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_USAGE_OPTION = b',"stream_options":{"include_usage":true}}'


def text_of(content: str | list[ContentPart] | None) -> str:
    """A message's text: the string, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if p.text)


def check_model(model: str) -> None:
    """A model name arbstr can route and echo in a header: bounded, no control characters."""
    if len(model) > MAX_MODEL_CHARS:
        raise InvalidRequest(
            f"'model' is {len(model)} characters long; at most {MAX_MODEL_CHARS} are allowed",
            code="invalid_model",
        )
    if not model.isprintable():
        raise InvalidRequest(
            "'model' contains a control character (such as CR or LF)", code="invalid_model"
        )


def require_model(model: str | msgspec.UnsetType) -> str:
    """The body's ``model``: present, non-empty and :func:`check_model`-clean (400 if not)."""
    if model is msgspec.UNSET or not model:
        raise InvalidRequest("you must provide a model parameter", code="missing_model")
    check_model(model)
    return model


def rewrite_model(body: bytes, req: ApiRequest, model: str) -> bytes:
    """``body`` with ``model`` replaced when routing chose another; else unchanged bytes
    (for APIs with nothing else to rewrite)."""
    if model == req.model:
        return body
    obj: Any = _decode_any(body)
    if not isinstance(obj, dict):  # parse accepted it, so it is an object
        raise InvalidRequest("request body is not a JSON object", code="invalid_request")
    obj["model"] = model
    return _encode(obj)


def parse_chat(body: bytes) -> ChatRequest:
    """Decode and check a chat completions body. Raises :class:`InvalidRequest` (400)."""
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}", code="invalid_request") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    model = require_model(view.model)
    if view.messages is msgspec.UNSET or not view.messages:
        raise InvalidRequest("'messages' must be a non-empty array", code="missing_messages")
    chars = images = tool_results = 0
    last_user: str | None = None
    first_user: str | None = None
    system: str | None = None
    for m in view.messages:
        content = m.content
        if isinstance(content, str):
            text = content
        elif content is None:
            text = ""
        else:
            text = "".join([p.text for p in content if p.text])
            for p in content:
                if p.type == "image_url":
                    images += 1
        chars += len(text)
        role = m.role
        if role == "user":
            last_user = text
            if first_user is None:
                first_user = text
        elif role == "tool" or role == "function":
            tool_results += 1
        elif role == "system" or role == "developer":
            system = text
    so = view.stream_options
    features = RequestFeatures(
        turns=len(view.messages),
        tools=count_items(view.tools) if view.tools else 0,
        tool_results=tool_results,
        images=images,
        response_format=response_format(view.response_format) if view.response_format else None,
        tool_choice_required=bool(view.tool_choice) and tool_choice_required(view.tool_choice),
        system_text=system,
        first_user_text=first_user,
    )
    return ApiRequest(
        api="chat",
        model=model,
        stream=bool(view.stream),
        text_chars=chars,
        last_user_text=last_user,
        max_tokens=view.max_completion_tokens or view.max_tokens,
        client_wants_usage=isinstance(so, StreamOptions) and so.include_usage is True,
        stream_options_given=so is not msgspec.UNSET,
        features=features,
    )


def upstream_body(body: bytes, req: ApiRequest, model: str) -> bytes:
    """The body to send upstream: ``model`` replaced when routing chose another (``auto``),
    and ``stream_options.include_usage`` added to a stream whose client did not ask for it.
    Unchanged bytes when neither applies; a splice, not a re-encode, in the common stream case.
    (Legacy completions share it: same fields.)"""
    rewrite_model = model != req.model
    want_usage = req.stream and not req.client_wants_usage
    if not rewrite_model and not want_usage:
        return body
    if want_usage and not rewrite_model and not req.stream_options_given:
        end = body.rstrip()
        if end.endswith(b"}"):
            return end[:-1] + _USAGE_OPTION
    obj: Any = _decode_any(body)
    if not isinstance(obj, dict):  # parse_chat accepted it, so it is an object
        raise InvalidRequest("request body is not a JSON object", code="invalid_request")
    if rewrite_model:
        obj["model"] = model
    if want_usage:
        so = obj.get("stream_options")
        obj["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
    return _encode(obj)


class ChatApi:
    """``POST /v1/chat/completions``; streamed through the chat relay (arbstr's trailer)."""

    name: ApiName = "chat"
    path = "/v1/chat/completions"
    upstream_path = "/chat/completions"
    accepts_x_api_key = False
    forward_headers: tuple[str, ...] = ()
    translated_via: ApiName | None = None
    translator: Translator | None = None

    # (the functions themselves: no extra call frame on the hot path)
    parse = staticmethod(parse_chat)
    upstream_body = staticmethod(upstream_body)
    reply_usage = staticmethod(completion_usage)

    def stream_reader(self, provider: str, request_id: str) -> OpenAIChunkReader:
        return OpenAIChunkReader(provider, request_id)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return openai_error(status, type, code, message)

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        return openai_stream_error(type, code, message)


CHAT = ChatApi()
