"""Reading token usage and provider-reported cost out of upstream JSON, decoding only what
is needed (msgspec Structs ignore every other field)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import msgspec

from arbstr.money import msats_to_sats, to_decimal


class _Cost(msgspec.Struct):
    total_msats: float | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_sats: float | None = None
    cost: _Cost | float | None = None


class _Completion(msgspec.Struct):
    usage: Usage | None = None


class Chunk(msgspec.Struct):
    """The parts of a ``chat.completion.chunk`` the relay looks at."""

    id: str | None = None
    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None
    error: msgspec.Raw | None = None


_completion_decoder = msgspec.json.Decoder(_Completion)
chunk_decoder = msgspec.json.Decoder(Chunk)


class NotACompletion(ValueError):
    """The body is not a JSON object."""


def completion_usage(body: bytes) -> Usage | None:
    """``usage`` of a non-streaming completion (None when absent or oddly typed), decoded in
    the same pass that checks the body is a JSON object. Raises :class:`NotACompletion`."""
    try:
        return _completion_decoder.decode(body).usage
    except msgspec.DecodeError:
        raise NotACompletion("not valid JSON") from None
    except msgspec.ValidationError:
        pass
    try:  # valid JSON but not the shape we read: only a non-object is fatal
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise NotACompletion("not valid JSON") from None
    if not isinstance(obj, dict):
        raise NotACompletion("not a JSON object")
    return None


def provider_cost_sats(usage: Usage | None, header_msats: str | None) -> Decimal | None:
    """What the provider says it charged: ``usage.cost.total_msats``, ``usage.cost_sats``,
    a bare numeric ``usage.cost`` (sats), else the ``X-Routstr-Cost-Msats`` header."""
    if usage is not None:
        cost = usage.cost
        if isinstance(cost, _Cost) and cost.total_msats is not None:
            return msats_to_sats(cost.total_msats)
        if usage.cost_sats is not None:
            return to_decimal(usage.cost_sats).quantize(Decimal("0.001"))
        if isinstance(cost, float | int) and not isinstance(cost, bool):
            return to_decimal(cost).quantize(Decimal("0.001"))
    if header_msats:
        try:
            return msats_to_sats(Decimal(header_msats.strip()))
        except InvalidOperation:
            return None
    return None
