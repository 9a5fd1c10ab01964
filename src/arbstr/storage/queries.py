"""The request log's read side, shared by ``GET /v1/stats``, ``GET /v1/requests`` and the
``arbstr stats`` / ``arbstr requests`` commands: parameter parsing, SQL, result shaping.

Conventions:
- Timestamps are stored as UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``, so comparing text compares time.
  ``since``/``until`` accept any ISO 8601 date or date-time; an offset (``+02:00``, ``Z``)
  is honoured, a value without one is taken as UTC. Both bounds are inclusive.
- Costs are summed exactly, in integer millisats (``ROUND(cost_sats * 1000)``), and turned
  back into sats only at the end.
- Latency figures cover successful requests only (an error answered in 1 ms says nothing
  about the providers). Percentiles are nearest-rank: the p-th percentile of n sorted values
  is the value at rank ``ceil(p * n / 100)`` (1-based), so it is always an observed value.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from arbstr.errors import DatabaseUnavailable, InvalidParameter
from arbstr.storage.schema import SchemaTooNew, check_not_newer, user_version

RANGES: dict[str, timedelta] = {
    "last_1h": timedelta(hours=1),
    "last_24h": timedelta(hours=24),
    "last_7d": timedelta(days=7),
    "last_30d": timedelta(days=30),
}
DEFAULT_RANGE = "last_7d"
GROUP_BY = ("model", "provider", "policy")
SORTS = ("timestamp", "cost_sats", "latency_ms")
ORDERS = ("asc", "desc")
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
MAX_PAGE = 10**9
NO_KEY = "(none)"  # the group of rows whose provider/policy is unknown (failed before routing)

_FILTER_PARAMS = ("range", "since", "until", "model", "provider", "policy")
STATS_PARAMS = (*_FILTER_PARAMS, "group_by")
REQUESTS_PARAMS = (
    *_FILTER_PARAMS,
    "success",
    "streaming",
    "page",
    "per_page",
    "sort",
    "order",
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
    streaming: bool | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.since is not None:
            clauses.append("timestamp >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("timestamp <= ?")
            args.append(self.until)
        for column in ("model", "provider", "policy"):
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
        success=_bool(params, "success"),
        streaming=_bool(params, "streaming"),
    )


def parse_stats_params(params: Mapping[str, str], *, now: datetime | None = None) -> StatsQuery:
    """Parameters of ``/v1/stats`` (no time filter: the last 7 days)."""
    p = _check_names(params, STATS_PARAMS)
    return StatsQuery(_filters(p, now, DEFAULT_RANGE), _choice(p, "group_by", GROUP_BY))


def parse_requests_params(
    params: Mapping[str, str], *, now: datetime | None = None
) -> RequestsQuery:
    """Parameters of ``/v1/requests`` (no time filter: every request)."""
    p = _check_names(params, REQUESTS_PARAMS)
    return RequestsQuery(
        filters=_filters(p, now, None),
        page=_int(p, "page", 1, 1, MAX_PAGE),
        per_page=_int(p, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
        sort=_choice(p, "sort", SORTS) or "timestamp",
        order=_choice(p, "order", ORDERS) or "desc",
    )


# ---------------------------------------------------------------------------------------------
# SQL


_AGGREGATES = """
    COUNT(*),
    COALESCE(SUM(success), 0),
    COALESCE(SUM(streaming), 0),
    COALESCE(SUM(CAST(ROUND(cost_sats * 1000) AS INTEGER)), 0),
    COALESCE(SUM(input_tokens), 0),
    COALESCE(SUM(output_tokens), 0),
    AVG(CASE WHEN success = 1 THEN latency_ms END),
    COUNT(provider_cost_sats),
    COALESCE(SUM(CAST(ROUND(provider_cost_sats * 1000) AS INTEGER)), 0),
    COALESCE(SUM(CASE WHEN provider_cost_sats IS NOT NULL
                      THEN CAST(ROUND(cost_sats * 1000) AS INTEGER) END), 0)
"""


def _group_json(agg: tuple[Any, ...], p50: int | None, p95: int | None) -> dict[str, Any]:
    total, success, streaming, msats, tokens_in, tokens_out, avg = agg[:7]
    reported, provider_msats, computed_msats_where_reported = agg[7:10]
    return {
        "counts": {
            "total": int(total),
            "success": int(success),
            "error": int(total) - int(success),
            "streaming": int(streaming),
        },
        "costs": {
            "total_cost_sats": int(msats) / 1000,
            "total_input_tokens": int(tokens_in),
            "total_output_tokens": int(tokens_out),
            # what providers said they charged (Routstr usage.cost / X-Routstr-Cost-Msats),
            # over the requests where they said it, and how far that is from arbstr's own
            # cost for those same requests (positive: the node charged more than advertised)
            "provider_reported_requests": int(reported),
            "total_provider_cost_sats": int(provider_msats) / 1000 if reported else None,
            "provider_cost_diff_sats": (
                (int(provider_msats) - int(computed_msats_where_reported)) / 1000
                if reported
                else None
            ),
        },
        "performance": {
            "avg_latency_ms": None if avg is None else round(float(avg), 2),
            "p50_latency_ms": p50,
            "p95_latency_ms": p95,
        },
    }


def _percentiles(
    conn: sqlite3.Connection, key: str, where: str, args: list[object]
) -> dict[object, tuple[int | None, int | None]]:
    """Nearest-rank p50 and p95 of successful requests' latency, per value of ``key``."""
    cond = (where + " AND " if where else " WHERE ") + "success = 1"
    sql = f"""
        SELECT g, rn, n, latency_ms FROM (
            SELECT {key} AS g, latency_ms,
                   ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY latency_ms) AS rn,
                   COUNT(*) OVER (PARTITION BY {key}) AS n
            FROM requests{cond}
        )
        WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100
    """  # noqa: S608 - key comes from a whitelist, values are bound
    out: dict[object, tuple[int | None, int | None]] = {}
    for g, rn, n, latency in conn.execute(sql, args):
        p50, p95 = out.get(g, (None, None))
        if rn == (n * 50 + 99) // 100:
            p50 = int(latency)
        if rn == (n * 95 + 99) // 100:
            p95 = int(latency)
        out[g] = (p50, p95)
    return out


def query_stats(conn: sqlite3.Connection, q: StatsQuery) -> dict[str, Any]:
    where, args = q.filters.where()
    overall = conn.execute(f"SELECT {_AGGREGATES} FROM requests{where}", args).fetchone()  # noqa: S608
    p50, p95 = _percentiles(conn, "'*'", where, args).get("*", (None, None))
    result: dict[str, Any] = {"since": q.filters.since, "until": q.filters.until}
    result.update(_group_json(overall, p50, p95))
    if q.group_by is not None:
        key = q.group_by
        if key not in GROUP_BY:  # it becomes SQL text: whitelisted, never trusted
            raise ValueError(f"group_by must be one of {GROUP_BY}")
        pct = _percentiles(conn, key, where, args)
        groups: dict[str, Any] = {}
        sql = f"SELECT {key}, {_AGGREGATES} FROM requests{where} GROUP BY {key} ORDER BY {key}"  # noqa: S608
        for row in conn.execute(sql, args):
            g50, g95 = pct.get(row[0], (None, None))
            groups[NO_KEY if row[0] is None else str(row[0])] = _group_json(row[1:], g50, g95)
        result["groups"] = groups
    return result


_REQUEST_COLUMNS = """
    id, request_id, timestamp, model, provider, policy, streaming, success, input_tokens,
    output_tokens, cost_sats, provider_cost_sats, latency_ms, stream_duration_ms,
    error_status, error_message
"""


def _sats(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _request_json(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        rid,
        request_id,
        ts,
        model,
        provider,
        policy,
        streaming,
        success,
        tokens_in,
        tokens_out,
        cost,
        provider_cost,
        latency,
        duration,
        err_status,
        err_message,
    ) = row
    ok = bool(success)
    return {
        "id": rid,
        "request_id": request_id,
        "timestamp": ts,
        "model": model,
        "provider": provider,
        "policy": policy,
        "streaming": bool(streaming),
        "success": ok,
        "tokens": {"input": tokens_in, "output": tokens_out},
        "cost": {"sats": _sats(cost), "provider_sats": _sats(provider_cost)},
        "timing": {"latency_ms": latency, "stream_duration_ms": duration},
        "error": None if ok else {"status": err_status, "message": err_message},
    }


def query_requests(conn: sqlite3.Connection, q: RequestsQuery) -> dict[str, Any]:
    if q.sort not in SORTS or q.order not in ORDERS:  # they become SQL text
        raise ValueError(f"sort must be one of {SORTS} and order one of {ORDERS}")
    where, args = q.filters.where()
    total = int(conn.execute(f"SELECT COUNT(*) FROM requests{where}", args).fetchone()[0])  # noqa: S608
    direction = q.order.upper()
    sql = (
        f"SELECT {_REQUEST_COLUMNS} FROM requests{where}"  # noqa: S608 - whitelisted names
        f" ORDER BY {q.sort} {direction}, id {direction} LIMIT ? OFFSET ?"
    )
    offset = (q.page - 1) * q.per_page
    rows = conn.execute(sql, [*args, q.per_page, offset]).fetchall() if offset < total else []
    return {
        "data": [_request_json(r) for r in rows],
        "page": q.page,
        "per_page": q.per_page,
        "total": total,
        "total_pages": (total + q.per_page - 1) // q.per_page,
    }


# ---------------------------------------------------------------------------------------------
# Read-only access (blocking: run it in a thread from async code)


def open_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to an arbstr request log; :class:`DatabaseUnavailable` if the
    file is missing, unreadable, not a request log, or of a newer schema."""
    p = Path(path)
    if not p.is_file():
        raise DatabaseUnavailable(f"no request log at {path} (`arbstr serve` creates it)")
    try:
        conn = sqlite3.connect(
            p.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot open the request log {path}: {exc}") from None
    try:
        version = user_version(conn)
        if version == 0:
            raise DatabaseUnavailable(f"{path} is not an arbstr request log (no schema)")
        check_not_newer(version, path)
    except SchemaTooNew as exc:
        conn.close()
        raise DatabaseUnavailable(str(exc)) from None
    except sqlite3.Error as exc:
        conn.close()
        raise DatabaseUnavailable(f"cannot read the request log {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def read_stats(path: str, q: StatsQuery) -> dict[str, Any]:
    conn = open_readonly(path)
    try:
        return query_stats(conn, q)
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot read the request log {path}: {exc}") from None
    finally:
        conn.close()


def read_requests(path: str, q: RequestsQuery) -> dict[str, Any]:
    conn = open_readonly(path)
    try:
        return query_requests(conn, q)
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot read the request log {path}: {exc}") from None
    finally:
        conn.close()
