"""A Routstr node's ``GET /models`` body -> per-model :class:`~arbstr.money.Rates` and
:class:`~arbstr.config.ModelInfo`.

Each entry's ``sats_pricing`` is in sats **per token** (``prompt``, ``completion``,
``input_cache_read``, ``input_cache_write``); arbstr's rates are sats per 1000 tokens, so they
are scaled by 1000, exactly, in :class:`~decimal.Decimal`. ``request`` is not read: nodes do
not bill it. ``max_cost`` is sats per request (the most the node reserves for one). Used by
price discovery at run time (:mod:`.prices`) and by ``arbstr discover`` (:mod:`.discover`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from arbstr.config import ModelInfo
from arbstr.money import MAX_MSATS, Rates, to_decimal

MAX_COUNT = 10**9  # context lengths and token limits above this are a node's bug
MAX_MODALITIES = 16
MAX_NAME_CHARS = 256  # what a request's model may be (apis.chat.MAX_MODEL_CHARS)


@dataclass(frozen=True, slots=True)
class ModelListing:
    """What one ``GET /models`` body offers: the priced models' rates, and their metadata."""

    rates: dict[str, Rates]
    info: dict[str, ModelInfo]


def _sats(value: object) -> Decimal | None:
    """A price as a finite, non-negative Decimal, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        d = to_decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d < 0:
        return None
    return d


def _per_1k(d: Decimal | None) -> Decimal | None:
    """Sats per token -> sats per 1000 tokens, exactly (a shift of the decimal exponent, so no
    context rounds it); None when the result would not fit a float."""
    if d is None:
        return None
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)  # finite, checked by _sats
    scaled = Decimal((sign, digits, exp + 3))
    return scaled if math.isfinite(float(scaled)) else None


def _msats(value: object) -> int | None:
    """Sats as whole millisats, rounded up (a worst case is never understated); None when odd
    or beyond :data:`MAX_MSATS`."""
    d = _per_1k(_sats(value))
    if d is None or d > MAX_MSATS:
        return None
    return int(d.to_integral_value(rounding=ROUND_CEILING))


def _count(value: object) -> int | None:
    """A positive whole number of tokens (``8192`` or ``8192.0``), at most :data:`MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if not 0 < value <= MAX_COUNT or value != int(value):  # (bounded before int(): 1e999999)
        return None
    return int(value)


def _name(value: object) -> str | None:
    """A model name arbstr could route: a non-empty, printable, bounded, encodable string."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        return None
    return value if value.isprintable() and _encodable(value) else None


def _modalities(architecture: object) -> tuple[str, ...]:
    found = architecture.get("input_modalities") if isinstance(architecture, dict) else None
    if not isinstance(found, list):
        return ()
    names = (m for m in found[:MAX_MODALITIES] if isinstance(m, str) and len(m) <= 32)
    return tuple(dict.fromkeys(m for m in names if m.isprintable() and _encodable(m)))


def _info(entry: dict[str, object], pricing: dict[str, object]) -> ModelInfo:
    top = entry.get("top_provider")
    top = top if isinstance(top, dict) else {}
    context = _count(entry.get("context_length"))
    return ModelInfo(
        max_cost_msats=_msats(pricing.get("max_cost")),
        max_completion_cost_msats=_msats(pricing.get("max_completion_cost")),
        context_length=context if context is not None else _count(top.get("context_length")),
        max_completion_tokens=_count(top.get("max_completion_tokens")),
        input_modalities=_modalities(entry.get("architecture")),
        canonical_slug=_name(entry.get("canonical_slug")),
    )


def parse_models(models_json: bytes) -> ModelListing:
    """Rates and metadata of every priced model in a Routstr ``GET /models`` body, in one pass.

    The body is an OpenAI list (``{"data": [...]}``, or a bare list). Each entry with a string
    ``id`` and a ``sats_pricing`` object whose ``prompt`` and ``completion`` are non-negative
    numbers (sats per token; numeric strings accepted) gives ``Rates`` in sats per 1000 tokens,
    with ``input_cache_read`` / ``input_cache_write`` as the cache rates (absent or odd: the
    prompt rate) and no base fee. Entries without usable prices are skipped; any other odd
    value is ignored on its own (that field becomes None or empty), unknown fields ignored, the
    first entry of a repeated id kept. Raises ``ValueError`` only when the body is not JSON or
    not a model list.
    """
    try:
        doc = json.loads(models_json, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints
        raise ValueError(f"models body is not JSON: {exc}") from None
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError('models body is not a model list (expected {"data": [...]})')
    rates: dict[str, Rates] = {}
    info: dict[str, ModelInfo] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        model, pricing = entry.get("id"), entry.get("sats_pricing")
        if not isinstance(model, str) or not model.strip() or not isinstance(pricing, dict):
            continue
        if model in rates or not _encodable(model):
            continue
        p1k = _per_1k(_sats(pricing.get("prompt")))
        c1k = _per_1k(_sats(pricing.get("completion")))
        if p1k is None or c1k is None:
            continue
        read = _per_1k(_sats(pricing.get("input_cache_read")))
        write = _per_1k(_sats(pricing.get("input_cache_write")))
        rates[model] = Rates.of(p1k, c1k, 0, read, write)
        info[model] = _info(entry, pricing)
    return ModelListing(rates, info)


def parse_sats_pricing(models_json: bytes) -> dict[str, Rates]:
    """The per-model rates of :func:`parse_models` alone."""
    return parse_models(models_json).rates


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return False
    return True
