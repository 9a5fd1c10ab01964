"""The ``Retry-After`` header as RFC 9110 defines it: ``delay-seconds`` or an ``HTTP-date``.

Strict on purpose: a lenient number parser took ``inf``, ``nan`` and ``1e9`` and kept a
provider's breaker open until restart. A value outside the grammar is ignored (None).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

MAX_DELAY_S = 2**31  # larger delays are taken as this (as RFC 9111 does for delta-seconds)

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_IMF_FIXDATE = re.compile(rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_DAY_LONG}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<yy>[0-9]{{2}}) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait (0 to :data:`MAX_DELAY_S`), or None when absent or malformed.
    ``now`` (Unix time) is the reference for an HTTP-date."""
    if value is None:
        return None
    value = value.strip(" \t")  # optional whitespace around a field value
    if value.isascii() and value.isdigit():  # delay-seconds = 1*DIGIT
        digits = value.lstrip("0") or "0"
        if len(digits) > len(str(MAX_DELAY_S)):  # int() refuses over 4300 digits
            return float(MAX_DELAY_S)
        return float(min(int(digits), MAX_DELAY_S))
    ref = time.time() if now is None else now
    when = _http_date(value, ref)
    if when is None:
        return None
    return min(max(0.0, when - ref), float(MAX_DELAY_S))


def _http_date(value: str, now: float) -> float | None:
    """An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) as Unix time."""
    m = _IMF_FIXDATE.fullmatch(value) or _ASCTIME.fullmatch(value)
    if m is not None:
        year = int(m["year"])
    else:
        m = _RFC850.fullmatch(value)
        if m is None:
            return None
        # two-digit year: more than 50 years ahead means the latest such year in the past
        this_year = datetime.fromtimestamp(now, UTC).year
        year = this_year // 100 * 100 + int(m["yy"])
        if year > this_year + 50:
            year -= 100
    second = int(m["second"])
    if second > 60:  # 60 is a leap second
        return None
    try:
        start = datetime(
            year,
            _MONTHS.index(m["month"]) + 1,
            int(m["day"]),
            int(m["hour"]),
            int(m["minute"]),
            tzinfo=UTC,
        )
    except ValueError:  # no such day, hour or minute
        return None
    return start.timestamp() + second
