"""Money as values: exact rates and millisat amounts (the ground floor every layer may use).

Money is exact: rates are kept as :class:`~decimal.Decimal` built from the rate's shortest
decimal spelling, and a request's cost is rounded once, half-up, to the millisatoshi (the
smallest unit Lightning settles). On the request path the cost is integer arithmetic: each
:class:`Rates` also holds its prices as integers over one power of ten, so a cost is a few
multiplications and additions and one floor division. Floats are used only to *rank*
candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

# the most one request can cost, in millisats (10^9 sats): a larger figure is a provider's bug,
# not a charge, and is never summed
MAX_MSATS = 10**12

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
    """A provider's price for one model: sats per 1000 input, output, cache-read and
    cache-write tokens, and a fee per request."""

    input_rate: Decimal
    output_rate: Decimal
    base_fee: Decimal
    # float copies, precomputed, for ranking on the hot path
    input_f: float
    output_f: float
    base_f: float
    # exact integer form: cost in msat = (in * input_n + out * output_n + fee_n) / den
    input_n: int
    output_n: int
    fee_n: int
    den: int
    # prompt tokens read from / written to the provider's cache (both default to input_rate)
    cache_read_rate: Decimal
    cache_write_rate: Decimal
    cache_read_f: float
    cache_write_f: float
    cache_read_n: int
    cache_write_n: int

    @classmethod
    def of(
        cls,
        input_rate: float | int | str | Decimal,
        output_rate: float | int | str | Decimal,
        base_fee: float | int | str | Decimal = 0,
        cache_read_rate: float | int | str | Decimal | None = None,
        cache_write_rate: float | int | str | Decimal | None = None,
    ) -> Rates:
        i, o, b = to_decimal(input_rate), to_decimal(output_rate), to_decimal(base_fee)
        cr = i if cache_read_rate is None else to_decimal(cache_read_rate)
        cw = i if cache_write_rate is None else to_decimal(cache_write_rate)
        values = (i, o, b, cr, cw)
        if not all(d.is_finite() for d in values):
            raise ValueError("rates must be finite numbers")
        if any(d < 0 for d in values):
            raise ValueError("rates must not be negative")
        # -0.0 -> 0.0 (exactly, no context rounding) so a zero cost never prints as "-0.000"
        i, o, b, cr, cw = (d.copy_abs() for d in values)
        # sats per 1000 tokens * tokens = msat, and the fee in msat is 1000 * base_fee: with
        # den = 10**k (k the most decimals any of them needs) every numerator is an int
        fee_msat = b.scaleb(3, context=_EXACT)
        k = max(0, *(-_exponent(d) for d in (i, o, fee_msat, cr, cw)))
        return cls(
            i,
            o,
            b,
            float(i),
            float(o),
            float(b),
            _scaled(i, k),
            _scaled(o, k),
            _scaled(fee_msat, k),
            10**k,
            cr,
            cw,
            float(cr),
            float(cw),
            _scaled(cr, k),
            _scaled(cw, k),
        )


def _exponent(d: Decimal) -> int:
    """The exponent of ``d`` without trailing zeros (``10.0`` -> 1), so equal rates get the same
    integer form."""
    exp = d.normalize(_EXACT).as_tuple().exponent
    assert isinstance(exp, int)  # finite, checked by the caller
    return exp


def _scaled(d: Decimal, k: int) -> int:
    """``d * 10**k`` as an int (exact: k covers every decimal of d)."""
    return int(d.scaleb(k, context=_EXACT))


def format_msats(msats: int) -> str:
    """Whole millisats as sats with exactly three decimals: ``1234`` -> ``"1.234"``,
    ``-1`` -> ``"-0.001"``."""
    sats, rest = divmod(abs(msats), 1000)
    return f"{'-' if msats < 0 else ''}{sats}.{rest:03d}"


def msats_to_sats(msats: int | float | Decimal) -> Decimal:
    return _EXACT.divide(to_decimal(msats), _THOUSAND).quantize(_MSAT, context=_EXACT)


def sats_to_msats(sats: float | int | str | Decimal) -> int:
    """An amount in sats (as written in a config, e.g. ``2.5``) as whole millisats, half-up."""
    exact = _EXACT.multiply(to_decimal(sats), _THOUSAND)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))
