"""Anthropic's ``POST /v1/messages/count_tokens``: a Messages body without ``max_tokens``.

Read like a Messages request for routing (the model); when arbstr answers it locally the
answer is an estimate, about four characters a token of the system prompt, the messages and
the tool definitions (the same count the router's estimates use). Pure.
"""

from __future__ import annotations

import msgspec

from arbstr.apis.base import ApiRequest
from arbstr.apis.chat import rewrite_model
from arbstr.apis.messages import anthropic_error, error_type, parse_messages

CHARS_PER_TOKEN = 4

_encode = msgspec.json.Encoder().encode


def parse_count_tokens(body: bytes) -> ApiRequest:
    """Decode and check a count_tokens body (``max_tokens`` optional, never streamed).
    Raises :class:`~arbstr.errors.InvalidRequest` (400)."""
    req = parse_messages(body, need_max_tokens=False)
    if req.stream:
        req = ApiRequest(
            api=req.api,
            model=req.model,
            stream=False,
            text_chars=req.text_chars,
            last_user_text=req.last_user_text,
            max_tokens=req.max_tokens,
        )
    return req


def estimate_of(req: ApiRequest) -> int:
    """Input tokens of a parsed request: characters / 4, rounded up, at least 1."""
    return max(1, -(-req.text_chars // CHARS_PER_TOKEN))


def estimate(body: bytes) -> int:
    """Input tokens of a count_tokens body, estimated. Raises ``InvalidRequest``."""
    return estimate_of(parse_count_tokens(body))


def local_answer(input_tokens: int) -> bytes:
    """The answer Anthropic gives: ``{"input_tokens": n}``."""
    return _encode({"input_tokens": input_tokens})


class CountTokensApi:
    """The count_tokens route: parsed like Messages, answered upstream or locally."""

    path = "/v1/messages/count_tokens"
    upstream_path = "/messages/count_tokens"
    accepts_x_api_key = True
    forward_headers = ("anthropic-version", "anthropic-beta")

    def parse(self, body: bytes) -> ApiRequest:
        return parse_count_tokens(body)

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return rewrite_model(body, req, model)

    def estimate(self, body: bytes) -> int:
        return estimate(body)

    def local_answer(self, input_tokens: int) -> bytes:
        return local_answer(input_tokens)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return anthropic_error(error_type(status), message)


COUNT_TOKENS = CountTokensApi()
