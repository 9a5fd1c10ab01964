"""Token counts and provider-reported cost from upstream answers, read leniently.

A billed answer must reach the client whatever its ``usage`` says: each field is read on its
own, and a missing, mistyped or absurd one becomes None (with a warning when it was present),
so the caller falls back to its estimates. Only a body that is not a JSON object is not a
completion. Costs are integer millisats within :data:`MAX_MSATS`, converted exactly from
the decimal spelling of the number (no binary float arithmetic).

Well-typed ``usage`` (the normal case) is decoded in the same pass as the body; only when a
field has an unexpected type is ``usage`` decoded again, field by field.
"""

from __future__ import annotations

import logging
import re

import msgspec

from arbstr.money import MAX_MSATS
from arbstr.records import MAX_TOKENS

log = logging.getLogger("arbstr.upstream")

COST_HEADER = "X-Routstr-Cost-Msats"

ABSENT = msgspec.Raw()  # default of a raw field the JSON did not have
NULL = msgspec.Raw(b"null")
_DECIMAL = re.compile(r"([0-9]{1,30})(?:\.([0-9]{1,30}))?")
_BAD = object()  # a field value that is not valid JSON (e.g. a number out of float range)


class Usage(msgspec.Struct, frozen=True, gc=False):
    """What a provider's ``usage`` said, each field validated (None: absent or unusable)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_msats: int | None = None  # usage.cost.total_msats
    sats_msats: int | None = None  # usage.cost_sats, else a bare numeric usage.cost, in msats
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    # prompt tokens written to the provider's cache (Anthropic cache_creation_input_tokens);
    # like cached_tokens, part of prompt_tokens
    cache_write_tokens: int | None = None


# The usual shape, decoded in one pass; a ValidationError sends us to the field-by-field path.
class _Cost(msgspec.Struct):
    total_msats: int | float | str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class UsageFields(msgspec.Struct):
    """``usage`` as providers usually type it, for decoders that read it in their own pass
    (then :func:`usage_from`); one that does not fit is read with :func:`read_usage`."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_sats: int | float | None = None
    cost: _Cost | int | float | None = None
    prompt_tokens_details: _Details | None = None


class _TypedCompletion(msgspec.Struct):
    usage: UsageFields | None = None


# Any shape: each field kept as raw JSON and decoded on its own.
class _RawCompletion(msgspec.Struct):
    usage: msgspec.Raw = ABSENT


class _RawUsage(msgspec.Struct):
    prompt_tokens: msgspec.Raw = ABSENT
    completion_tokens: msgspec.Raw = ABSENT
    cost_sats: msgspec.Raw = ABSENT
    cost: msgspec.Raw = ABSENT
    prompt_tokens_details: msgspec.Raw = ABSENT


class _RawCost(msgspec.Struct):
    total_msats: msgspec.Raw = ABSENT


class _RawDetails(msgspec.Struct):
    cached_tokens: msgspec.Raw = ABSENT


_decode_typed_completion = msgspec.json.Decoder(_TypedCompletion).decode
_decode_typed = msgspec.json.Decoder(UsageFields).decode
_decode_raw_completion = msgspec.json.Decoder(_RawCompletion).decode
_decode_raw_usage = msgspec.json.Decoder(_RawUsage).decode
_decode_raw_cost = msgspec.json.Decoder(_RawCost).decode
_decode_raw_details = msgspec.json.Decoder(_RawDetails).decode
_decode_any = msgspec.json.Decoder().decode

_Where = tuple[str | None, str | None]  # (provider, request_id), for the warnings


class NotACompletion(ValueError):
    """The body is not a JSON object."""


def completion_usage(
    body: bytes, provider: str | None = None, request_id: str | None = None
) -> Usage | None:
    """``usage`` of a non-streaming completion, read in the same pass that checks the body is
    a JSON object (None when absent or not an object). Raises :class:`NotACompletion`."""
    where = (provider, request_id)
    try:
        typed = _decode_typed_completion(body).usage
    except msgspec.ValidationError:
        pass  # not an object, or an unexpected type somewhere in usage
    except msgspec.DecodeError:
        raise NotACompletion("not valid JSON") from None
    else:
        return None if typed is None else _from_typed(typed, where)
    try:
        raw = _decode_raw_completion(body).usage
    except msgspec.DecodeError:
        raise NotACompletion("not a JSON object") from None
    return _from_raw(raw, where)


def read_usage(
    raw: msgspec.Raw, *, provider: str | None = None, request_id: str | None = None
) -> Usage | None:
    """A raw JSON ``usage`` value of any shape; None when absent, null or not an object."""
    if not raw or raw == NULL:
        return None
    where = (provider, request_id)
    try:
        return _from_typed(_decode_typed(raw), where)
    except msgspec.DecodeError:
        return _from_raw(raw, where)


def usage_from(
    fields: UsageFields, *, provider: str | None = None, request_id: str | None = None
) -> Usage:
    """A well-typed ``usage`` checked: counts and amounts outside their bounds become None."""
    return _from_typed(fields, (provider, request_id))


def provider_cost_msats(
    usage: Usage | None,
    header: str | None,
    *,
    provider: str | None = None,
    request_id: str | None = None,
) -> int | None:
    """What the provider says it charged, in millisats: ``usage.cost.total_msats``, else the
    ``X-Routstr-Cost-Msats`` header, else ``usage.cost_sats`` / a bare ``usage.cost`` (sats,
    floored to the millisat); None when none of them is usable."""
    if usage is not None and usage.total_msats is not None:
        return usage.total_msats
    if header:
        if len(header) <= 12 and header.isdigit() and header.isascii():
            return int(header)  # the usual case: below 10**12 msats
        msats = _msats(header.strip(), COST_HEADER, (provider, request_id))
        if msats is not None:
            return msats
    return usage.sats_msats if usage is not None else None


# -- usage objects ----------------------------------------------------------------------------


def _from_typed(u: UsageFields, where: _Where) -> Usage:
    # (the common cases inline: this runs for every completion)
    prompt, completion, cost, cost_sats = u.prompt_tokens, u.completion_tokens, u.cost, u.cost_sats
    if prompt is not None and not 0 <= prompt <= MAX_TOKENS:
        prompt = _count(prompt, "usage.prompt_tokens", where)
    if completion is not None and not 0 <= completion <= MAX_TOKENS:
        completion = _count(completion, "usage.completion_tokens", where)
    details = u.prompt_tokens_details
    cached = None if details is None else details.cached_tokens
    if cached is not None and not 0 <= cached <= MAX_TOKENS:
        cached = _count(cached, "usage.prompt_tokens_details.cached_tokens", where)
    if cost is None and cost_sats is None:
        return Usage(prompt, completion, cached_tokens=cached)
    total = bare = None
    if isinstance(cost, _Cost):
        total = _msats(cost.total_msats, "usage.cost.total_msats", where)
    elif cost is not None:
        bare = _sats(cost, "usage.cost", where)
    sats = _sats(cost_sats, "usage.cost_sats", where)
    return Usage(prompt, completion, total, bare if sats is None else sats, cached)


def _from_raw(raw: msgspec.Raw, where: _Where) -> Usage | None:
    if not raw or raw == NULL:
        return None
    try:
        f = _decode_raw_usage(raw)
    except msgspec.DecodeError:
        _ignored("usage", "not an object", where)
        return None
    total = bare = None
    if f.cost and f.cost != NULL:
        try:
            total_raw = _decode_raw_cost(f.cost).total_msats
        except msgspec.DecodeError:  # not an object: a bare amount in sats, or junk
            bare = _sats(_value(f.cost), "usage.cost", where)
        else:
            total = _msats(_value(total_raw), "usage.cost.total_msats", where)
    sats = _sats(_value(f.cost_sats), "usage.cost_sats", where)
    return Usage(
        _count(_value(f.prompt_tokens), "usage.prompt_tokens", where),
        _count(_value(f.completion_tokens), "usage.completion_tokens", where),
        total,
        bare if sats is None else sats,
        _raw_cached(f.prompt_tokens_details, where),
    )


def _raw_cached(raw: msgspec.Raw, where: _Where) -> int | None:
    """``prompt_tokens_details.cached_tokens`` from a raw details value of any shape."""
    if not raw or raw == NULL:
        return None
    field = "usage.prompt_tokens_details.cached_tokens"
    try:
        cached = _decode_raw_details(raw).cached_tokens
    except msgspec.DecodeError:
        _ignored("usage.prompt_tokens_details", "not an object", where)
        return None
    return _count(_value(cached), field, where)


def _value(raw: msgspec.Raw) -> object:
    """The JSON value (None when absent or null, :data:`_BAD` when not decodable)."""
    if not raw:
        return None
    try:
        return _decode_any(raw)
    except msgspec.DecodeError:
        return _BAD


# -- fields -----------------------------------------------------------------------------------


def _count(value: object, field: str, where: _Where) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        if 0 <= value <= MAX_TOKENS:
            return value
        _ignored(field, f"outside 0 to {MAX_TOKENS}", where)
    else:
        _ignored(field, _not(value, "a whole number"), where)
    return None


def _msats(value: object, field: str, where: _Where) -> int | None:
    """A millisat amount (a JSON number or a decimal string), rounded half-up to the msat."""
    if value is None:
        return None
    msats: int | None = None
    if type(value) is int:
        msats = value
    elif type(value) is float:  # finite: JSON has no NaN or infinities
        msats = _scaled(value, 0, half_up=True) if 0 <= value <= MAX_MSATS else -1
    elif isinstance(value, str):
        m = _DECIMAL.fullmatch(value)
        if m is None:
            _ignored(field, "not a decimal number", where)
            return None
        msats = _digits(m[1], m[2] or "", 0, half_up=True)
    return _bounded(msats, value, field, where)


def _sats(value: object, field: str, where: _Where) -> int | None:
    """A JSON number of sats as millisats, floored (a last-resort figure: never overstated)."""
    if value is None:
        return None
    msats: int | None = None
    if type(value) is int:
        msats = value * 1000
    elif type(value) is float:
        msats = _scaled(value, 3, half_up=False) if 0 <= value <= MAX_MSATS / 1000 else -1
    return _bounded(msats, value, field, where)


def _scaled(value: float, shift: int, *, half_up: bool) -> int:
    """``value * 10**shift`` (``shift`` is 0 or 3) to a whole number, exactly as the float's
    shortest decimal spelling says (``1.005`` sats is 1005 msats). ``value`` is in [0, 10**12],
    and in [0, 10**9] when ``shift`` is 3."""
    scale: int = 10**shift
    whole = round(value * scale)
    if whole / scale == value:
        # the usual case, a whole number of msats. Exact: two numbers with at most three
        # decimals differ by 0.001 at least, far more than the float spacing below 10**9
        return whole
    text = repr(value)  # spelt without an exponent from 1e-4 up
    if "e" in text:
        return 0  # below 1e-4, which is 0 either way
    whole_part, _, frac = text.partition(".")
    return _digits(whole_part, frac, shift, half_up=half_up)


def _digits(whole: str, frac: str, shift: int, *, half_up: bool) -> int:
    """The decimal ``whole.frac`` times ``10**shift``, floored or rounded half-up."""
    frac = frac.ljust(shift + 1, "0")
    n = int(whole + frac[:shift])
    return n + 1 if half_up and frac[shift] >= "5" else n


def _bounded(msats: int | None, value: object, field: str, where: _Where) -> int | None:
    """``msats`` if within bounds (None: ``value`` was not a number at all)."""
    if msats is not None and 0 <= msats <= MAX_MSATS:
        return msats
    if msats is None:
        _ignored(field, _not(value, "a number"), where)
    else:
        _ignored(field, f"outside 0 to {MAX_MSATS} msats", where)
    return None


_KINDS = {
    bool: "a boolean",
    float: "a fraction",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _not(value: object, wanted: str) -> str:
    """Why a value of the wrong kind was ignored, without the value itself."""
    if value is _BAD:
        return "a number beyond any float"
    return f"{_KINDS.get(type(value), 'an odd value')}, not {wanted}"


def _ignored(field: str, reason: str, where: _Where) -> None:
    provider, request_id = where
    log.warning(
        "ignoring %s from provider %s: %s",
        field,
        provider or "(unknown)",
        reason,
        extra={"request_id": request_id} if request_id else None,
    )
