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

from arbstr.upstream.usage import Usage

ApiName = Literal["chat", "responses", "messages", "embeddings", "completions"]
ALL_APIS: tuple[ApiName, ...] = ("chat", "responses", "messages", "embeddings", "completions")


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


class StreamReader(Protocol):
    """Reads one API's upstream SSE stream, event by event, for what it tells about the
    request; the relay forwards the bytes. Pure."""

    usage: Usage | None  # the usage the stream reported (None until it did)
    done: bool  # the stream's normal end was seen ([DONE], message_stop, response.completed)
    upstream_error: str | None  # the message of the first error event, if any
    content_events: int  # events that carried output: a lower bound on output tokens

    def read(self, event: bytes | None, data: bytes) -> None:
        """One SSE event: its ``event:`` name (None when absent) and its ``data``."""


class Api(Protocol):
    """One client API, as the pipeline serves it."""

    name: ApiName
    path: str  # the client route, e.g. "/v1/messages"
    upstream_path: str  # appended to the provider's url, e.g. "/messages"

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
