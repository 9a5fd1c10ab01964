"""Cost arithmetic and token estimation (arbstr.routing.pricing): exactness against rationals."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.money import Rates, format_msats, msats_to_sats, to_decimal
from arbstr.routing.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    cost_msats,
    estimate_cost,
    estimate_input_tokens,
    estimate_output_tokens,
)

Rate = float | int

# Rates as people write them: integers, and decimals with up to 6 places (as floats, so
# their repr is the decimal spelling), plus arbitrary finite non-negative floats.
ints = st.integers(min_value=0, max_value=10**9)
six_decimals = st.integers(min_value=0, max_value=10**12).map(lambda n: n / 10**6)
any_floats = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
rates_st: st.SearchStrategy[Rate] = st.one_of(ints, six_decimals, any_floats)
tokens = st.integers(min_value=0, max_value=10**7)


def exact(value: Rate) -> Fraction:
    """The rate's value as written: the decimal spelling of a float, not its binary value."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def half_up_msat(value: Fraction) -> Fraction:
    assert value >= 0
    return Fraction(math.floor(value * 1000 + Fraction(1, 2)), 1000)


def expected_cost(i: Rate, o: Rate, b: Rate, tin: int, tout: int) -> Fraction:
    return half_up_msat((tin * exact(i) + tout * exact(o)) / 1000 + exact(b))


def cost_sats(rates: Rates, tin: int, tout: int) -> Decimal:
    """The exact cost in sats, read from the integer millisats arbstr computes."""
    return Decimal(format_msats(cost_msats(rates, tin, tout)))


# --- cost in sats --------------------------------------------------------------------------


@given(i=rates_st, o=rates_st, b=rates_st, tin=tokens, tout=tokens)
def test_cost_equals_exact_rational_rounded_half_up(
    i: Rate, o: Rate, b: Rate, tin: int, tout: int
) -> None:
    cost = cost_sats(Rates.of(i, o, b), tin, tout)
    assert Fraction(cost) == expected_cost(i, o, b, tin, tout)
    assert cost.as_tuple().exponent == -3  # always millisat precision


@given(i=rates_st, o=rates_st, b=rates_st, tin=tokens, tout=tokens)
def test_integer_msat_cost_is_the_exact_cost(
    i: Rate, o: Rate, b: Rate, tin: int, tout: int
) -> None:
    msats = cost_msats(Rates.of(i, o, b), tin, tout)
    assert isinstance(msats, int)
    assert Fraction(msats, 1000) == expected_cost(i, o, b, tin, tout)


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_format_msats_matches_the_decimal(msats: int) -> None:
    text = format_msats(msats)
    assert re.fullmatch(r"-?\d+\.\d{3}", text), text
    assert Fraction(Decimal(text)) == Fraction(msats, 1000)


def test_integer_form_of_tiny_and_huge_rates() -> None:
    tiny = Rates.of(1e-300, 0, 0)
    assert tiny.den == 10**300 and tiny.input_n == 1
    assert cost_msats(tiny, 10**7, 0) == 0
    huge = Rates.of(1e300, 0, 0.001)
    assert huge.den == 1 and huge.fee_n == 1
    assert cost_msats(huge, 1, 0) == 10**300 + 1


def test_cost_examples() -> None:
    # the README example provider: 10 in, 30 out, base fee 1
    assert cost_sats(Rates.of(10, 30, 1), 1000, 1000) == Decimal("41.000")
    assert cost_sats(Rates.of(10, 30, 1), 0, 0) == Decimal("1.000")
    assert cost_sats(Rates.of(1.5, 6), 100, 200) == Decimal("1.350")
    # 0.1 is the decimal 0.1, not 0.1000000000000000055...
    assert cost_sats(Rates.of(0.1, 0.2), 5, 0) == Decimal("0.001")  # 0.0005 rounds up
    assert cost_sats(Rates.of(0.1, 0.2), 4, 0) == Decimal("0.000")  # 0.0004 rounds down
    assert cost_sats(Rates.of(5.0, 15.0, 0.0), 4, 7) == Decimal("0.125")


def test_cost_has_no_double_rounding() -> None:
    # exact value is 0.00049999999999999999990000000000000..., just under half a millisat;
    # rounding first to 28 significant digits (the default Decimal context) would give 0.0005
    # and then round half-up to 0.001.
    i, o = 0.4999999999999999, 9.999999999999999e-17
    assert expected_cost(i, o, 0, 1, 1) == 0
    assert cost_sats(Rates.of(i, o), 1, 1) == Decimal("0.000")


@pytest.mark.parametrize(
    ("i", "o", "tin", "tout"),
    [(1e30, 0, 10**7, 0), (1e300, 1e-300, 10**7, 10**7), (0, 1.7976931348623157e308, 0, 10**7)],
)
def test_cost_of_huge_rates_is_exact_not_an_error(i: float, o: float, tin: int, tout: int) -> None:
    cost = cost_sats(Rates.of(i, o), tin, tout)
    assert Fraction(cost) == expected_cost(i, o, 0, tin, tout)


@given(i=ints, o=ints, t1=tokens, t2=tokens, u1=tokens, u2=tokens, fee=st.integers(0, 10**6))
def test_cost_is_additive_for_integer_rates(
    i: int, o: int, t1: int, t2: int, u1: int, u2: int, fee: int
) -> None:
    # integer rates give costs with at most 3 decimals, so no rounding happens at all
    r = Rates.of(i, o)
    assert cost_sats(r, t1 + t2, u1 + u2) == cost_sats(r, t1, u1) + cost_sats(r, t2, u2)
    with_fee = Rates.of(i, o, Decimal(fee) / 1000)
    assert cost_sats(with_fee, t1, u1) == cost_sats(r, t1, u1) + Decimal(fee) / 1000


@settings(max_examples=50)
@given(i=rates_st, o=rates_st, b=rates_st, tin=tokens, tout=tokens, more=tokens)
def test_cost_is_monotonic_in_tokens(
    i: Rate, o: Rate, b: Rate, tin: int, tout: int, more: int
) -> None:
    r = Rates.of(i, o, b)
    base = cost_sats(r, tin, tout)
    assert cost_sats(r, tin + more, tout) >= base
    assert cost_sats(r, tin, tout + more) >= base
    assert base >= cost_sats(r, 0, 0) == cost_sats(Rates.of(0, 0, b), tin, tout)


@settings(max_examples=50)
@given(i=rates_st, o=rates_st, b=rates_st, tin=tokens, tout=tokens, extra=six_decimals)
def test_cost_is_monotonic_in_rates(
    i: Rate, o: Rate, b: Rate, tin: int, tout: int, extra: float
) -> None:
    cost = cost_sats(Rates.of(i, o, b), tin, tout)
    bump = Decimal(repr(extra))
    assert cost_sats(Rates.of(to_decimal(i) + bump, o, b), tin, tout) >= cost
    assert cost_sats(Rates.of(i, to_decimal(o) + bump, b), tin, tout) >= cost
    assert cost_sats(Rates.of(i, o, to_decimal(b) + bump), tin, tout) >= cost


@given(i=rates_st, o=rates_st, b=rates_st, tin=tokens, tout=tokens)
def test_estimate_cost_ranks_like_the_exact_cost(
    i: Rate, o: Rate, b: Rate, tin: int, tout: int
) -> None:
    r = Rates.of(i, o, b)
    exact_value = (tin * exact(i) + tout * exact(o)) / 1000 + exact(b)
    assert estimate_cost(r, tin, tout) == pytest.approx(float(exact_value), rel=1e-9, abs=1e-9)


# --- Rates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("bad", [-1, -0.001, -1e-300, Decimal("-5"), "-2"])
def test_rates_of_rejects_negatives(position: int, bad: float | Decimal | str) -> None:
    args: list[float | Decimal | str] = [1, 2, 3]
    args[position] = bad
    with pytest.raises(ValueError, match="negative"):
        Rates.of(*args)


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("bad", [math.inf, math.nan, "Infinity", "NaN"])
def test_rates_of_rejects_non_finite(position: int, bad: float | str) -> None:
    args: list[float | str] = [1, 2, 3]
    args[position] = bad
    with pytest.raises(ValueError, match="finite"):
        Rates.of(*args)


def test_rates_of_keeps_decimal_spelling_and_float_copies() -> None:
    r = Rates.of(0.1, "2.5", Decimal("0.001"))
    assert (r.input_rate, r.output_rate, r.base_fee) == (
        Decimal("0.1"),
        Decimal("2.5"),
        Decimal("0.001"),
    )
    assert (r.input_f, r.output_f, r.base_f) == (0.1, 2.5, 0.001)
    assert Rates.of(7, 8).base_fee == 0


def test_negative_zero_rates_do_not_print_a_negative_cost() -> None:
    r = Rates.of(-0.0, -0.0, -0.0)
    assert format_msats(cost_msats(r, 10, 10)) == "0.000"
    assert not r.input_rate.is_signed()


def test_to_decimal_uses_the_shortest_spelling_of_floats() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(1e-7) == Decimal("1E-7")
    assert to_decimal(3) == Decimal(3)
    assert to_decimal("1.50") == Decimal("1.50")
    d = Decimal("9.99")
    assert to_decimal(d) is d


# --- msats_to_sats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msats", "sats"),
    [
        (0, "0.000"),
        (1, "0.001"),
        (125, "0.125"),
        (1_234_567, "1234.567"),
        (0.5, "0.001"),  # half a millisat rounds up
        (0.4, "0.000"),
        (Decimal("1500"), "1.500"),
    ],
)
def test_msats_to_sats(msats: int | float | Decimal, sats: str) -> None:
    result = msats_to_sats(msats)
    assert result == Decimal(sats)
    assert str(result) == sats


@given(st.integers(min_value=0, max_value=10**18))
def test_msats_to_sats_is_exact_for_integers(msats: int) -> None:
    assert Fraction(msats_to_sats(msats)) == Fraction(msats, 1000)


# --- token estimation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chars", "tokens"), [(0, 1), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (4000, 1000)]
)
def test_estimate_input_tokens_examples(chars: int, tokens: int) -> None:
    assert estimate_input_tokens(chars) == tokens


@given(st.integers(min_value=0, max_value=10**9))
def test_estimate_input_tokens_is_chars_over_4_rounded_up_min_1(chars: int) -> None:
    assert estimate_input_tokens(chars) == max(1, math.ceil(Fraction(chars, 4)))


@given(
    max_tokens=st.integers(min_value=1, max_value=10**6),
    input_tokens=st.integers(min_value=1, max_value=10**6),
    ratio=st.none() | st.floats(min_value=0.01, max_value=100),
)
def test_max_tokens_wins(max_tokens: int, input_tokens: int, ratio: float | None) -> None:
    assert estimate_output_tokens(max_tokens, input_tokens, ratio) == max_tokens


def test_learned_ratio_then_default() -> None:
    assert estimate_output_tokens(None, 100, 0.5) == 50
    assert estimate_output_tokens(None, 100, 2.25) == 225
    assert estimate_output_tokens(0, 100, 0.5) == 50  # max_tokens 0 is no max
    assert estimate_output_tokens(None, 10, 0.001) == 1  # at least one token
    assert estimate_output_tokens(None, 100, None) == DEFAULT_OUTPUT_TOKENS == 256
    assert estimate_output_tokens(None, 100, 0.0) == 256
    assert estimate_output_tokens(None, 100, -1.0) == 256


@pytest.mark.parametrize("ratio", [math.inf, math.nan])
def test_non_finite_learned_ratio_falls_back_to_default(ratio: float) -> None:
    assert estimate_output_tokens(None, 100, ratio) == 256


@given(
    input_tokens=st.integers(min_value=1, max_value=10**6),
    ratio=st.floats(min_value=1e-6, max_value=1e3),
)
def test_learned_ratio_estimate(input_tokens: int, ratio: float) -> None:
    assert estimate_output_tokens(None, input_tokens, ratio) == max(1, round(input_tokens * ratio))


# --- cached prompt tokens ------------------------------------------------------------------


def decimal_reference(
    r: Rates, tin: int, tout: int, cached: int, written: int
) -> Decimal:  # the bill as a node computes it, in exact Decimal arithmetic, half-up once
    from decimal import ROUND_HALF_UP, Context

    ctx = Context(prec=4000, rounding=ROUND_HALF_UP)
    cached = min(cached, tin)
    written = min(written, tin - cached)
    total = ctx.add(
        ctx.add(
            ctx.multiply(Decimal(tin - cached - written), r.input_rate),
            ctx.multiply(Decimal(cached), r.cache_read_rate),
        ),
        ctx.add(
            ctx.multiply(Decimal(written), r.cache_write_rate),
            ctx.multiply(Decimal(tout), r.output_rate),
        ),
    )
    msats = ctx.add(total, ctx.multiply(r.base_fee, Decimal(1000)))
    return msats.quantize(Decimal(1), context=ctx)


cache_counts = st.integers(min_value=0, max_value=2 * 10**7)


@given(
    i=rates_st,
    o=rates_st,
    b=rates_st,
    cr=rates_st,
    cw=rates_st,
    tin=tokens,
    tout=tokens,
    cached=cache_counts,
    written=cache_counts,
)
def test_cached_cost_is_exact_against_a_decimal_reference(
    i: Rate, o: Rate, b: Rate, cr: Rate, cw: Rate, tin: int, tout: int, cached: int, written: int
) -> None:
    r = Rates.of(i, o, b, cr, cw)
    msats = cost_msats(r, tin, tout, cached, written)
    assert isinstance(msats, int)
    assert msats == int(decimal_reference(r, tin, tout, cached, written))


@given(i=rates_st, o=rates_st, cr=rates_st, tin=tokens, tout=tokens, cached=cache_counts)
def test_cached_tokens_are_priced_at_the_cache_read_rate(
    i: Rate, o: Rate, cr: Rate, tin: int, tout: int, cached: int
) -> None:
    r = Rates.of(i, o, 0, cr)
    c = min(cached, tin)
    expected = half_up_msat(((tin - c) * exact(i) + c * exact(cr) + tout * exact(o)) / 1000)
    assert Fraction(cost_msats(r, tin, tout, cached), 1000) == expected
    # the cache rate defaults to the input rate: then caching changes nothing
    plain = Rates.of(i, o)
    assert cost_msats(plain, tin, tout, cached) == cost_msats(plain, tin, tout)


@given(
    i=rates_st,
    o=rates_st,
    cr=rates_st,
    cw=rates_st,
    tin=tokens,
    tout=tokens,
    cached=cache_counts,
    written=cache_counts,
    more=st.integers(min_value=0, max_value=10**6),
)
def test_cached_cost_is_monotonic(
    i: Rate,
    o: Rate,
    cr: Rate,
    cw: Rate,
    tin: int,
    tout: int,
    cached: int,
    written: int,
    more: int,
) -> None:
    r = Rates.of(i, o, 0, cr, cw)
    cost = cost_msats(r, tin, tout, cached, written)
    assert cost_msats(r, tin, tout + more, cached, written) >= cost
    # one more prompt token costs at least the cheapest of the three prompt rates: never less
    assert cost_msats(r, tin + more, tout, cached, written) >= cost
    # a cached token instead of an uncached one: cheaper exactly when the cache rate is
    c = min(cached, tin)
    w = min(written, tin - c)
    if c + w < tin:
        moved = cost_msats(r, tin, tout, c + 1, w)
        assert moved <= cost if exact(cr) <= exact(i) else moved >= cost


def test_cached_tokens_worked_examples() -> None:
    # 69 prompt tokens, 60 of them read from the cache at a tenth of the input rate
    r = Rates.of(10, 30, 0, 1, Decimal("12.5"))
    assert cost_msats(r, 69, 20) == 69 * 10 + 20 * 30
    assert cost_msats(r, 69, 20, 60) == 9 * 10 + 60 * 1 + 20 * 30
    assert cost_msats(r, 69, 20, 60, 9) == 773  # 60 * 1 + 9 * 12.5 + 20 * 30 = 772.5, half-up
    # more cached (or written) than prompt tokens: clamped, never a negative uncached count
    assert cost_msats(r, 10, 0, 50) == 10 * 1
    assert cost_msats(r, 10, 0, 4, 50) == 4 * 1 + 6 * 12.5
    assert cost_msats(r, 10, 0, -5, -5) == cost_msats(r, 10, 0)
    assert r.cache_read_rate == 1 and r.cache_write_rate == Decimal("12.5")
    assert (r.cache_read_f, r.cache_write_f) == (1.0, 12.5)
    plain = Rates.of(7, 8)
    assert plain.cache_read_rate == plain.cache_write_rate == plain.input_rate == 7


@given(i=rates_st, o=rates_st, cr=rates_st, tin=tokens, tout=tokens, cached=cache_counts)
def test_estimate_cost_with_cached_tokens_ranks_like_the_exact_cost(
    i: Rate, o: Rate, cr: Rate, tin: int, tout: int, cached: int
) -> None:
    r = Rates.of(i, o, 0, cr)
    c = min(cached, tin)
    exact_value = ((tin - c) * exact(i) + c * exact(cr) + tout * exact(o)) / 1000
    est = estimate_cost(r, tin, tout, cached)
    assert est == pytest.approx(float(exact_value), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("field", ["cache_read_rate", "cache_write_rate"])
@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), "-0.5"])
def test_bad_cache_rates_are_refused(field: str, value: float | str) -> None:
    with pytest.raises(ValueError, match="rates must"):
        Rates.of(1, 1, **{field: value})
