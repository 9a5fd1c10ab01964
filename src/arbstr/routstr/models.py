"""A Routstr node's ``GET /models`` body -> per-model :class:`~arbstr.money.Rates`.

Each entry's ``sats_pricing`` = ``{"prompt", "completion", "request", ...}`` is in sats **per
token** (``request``: sats per request); arbstr's rates are sats per 1000 tokens, so prompt and
completion are scaled by 1000, exactly, in :class:`~decimal.Decimal`. Used by price discovery
at run time (:mod:`.prices`) and by ``arbstr discover`` (:mod:`.discover`).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation

from arbstr.money import Rates, to_decimal


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


def _per_1k(d: Decimal) -> Decimal | None:
    """Sats per token -> sats per 1000 tokens, exactly (a shift of the decimal exponent, so no
    context rounds it); None when the result would not fit a float."""
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)  # finite, checked by _sats
    scaled = Decimal((sign, digits, exp + 3))
    return scaled if math.isfinite(float(scaled)) else None


def parse_sats_pricing(models_json: bytes) -> dict[str, Rates]:
    """Per-model rates from a Routstr ``GET /models`` body.

    The body is an OpenAI list (``{"data": [...]}``, or a bare list). Each entry with a string
    ``id`` and a ``sats_pricing`` object whose ``prompt`` and ``completion`` are non-negative
    numbers (sats per token; numeric strings accepted) gives ``Rates`` in sats per 1000 tokens,
    with ``request`` (sats per request, absent = 0) as the base fee. Entries without
    ``sats_pricing`` or with odd values are skipped, unknown fields ignored, the first entry of a
    repeated id kept. Raises ``ValueError`` only when the body is not JSON or not a model list.
    """
    try:
        doc = json.loads(models_json, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints
        raise ValueError(f"models body is not JSON: {exc}") from None
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError('models body is not a model list (expected {"data": [...]})')
    out: dict[str, Rates] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        model, pricing = entry.get("id"), entry.get("sats_pricing")
        if not isinstance(model, str) or not model.strip() or not isinstance(pricing, dict):
            continue
        if model in out or not _encodable(model):
            continue
        prompt, completion = _sats(pricing.get("prompt")), _sats(pricing.get("completion"))
        fee = pricing.get("request")
        request = _sats(0 if fee is None else fee)
        if prompt is None or completion is None or request is None:
            continue
        p1k, c1k = _per_1k(prompt), _per_1k(completion)
        if p1k is None or c1k is None or not math.isfinite(float(request)):
            continue
        out[model] = Rates.of(p1k, c1k, request)
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return False
    return True
