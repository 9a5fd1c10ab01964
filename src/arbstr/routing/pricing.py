"""Cost of a request and token estimates: pure functions, no I/O. Exact costs are integer
millisats (see :mod:`arbstr.money`); floats only rank candidates."""

from __future__ import annotations

import math

from arbstr.money import Rates

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4


def cost_msats(rates: Rates, input_tokens: int, output_tokens: int) -> int:
    """Exact cost of a request in millisats, rounded half-up: what :func:`cost_sats` is, x1000.

    ``input_tokens * input_rate + output_tokens * output_rate + 1000 * base_fee`` msat
    (rates are sats per 1000 tokens).
    """
    den = rates.den
    num = input_tokens * rates.input_n + output_tokens * rates.output_n + rates.fee_n
    return (2 * num + den) // (2 * den)


def estimate_cost(rates: Rates, input_tokens: float, output_tokens: float) -> float:
    """Approximate cost used to rank candidates before the response is known."""
    return (input_tokens * rates.input_f + output_tokens * rates.output_f) / 1000.0 + rates.base_f


def estimate_input_tokens(text_chars: int) -> int:
    """≈ chars / 4, rounded up, at least 1."""
    return max(1, -(-text_chars // CHARS_PER_TOKEN))


def estimate_output_tokens(
    max_tokens: int | None, input_tokens: int, learned_ratio: float | None
) -> int:
    """``max_tokens`` when the client gave one, else the learned output/input ratio, else 256."""
    if max_tokens is not None and max_tokens > 0:
        return max_tokens
    if learned_ratio is not None and learned_ratio > 0 and math.isfinite(learned_ratio):
        return max(1, round(input_tokens * learned_ratio))
    return DEFAULT_OUTPUT_TOKENS
