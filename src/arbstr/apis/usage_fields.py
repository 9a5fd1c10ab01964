"""Token counts read leniently from an API's own ``usage`` object (Responses, Anthropic
Messages), joined with the cost the provider reported in it.

Each count is read on its own: a missing one is None, a mistyped or out-of-bounds one is None
with a warning, so a billed answer always reaches the client and the caller falls back to its
estimates. Reported cost fields are read by :func:`arbstr.upstream.usage.read_usage`, the
same reader chat completions use.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from arbstr.records import MAX_TOKENS
from arbstr.upstream.usage import NULL, read_usage

log = logging.getLogger("arbstr.upstream")

Where = tuple[str | None, str | None]  # (provider, request_id), for the warnings
Obj = dict[str, Any]

_decode_any = msgspec.json.Decoder().decode


def usage_object(raw: msgspec.Raw, field: str, where: Where) -> Obj | None:
    """The JSON object in ``raw`` (None when absent or null; a warning when not an object)."""
    if not raw or raw == NULL:
        return None
    try:
        value = _decode_any(raw)
    except msgspec.DecodeError:
        ignored(field, "not valid JSON", where)
        return None
    return as_object(value, field, where)


def as_object(value: object, field: str, where: Where) -> Obj | None:
    """``value`` if it is an object (None when null; a warning when something else)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    ignored(field, "not an object", where)
    return None


def count(obj: Obj | None, key: str, field: str, where: Where) -> int | None:
    """``obj[key]`` as a token count within bounds (None when absent or unusable)."""
    if obj is None:
        return None
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    ignored(field, f"not a whole number from 0 to {MAX_TOKENS}", where)
    return None


def total(parts: tuple[int | None, ...], field: str, where: Where) -> int | None:
    """The sum of counts whose first one is known (the others default to 0), within bounds."""
    if parts[0] is None:
        return None
    n = sum(p for p in parts if p is not None)
    if n <= MAX_TOKENS:
        return n
    ignored(field, f"the sum is above {MAX_TOKENS}", where)
    return None


def reported_cost(raw: msgspec.Raw, where: Where) -> tuple[int | None, int | None]:
    """``(total_msats, sats_msats)`` a ``usage`` object reports (``cost.total_msats``;
    ``cost_sats`` or a bare ``cost`` in sats, as msats)."""
    provider, request_id = where
    u = read_usage(raw, provider=provider, request_id=request_id)
    return (None, None) if u is None else (u.total_msats, u.sats_msats)


def ignored(field: str, reason: str, where: Where) -> None:
    provider, request_id = where
    log.warning(
        "ignoring %s from provider %s: %s",
        field,
        provider or "(unknown)",
        reason,
        extra={"request_id": request_id} if request_id else None,
    )
