"""The ``input`` of embeddings and the ``prompt`` of legacy completions: a string, a list of
strings, a token array or a list of token arrays. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.errors import InvalidRequest
from arbstr.routing.pricing import CHARS_PER_TOKEN

_decode_any = msgspec.json.Decoder().decode


def _is_tokens(v: object) -> bool:
    return isinstance(v, list) and all(type(t) is int for t in v)


def read_prompt(raw: msgspec.Raw, field: str) -> tuple[int, str | None]:
    """``(text_chars, last_text)`` of the field (a token counts as
    :data:`~arbstr.routing.pricing.CHARS_PER_TOKEN` characters). Raises
    :class:`InvalidRequest` when it is missing, empty or of another shape."""
    if not raw:
        raise InvalidRequest(f"'{field}' is required", code=f"missing_{field}")
    value: Any = _decode_any(raw)
    if isinstance(value, str):
        return len(value), value
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return sum(len(v) for v in value), value[-1]
        if _is_tokens(value):
            return len(value) * CHARS_PER_TOKEN, None
        if all(_is_tokens(v) and v for v in value):
            return sum(len(v) for v in value) * CHARS_PER_TOKEN, None
    raise InvalidRequest(
        f"'{field}' must be a non-empty string, array of strings, token array or array of"
        " token arrays",
        code="invalid_request",
    )


def decode_error(exc: msgspec.DecodeError) -> InvalidRequest:
    """The 400 for a body msgspec could not read."""
    if isinstance(exc, msgspec.ValidationError):
        return InvalidRequest(f"invalid request body: {exc}", code="invalid_request")
    return InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json")
