"""Parameters of the request-log reads (``/v1/stats`` and ``/v1/requests`` query strings,
or the ``arbstr stats``/``arbstr requests`` options) parsed into query values. Errors are
:class:`~arbstr.errors.InvalidParameter` naming the parameter.

Timestamps are stored as UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``, so comparing text compares time.
``since``/``until`` accept any ISO 8601 date or date-time; an offset (``+02:00``, ``Z``) is
honoured, a value without one is taken as UTC. Both bounds are inclusive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from arbstr.errors import InvalidParameter
from arbstr.storage import buckets

RANGES: dict[str, timedelta] = {
    "last_1h": timedelta(hours=1),
    "last_24h": timedelta(hours=24),
    "last_7d": timedelta(days=7),
    "last_30d": timedelta(days=30),
}
DEFAULT_RANGE = "last_7d"
GROUP_BY = ("model", "provider", "policy", "api", "tier")  # columns
GROUP_BY_TIME = buckets.UNITS  # UTC time buckets, see arbstr.storage.buckets
SORTS = ("timestamp", "cost_sats", "latency_ms", "id")  # id: the order rows were logged in
ORDERS = ("asc", "desc")
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
MAX_PAGE = 10**9
MIN_ID_MATCH = 4  # characters of a request id that `request_id` matches as a prefix or a suffix
MAX_ID_MATCH = 200
MAX_ROW_ID = 10**12 - 1
NO_KEY = "(none)"  # the group of rows whose provider/policy is unknown (failed before routing)

_FILTER_PARAMS = ("range", "since", "until", "model", "provider", "policy", "api", "tier")
STATS_PARAMS = (*_FILTER_PARAMS, "group_by")
REQUESTS_PARAMS = (
    *_FILTER_PARAMS,
    "success",
    "streaming",
    "page",
    "per_page",
    "sort",
    "order",
    "request_id",
    "after_id",
)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
# '+' in a query string decodes to ' ': "…T10:00:00 02:00" was meant as "+02:00".
_SPACE_OFFSET = re.compile(r"^(.*\d) (\d{2}(?::?\d{2})?)$")
_UINT = re.compile(r"[0-9]{1,12}")


# ---------------------------------------------------------------------------------------------
# Queries, as values


@dataclass(frozen=True, slots=True)
class Filters:
    since: str | None = None  # normalised UTC timestamp, inclusive
    until: str | None = None  # normalised UTC timestamp, inclusive
    model: str | None = None
    provider: str | None = None
    policy: str | None = None
    success: bool | None = None
    api: str | None = None
    tier: str | None = None
    streaming: bool | None = None
    id_match: str | None = None  # a prefix or a suffix of the request id
    after_id: int | None = None  # only rows logged after the row of this id (a tail's cursor)

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.id_match is not None:
            # the prefix is a range of the unique index; the suffix reads each row in range
            # (substr from a start counted from the left: SQLite and PostgreSQL alike)
            clauses.append(
                "((request_id >= ? AND request_id < ?)"
                " OR substr(request_id, length(request_id) - ? + 1) = ?)"
            )
            args += [self.id_match, self.id_match + "\U0010ffff", len(self.id_match)]
            args.append(self.id_match)
        if self.after_id is not None:
            clauses.append("id > ?")
            args.append(self.after_id)
        if self.since is not None:
            clauses.append("timestamp >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("timestamp <= ?")
            args.append(self.until)
        for column in ("model", "provider", "policy", "api", "tier"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.success is not None:
            clauses.append("success = ?")
            args.append(int(self.success))
        if self.streaming is not None:
            clauses.append("streaming = ?")
            args.append(int(self.streaming))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


@dataclass(frozen=True, slots=True)
class StatsQuery:
    filters: Filters = field(default_factory=Filters)
    group_by: str | None = None


@dataclass(frozen=True, slots=True)
class RequestsQuery:
    filters: Filters = field(default_factory=Filters)
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: str = "timestamp"
    order: str = "desc"


# ---------------------------------------------------------------------------------------------
# Parameters (query string or CLI options) -> queries. Errors name the parameter.


def format_ts(dt: datetime) -> str:
    """A UTC datetime in the stored format, ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def parse_time(param: str, value: str) -> datetime:
    """ISO 8601 date or date-time -> aware UTC datetime (no offset means UTC)."""
    text = value.strip()
    m = _SPACE_OFFSET.match(text)
    if m and ("T" in m.group(1) or " " in m.group(1)):
        text = f"{m.group(1)}+{m.group(2)}"
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(
            param,
            f"expected an ISO 8601 date or date-time such as 2024-05-01T12:00:00Z"
            f" or 2024-05-01T14:00:00+02:00, got {value!r}",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _ceil_ms(dt: datetime) -> datetime:
    if dt.microsecond % 1000:
        return dt + timedelta(microseconds=1000 - dt.microsecond % 1000)
    return dt


def _check_names(params: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    for name in params:
        if name not in allowed:
            raise InvalidParameter(name, f"unknown parameter; expected one of {', '.join(allowed)}")
    return {k: v for k, v in params.items() if v != ""}


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(name)
    if value is not None and value not in choices:
        raise InvalidParameter(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InvalidParameter(name, f"expected true or false, got {value!r}")


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not _UINT.fullmatch(value) or not lo <= int(value) <= hi:
        raise InvalidParameter(name, f"expected an integer from {lo} to {hi}, got {value!r}")
    return int(value)


def _filters(params: Mapping[str, str], now: datetime | None, default_range: str | None) -> Filters:
    now = now or datetime.now(UTC)
    rng = _choice(params, "range", tuple(RANGES))
    since_raw, until_raw = params.get("since"), params.get("until")
    since: str | None = None
    until: str | None = None
    if rng is not None and (since_raw is not None or until_raw is not None):
        raise InvalidParameter("range", "give either range, or since/until, not both")
    if since_raw is not None or until_raw is not None:
        since_dt = parse_time("since", since_raw) if since_raw is not None else None
        until_dt = parse_time("until", until_raw) if until_raw is not None else now
        if since_dt is not None and since_dt > until_dt:
            raise InvalidParameter("since", f"is later than until ({format_ts(until_dt)})")
        since = format_ts(_ceil_ms(since_dt)) if since_dt is not None else None
        until = format_ts(until_dt)  # the stored format truncates to the millisecond
    else:
        rng = rng or default_range
        if rng is not None:
            since = format_ts(_ceil_ms(now - RANGES[rng]))
            until = format_ts(now)
    return Filters(
        since=since,
        until=until,
        model=params.get("model"),
        provider=params.get("provider"),
        policy=params.get("policy"),
        api=params.get("api"),
        tier=params.get("tier"),
        success=_bool(params, "success"),
        streaming=_bool(params, "streaming"),
    )


def parse_stats_params(params: Mapping[str, str], *, now: datetime | None = None) -> StatsQuery:
    """Parameters of ``/v1/stats`` (no time filter: the last 7 days). Grouped by time, the
    range must have a start and span at most :data:`~arbstr.storage.buckets.MAX_BUCKETS`."""
    p = _check_names(params, STATS_PARAMS)
    filters = _filters(p, now, DEFAULT_RANGE)
    group_by = _choice(p, "group_by", (*GROUP_BY, *GROUP_BY_TIME))
    if group_by in GROUP_BY_TIME:
        if filters.since is None or filters.until is None:
            raise InvalidParameter("group_by", f"{group_by} buckets need since (or range)")
        n = buckets.count(
            group_by, parse_time("since", filters.since), parse_time("until", filters.until)
        )
        if n > buckets.MAX_BUCKETS:
            raise InvalidParameter(
                "group_by",
                f"{n:,} {group_by} buckets from since to until, at most"
                f" {buckets.MAX_BUCKETS:,}: narrow the range or use a longer bucket",
            )
    return StatsQuery(filters, group_by)


def parse_requests_params(
    params: Mapping[str, str], *, now: datetime | None = None
) -> RequestsQuery:
    """Parameters of ``/v1/requests`` (no time filter: every request). ``request_id``: the rows
    whose request id starts or ends with it (the start is looked up in the index; the end
    reads every row of the time range). ``after_id``: the rows logged after the row whose
    ``id`` it is (with ``sort=id&order=asc``, a tail that neither repeats nor skips a row)."""
    p = _check_names(params, REQUESTS_PARAMS)
    id_match = p.get("request_id")
    if id_match is not None and not MIN_ID_MATCH <= len(id_match) <= MAX_ID_MATCH:
        raise InvalidParameter(
            "request_id",
            f"expected {MIN_ID_MATCH} to {MAX_ID_MATCH} characters of a request id,"
            f" got {len(id_match)}",
        )
    filters = replace(
        _filters(p, now, None),
        id_match=id_match,
        after_id=_int(p, "after_id", 0, 0, MAX_ROW_ID) if "after_id" in p else None,
    )
    return RequestsQuery(
        filters=filters,
        page=_int(p, "page", 1, 1, MAX_PAGE),
        per_page=_int(p, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
        sort=_choice(p, "sort", SORTS) or "timestamp",
        order=_choice(p, "order", ORDERS) or "desc",
    )
