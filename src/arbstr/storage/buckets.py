"""Time buckets of ``/v1/stats?group_by=hour|day|week``: their keys, the SQL that puts a row
in one, and the full list of keys within a range (empty buckets included). Pure.

All buckets are UTC. Keys sort as text in time order:

- ``hour``: ``2026-12-01T13:00:00Z`` (the hour's start)
- ``day``: ``2026-12-01``
- ``week``: ``2026-W49`` (ISO 8601 week, Monday to Sunday, of the ISO week-numbering year)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

T = TypeVar("T")

UNITS = ("hour", "day", "week")
MAX_BUCKETS = 1000


def sql_key(unit: str, column: str = "timestamp") -> str:
    """SQLite's SQL text: the bucket of a stored timestamp (for ``week``: the date of its
    Monday, turned into the week key by :func:`week_key`); other backends:
    :mod:`arbstr.storage.dialect`."""
    from arbstr.storage.dialect import SQLITE

    return SQLITE.bucket(unit, column)


def week_key(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year:04d}-W{week:02d}"


def start_of(unit: str, dt: datetime) -> datetime:
    """The start of the bucket holding ``dt`` (aware, UTC)."""
    dt = dt.astimezone(UTC)
    if unit == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    raise ValueError(f"unit must be one of {UNITS}")


_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def key_of(unit: str, dt: datetime) -> str:
    start = start_of(unit, dt)
    if unit == "hour":
        return start.strftime("%Y-%m-%dT%H:00:00Z")
    if unit == "day":
        return start.strftime("%Y-%m-%d")
    return week_key(start.date())


def count(unit: str, since: datetime, until: datetime) -> int:
    """How many buckets ``since``..``until`` (both inclusive) touches, without listing them."""
    first, last = start_of(unit, since), start_of(unit, until)
    return (last - first) // _STEP[unit] + 1 if last >= first else 0


def keys(unit: str, since: datetime, until: datetime) -> list[str]:
    """Every bucket key from the one holding ``since`` to the one holding ``until``, in
    time order."""
    start, last = start_of(unit, since), start_of(unit, until)
    out: list[str] = []
    while start <= last:
        out.append(key_of(unit, start))
        start += _STEP[unit]
    return out


def fill(all_keys: list[str], found: Mapping[str, T], empty: Callable[[], T]) -> dict[str, T]:
    """``found`` over every key of ``all_keys`` in their order, ``empty()`` where it has none
    (keys of ``found`` outside ``all_keys`` are left out)."""
    return {k: found[k] if k in found else empty() for k in all_keys}
