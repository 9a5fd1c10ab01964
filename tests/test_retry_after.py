"""``Retry-After`` parsing per RFC 9110: delay-seconds or HTTP-date, anything else ignored."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.upstream.retry_after import MAX_DELAY_S, parse_retry_after

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC).timestamp()  # a Monday


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("3", 3.0),
        ("120", 120.0),
        ("007", 7.0),
        (" 5\t", 5.0),  # optional whitespace around a field value
        ("999999999", 999_999_999.0),
        ("2147483648", float(MAX_DELAY_S)),
        ("99999999999", float(MAX_DELAY_S)),
        ("0" * 5000 + "42", 42.0),
    ],
)
def test_delay_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_huge_digit_strings_are_very_large_not_an_error() -> None:
    for n in (4300, 4301, 10_000, 100_000):
        assert parse_retry_after("9" * n) == MAX_DELAY_S


@pytest.mark.parametrize(
    "value",
    [
        "inf",
        "Infinity",
        "-inf",
        "nan",
        "NaN",
        "1e9",
        "1E3",
        "1_0",
        "1.5",
        "1.",
        ".5",
        "-4",
        "+5",
        "0x10",
        "1 0",
        "5s",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: a Unicode digit, not 0-9
        "\u00b2",  # SUPERSCRIPT TWO (str.isdigit() is true for it)
        "\uff15",  # FULLWIDTH DIGIT FIVE
        "\u00a05",  # no-break space is not optional whitespace
        "5\n",
        "\x0b5",
        "",
        "   ",
        "soon",
        "tomorrow",
    ],
)
def test_malformed_values_are_ignored(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_absent_header() -> None:
    assert parse_retry_after(None) is None


def test_imf_fixdate() -> None:
    assert parse_retry_after("Mon, 23 Nov 2026 20:00:42 GMT", now=NOW) == 42.0
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, now=NOW) == 90.0
    assert parse_retry_after("Mon, 23 Nov 2026 19:00:00 GMT", now=NOW) == 0.0  # past: now
    assert parse_retry_after("Mon, 23 Nov 2026 20:00:60 GMT", now=NOW) == 60.0  # leap second


def test_obsolete_rfc850_date_with_two_digit_year() -> None:
    assert parse_retry_after("Monday, 23-Nov-26 20:01:00 GMT", now=NOW) == 60.0
    # 2099 would be more than 50 years ahead: it is 1999, in the past
    assert parse_retry_after("Monday, 23-Nov-99 20:01:00 GMT", now=NOW) == 0.0
    in_2070 = datetime(2070, 11, 23, 20, 0, 0, tzinfo=UTC).timestamp() - NOW
    assert parse_retry_after("Monday, 23-Nov-70 20:00:00 GMT", now=NOW) == in_2070


def test_obsolete_asctime_date() -> None:
    assert parse_retry_after("Mon Nov 23 20:00:05 2026", now=NOW) == 5.0
    now = datetime(2026, 12, 6, 8, 49, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sun Dec  6 08:49:37 2026", now=now) == 37.0


def test_far_future_date_is_capped() -> None:
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == MAX_DELAY_S


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 23 Nov 2026 20:00:42 UTC",  # the zone must be GMT
        "Mon, 23 Nov 2026 20:00:42 +0000",
        "mon, 23 nov 2026 20:00:42 gmt",  # HTTP-date is case-sensitive
        "Mon, 23 Nov 2026 20:00 GMT",
        "Mon, 23 Nov 26 20:00:42 GMT",
        "23 Nov 2026 20:00:42 GMT",
        "Mon,  23 Nov 2026 20:00:42 GMT",
        "Mon, 31 Nov 2026 20:00:42 GMT",  # no such day
        "Mon, 23 Nov 2026 24:00:00 GMT",
        "Mon, 23 Nov 2026 20:60:00 GMT",
        "Mon, 23 Nov 2026 20:00:61 GMT",
        "Mon, 23 Nov 0000 20:00:00 GMT",
        "Mon, 23 Nov 2026 20:00:42 GMT trailing",
        "Mon, \u0662\u0663 Nov 2026 20:00:42 GMT",  # Arabic-Indic digits
        "Mon, 23-Nov-26 20:00:42 GMT",  # RFC 850 form needs the long day name
        "Monday, 23-Nov-2026 20:00:42 GMT",
        "Mon Nov 23 20:00:05 2026 GMT",
        "Mon Nov 6 20:00:05 2026",  # asctime pads a one-digit day with a space
    ],
)
def test_malformed_dates_are_ignored(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@given(st.text(max_size=60))
def test_any_text_gives_none_or_a_bounded_delay(value: str) -> None:
    got = parse_retry_after(value, now=NOW)
    assert got is None or (math.isfinite(got) and 0 <= got <= MAX_DELAY_S)


@given(st.text(alphabet="0123456789", min_size=1, max_size=6000))
def test_any_digit_string_is_a_delay(value: str) -> None:
    digits = value.lstrip("0") or "0"
    # more than 10 digits is above 2**31; fewer are safe for int()
    expected = MAX_DELAY_S if len(digits) > 10 else min(int(digits), MAX_DELAY_S)
    assert parse_retry_after(value) == expected
