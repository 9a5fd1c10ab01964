"""What every client API has in common: the request model routing reads, and the parts each
API supplies to the one pipeline that serves them all.

A request in any API (chat completions, Responses, Anthropic Messages, embeddings, legacy
completions) is read into one :class:`ApiRequest`: policy, routing, estimates, the request
log and cost see only that, so what later routing work adds applies to all of them. Each API
is an :class:`Api`: how to parse its body, rewrite the model, read its usage (JSON and
stream), and shape its errors. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec

from arbstr.apinames import ALL_APIS, ApiName
from arbstr.upstream.usage import Usage

__all__ = [
    "ALL_APIS",
    "NO_FEATURES",
    "Api",
    "ApiName",
    "ApiRequest",
    "RequestFeatures",
    "ResponseFormat",
    "StreamReader",
    "StreamTranslator",
    "Translator",
]


ResponseFormat = Literal["json_object", "json_schema"]


class RequestFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """The shape of a request the complexity scorer reads, counted by each API's parser in its
    one decode pass (0 / None / False: absent, or an API that has no such thing). A msgspec
    Struct, not a frozen dataclass: built on every request, ten times faster."""

    turns: int = 0  # messages (chat, Messages) or input items (Responses)
    tools: int = 0  # tools offered
    tool_results: int = 0  # tool / tool_result messages or function_call_output items
    images: int = 0  # image parts
    response_format: ResponseFormat | None = None  # structured output asked for
    tool_choice_required: bool = False  # the model must call a tool (some or a named one)
    system_text: str | None = None  # the (last) system / instructions text, by reference
    first_user_text: str | None = None  # the first user turn's text, by reference


NO_FEATURES = RequestFeatures()


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """What routing, policy, the log and cost need of one request, whichever API it came in."""

    api: ApiName
    model: str
    stream: bool
    text_chars: int  # characters of prompt text (system, messages, input), for ≈ chars / 4
    last_user_text: str | None  # the last user turn's text, for the policy's keywords
    max_tokens: int | None  # the output cap the client set, in that API's own field
    # chat and completions streams: whether the client set stream_options(.include_usage)
    client_wants_usage: bool = False
    stream_options_given: bool = False
    # False: the answer has no output tokens (embeddings), so none are estimated
    estimate_output: bool = True
    features: RequestFeatures = NO_FEATURES


class StreamReader(Protocol):
    """Reads one API's upstream SSE stream, event by event, for what it tells about the
    request; the relay forwards the bytes. Pure."""

    usage: Usage | None  # the usage the stream reported (None until it did)
    done: bool  # the stream's normal end was seen ([DONE], message_stop, response.completed)
    upstream_error: str | None  # the message of the first error event, if any
    content_events: int  # events that carried output: a lower bound on output tokens

    def read(self, event: bytes | None, data: bytes) -> None:
        """One SSE event: its ``event:`` name (None when absent) and its ``data``."""


class StreamTranslator(Protocol):
    """Turns one upstream stream of the fallback API into the client API's events."""

    def feed(self, event: bytes | None, data: bytes) -> bytes:
        """One upstream SSE event (its ``event:`` name, its ``data``): the complete SSE
        event bytes to send the client now (may be empty)."""

    def finish(self) -> bytes:
        """At the upstream's normal end (after ``[DONE]``): whatever is still to send."""


class Translator(Protocol):
    """Serves an API through another one (``Api.translated_via``, e.g. messages via chat)
    for providers that lack it. Pure. The pipeline sends ``translate_request``'s body to the
    fallback API's ``upstream_path``, reads usage with the fallback API's ``reply_usage`` /
    ``stream_reader``, and sends the client what ``translate_reply`` / the stream
    translator return."""

    def translate_request(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        """The fallback API's request body, for ``model``; for a stream it must ask for usage
        (chat: ``stream_options.include_usage``). Raises ``InvalidRequest`` (400)."""

    def translate_reply(self, body: bytes, model: str) -> bytes:
        """A 2xx JSON answer of the fallback API in the client API's shape, as ``model``
        (the model that answered)."""

    def stream_translator(self, model: str) -> StreamTranslator:
        """A translator for one stream answered by ``model``."""


class Api(Protocol):
    """One client API, as the pipeline serves it."""

    name: ApiName
    path: str  # the client route, e.g. "/v1/messages"
    upstream_path: str  # appended to the provider's url, e.g. "/messages"
    # arbstr's auth_token is also accepted as ``x-api-key: <token>`` (Anthropic clients)
    accepts_x_api_key: bool
    # request headers passed on upstream as they came (names, e.g. "anthropic-version");
    # only to providers serving this API natively
    forward_headers: tuple[str, ...]
    # providers without this API but with ``translated_via`` serve it through ``translator``
    # (both None: only providers listing this API are candidates)
    translated_via: ApiName | None
    translator: Translator | None

    def parse(self, body: bytes) -> ApiRequest:
        """Decode and check a body. Raises :class:`~arbstr.errors.InvalidRequest` (400)."""

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        """The body sent upstream: ``model`` rewritten when routing chose another spelling
        or model, and any option arbstr needs (usage in streams); else ``body`` unchanged."""

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        """The usage of a non-streaming answer (None: none given). Raises
        :class:`~arbstr.upstream.usage.NotACompletion` when the body is not a JSON object."""

    def stream_reader(self, provider: str, request_id: str) -> StreamReader:
        """A reader for one upstream stream of this API."""

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        """An error answer in this API's own shape."""

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        """A mid-stream failure event this API's SDK raises on (complete SSE event bytes)."""
