"""Cost arithmetic and token estimation. Pure functions, no I/O.

Money is exact: rates are kept as :class:`~decimal.Decimal` built from the rate's shortest
decimal spelling, and a request's cost is rounded once, half-up, to the millisatoshi (the
smallest unit Lightning settles). Floats are used only to *rank* candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4

_MSAT = Decimal("0.001")
_THOUSAND = Decimal(1000)
# Wide enough that products and sums of finite float rates (exponents within +-330) and token
# counts are exact, and that quantizing a cost of any size to 0.001 cannot overflow; the
# default 28-digit context rounds (double rounding) and raises InvalidOperation on large costs.
_EXACT = Context(prec=2000, rounding=ROUND_HALF_UP)


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """A rate as an exact Decimal: ``0.1`` becomes ``Decimal("0.1")``, not its binary expansion."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


@dataclass(frozen=True, slots=True)
class Rates:
    """A provider's price for one model: sats per 1000 input and output tokens, and a fee
    per request."""

    input_rate: Decimal
    output_rate: Decimal
    base_fee: Decimal
    # float copies, precomputed, for ranking on the hot path
    input_f: float
    output_f: float
    base_f: float

    @classmethod
    def of(
        cls,
        input_rate: float | int | str | Decimal,
        output_rate: float | int | str | Decimal,
        base_fee: float | int | str | Decimal = 0,
    ) -> Rates:
        i, o, b = to_decimal(input_rate), to_decimal(output_rate), to_decimal(base_fee)
        if not (i.is_finite() and o.is_finite() and b.is_finite()):
            raise ValueError("rates must be finite numbers")
        if i < 0 or o < 0 or b < 0:
            raise ValueError("rates must not be negative")
        # -0.0 -> 0.0 (exactly, no context rounding) so a zero cost never prints as "-0.000"
        i, o, b = i.copy_abs(), o.copy_abs(), b.copy_abs()
        return cls(i, o, b, float(i), float(o), float(b))


def cost_sats(rates: Rates, input_tokens: int, output_tokens: int) -> Decimal:
    """Exact cost of a request in sats, rounded half-up to the millisat (3 decimals).

    ``(input_tokens * input_rate + output_tokens * output_rate) / 1000 + base_fee``
    """
    c = _EXACT
    raw = c.add(
        c.multiply(Decimal(input_tokens), rates.input_rate),
        c.multiply(Decimal(output_tokens), rates.output_rate),
    )
    return c.add(c.divide(raw, _THOUSAND), rates.base_fee).quantize(_MSAT, context=c)


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


def format_sats(value: Decimal) -> str:
    """Sats with exactly three decimals (millisat precision), e.g. ``"0.215"``."""
    return str(value.quantize(_MSAT, context=_EXACT))


def msats_to_sats(msats: int | float | Decimal) -> Decimal:
    return _EXACT.divide(to_decimal(msats), _THOUSAND).quantize(_MSAT, context=_EXACT)
