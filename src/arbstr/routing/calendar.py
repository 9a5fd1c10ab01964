"""Budget windows on the UTC calendar: the day, ISO week (from Monday) or month a moment is in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arbstr.config import Period


def window(per: Period, now: datetime) -> tuple[datetime, datetime]:
    """``(start, reset)`` of the ``per`` window holding ``now``: ``start <= now < reset``."""
    now = now.astimezone(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if per == "day":
        return day, day + timedelta(days=1)
    if per == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def utc_now() -> datetime:
    return datetime.now(UTC)
