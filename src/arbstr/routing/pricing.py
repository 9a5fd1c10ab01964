"""Cost of a request and token estimates: pure functions, no I/O. Exact costs are integer
millisats (see :mod:`arbstr.money`); floats only rank candidates."""

from __future__ import annotations

import math

from arbstr.money import Rates

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4


def cost_msats(
    rates: Rates,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> int:
    """Exact cost of a request in millisats, rounded half-up once.

    ``input_tokens`` is every prompt token, as OpenAI's ``usage.prompt_tokens`` counts them:
    ``cached_tokens`` of them are priced at the cache-read rate and ``cache_write_tokens`` at
    the cache-write rate (together at most ``input_tokens``), the rest at the input rate;
    plus ``output_tokens * output_rate`` and ``1000 * base_fee`` msat (rates per 1000 tokens).
    """
    den = rates.den
    num = input_tokens * rates.input_n + output_tokens * rates.output_n + rates.fee_n
    if cached_tokens or cache_write_tokens:  # each clamped to the prompt tokens left
        room = input_tokens if input_tokens > 0 else 0
        c = cached_tokens
        c = c if 0 <= c <= room else (room if c > 0 else 0)
        room -= c
        w = cache_write_tokens
        w = w if 0 <= w <= room else (room if w > 0 else 0)
        num += c * (rates.cache_read_n - rates.input_n) + w * (rates.cache_write_n - rates.input_n)
    return (2 * num + den) // (2 * den)


def estimate_cost(
    rates: Rates, input_tokens: float, output_tokens: float, cached_tokens: float = 0.0
) -> float:
    """Approximate cost used to rank candidates before the response is known (``cached_tokens``
    of the ``input_tokens`` at the cache-read rate)."""
    if not cached_tokens:
        cost = input_tokens * rates.input_f + output_tokens * rates.output_f
        return cost / 1000.0 + rates.base_f
    cached = min(max(cached_tokens, 0.0), max(input_tokens, 0.0))
    # (the uncached part on its own: input * rate - cached * rate would cancel catastrophically)
    cost = (input_tokens - cached) * rates.input_f + cached * rates.cache_read_f
    return (cost + output_tokens * rates.output_f) / 1000.0 + rates.base_f


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
