"""The request log's read side, shared by ``GET /v1/stats``, ``GET /v1/requests`` and the
``arbstr stats`` / ``arbstr requests`` commands: SQL and the shaping of its rows into the
typed answers of :mod:`arbstr.storage.payloads` (parameters: :mod:`arbstr.storage.params`).

- Costs are summed exactly, in integer millisats (``ROUND(cost_sats * 1000)``), and turned
  back into sats only at the end. Values outside the bounds of :mod:`arbstr.storage.rows`
  (rows an older arbstr wrote) count as unknown, here and in the rows answered, so no row
  can make a sum overflow.
- Latency figures cover successful requests only (an error answered in 1 ms says nothing
  about the providers). Percentiles are nearest-rank: the p-th percentile of n sorted values
  is the value at rank ``ceil(p * n / 100)`` (1-based), so it is always an observed value.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, TypeVar

from arbstr.errors import DatabaseUnavailable
from arbstr.storage import buckets
from arbstr.storage.dialect import Db, SqliteDb
from arbstr.storage.location import is_postgres
from arbstr.storage.params import (
    GROUP_BY,
    GROUP_BY_TIME,
    NO_KEY,
    ORDERS,
    SORTS,
    RequestsQuery,
    StatsQuery,
    parse_time,
)
from arbstr.storage.payloads import (
    Compared,
    Cost,
    Costs,
    Counts,
    GroupStats,
    Performance,
    RequestRow,
    RequestsPage,
    RowError,
    Stats,
    Timing,
    Tokens,
)
from arbstr.storage.rows import (
    exact_sum,
    msats_sql,
    stored_int,
    stored_sats,
    stored_tokens,
    take_sum,
    tokens_sql,
)
from arbstr.storage.sqlite_reads import open_readonly as open_readonly  # re-exported

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# SQL


# Each row's values within the bounds of arbstr.storage.rows (others count as unknown), so
# that the sums below stay exact and cannot overflow, whoever wrote the rows.
_BOUNDED = f"""
    CASE WHEN success = 1 THEN 1 ELSE 0 END AS ok, CASE WHEN streaming = 1 THEN 1 ELSE 0 END AS st,
    CASE WHEN escalation IS NOT NULL THEN 1 ELSE 0 END AS esc, latency_ms,
    {msats_sql("cost_sats")} AS c,
    {msats_sql("computed_cost_sats")} AS cc,
    {msats_sql("provider_cost_sats")} AS pc,
    {msats_sql("possibly_billed_sats")} AS pb,
    {tokens_sql("input_tokens")} AS ti,
    {tokens_sql("output_tokens")} AS tout
"""
_BOTH = "CASE WHEN pc IS NOT NULL AND cc IS NOT NULL THEN"  # charged and computed both known
_AGGREGATES = f"""
    COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(st), 0),
    {exact_sum("c")}, {exact_sum("cc")}, {exact_sum("ti")}, {exact_sum("tout")},
    AVG(CASE WHEN ok = 1 THEN latency_ms END),
    COUNT(pc), {exact_sum("pc")},
    COUNT({_BOTH} 1 END), {exact_sum(f"{_BOTH} pc END")}, {exact_sum(f"{_BOTH} cc END")},
    COUNT(pb), {exact_sum("pb")}, COALESCE(SUM(esc), 0)
"""


def _group(agg: Iterator[Any], p50: int | None, p95: int | None) -> GroupStats:
    total, success, streaming = int(next(agg)), int(next(agg)), int(next(agg))
    msats, computed_msats = take_sum(agg), take_sum(agg)
    tokens_in, tokens_out = take_sum(agg), take_sum(agg)
    avg = next(agg)
    reported, provider_msats = int(next(agg)), take_sum(agg)
    compared, charged_both, computed_both = int(next(agg)), take_sum(agg), take_sum(agg)
    possibly_billed, possibly_billed_msats = int(next(agg)), take_sum(agg)
    escalated = int(next(agg))
    return GroupStats(
        Counts(total, success, total - success, streaming, escalated),
        Costs(
            total_cost_sats=msats / 1000,
            computed_cost_sats=computed_msats / 1000,
            total_input_tokens=tokens_in,
            total_output_tokens=tokens_out,
            provider_reported_requests=reported,
            total_provider_cost_sats=provider_msats / 1000 if reported else None,
            provider_cost_diff_sats=(charged_both - computed_both) / 1000 if compared else None,
            charged_vs_computed=Compared(
                requests=compared,
                charged_sats=charged_both / 1000,
                computed_sats=computed_both / 1000,
                diff_sats=(charged_both - computed_both) / 1000,
            ),
            possibly_billed_sats=possibly_billed_msats / 1000,
            possibly_billed_requests=possibly_billed,
        ),
        Performance(None if avg is None else round(float(avg), 2), p50, p95),
    )


def _percentiles(
    db: Db, key: str | None, where: str, args: list[object]
) -> dict[object, tuple[int | None, int | None]]:
    """Nearest-rank p50 and p95 of successful requests' latency, per value of ``key`` (SQL
    text, whitelisted; None: over all rows, answered under the key ``"*"``)."""
    cond = (where + " AND " if where else " WHERE ") + "success = 1"
    group, part = ("'*'", "") if key is None else (key, f"PARTITION BY {key} ")
    sql = f"""
        SELECT g, rn, n, latency_ms FROM (
            SELECT {group} AS g, latency_ms,
                   ROW_NUMBER() OVER ({part}ORDER BY latency_ms) AS rn,
                   COUNT(*) OVER ({part}) AS n
            FROM requests{cond}
        ) AS ranked
        WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100
    """  # noqa: S608 - key comes from a whitelist, values are bound
    out: dict[object, tuple[int | None, int | None]] = {}
    for g, rn, n, latency in db.rows(sql, args):
        p50, p95 = out.get(g, (None, None))
        if rn == (n * 50 + 99) // 100:
            p50 = stored_int(latency)
        if rn == (n * 95 + 99) // 100:
            p95 = stored_int(latency)
        out[g] = (p50, p95)
    return out


def _db(conn: sqlite3.Connection | Db) -> Db:
    return SqliteDb(conn) if isinstance(conn, sqlite3.Connection) else conn


def _null_first(value: object) -> tuple[bool, str]:
    """Sort key: NULL first, then text in code point order (as SQLite sorts; PostgreSQL's
    order depends on the database's collation, so the rows are sorted here)."""
    return (value is not None, "" if value is None else str(value))


def query_stats(conn: sqlite3.Connection | Db, q: StatsQuery) -> Stats:
    """``/v1/stats`` on either backend (a bare SQLite connection is taken as one)."""
    db = _db(conn)
    where, args = q.filters.where()
    sql = f"SELECT {_AGGREGATES} FROM (SELECT {_BOUNDED} FROM requests{where}) AS r"  # noqa: S608
    overall = db.rows(sql, args)[0]
    p50, p95 = _percentiles(db, None, where, args).get("*", (None, None))
    total = _group(iter(overall), p50, p95)
    result = Stats(q.filters.since, q.filters.until, total.counts, total.costs, total.performance)
    if total.counts.escalated:
        result.escalations = _escalations(db, where, args)
    if q.group_by in GROUP_BY_TIME:
        result.groups = _time_groups(db, q, where, args)
    elif q.group_by is not None:
        key = q.group_by
        if key not in GROUP_BY:  # it becomes SQL text: whitelisted, never trusted
            raise ValueError(f"group_by must be one of {GROUP_BY}")
        groups = _grouped(db, key, where, args)
        result.groups = {NO_KEY if g is None else str(g): s for g, s in groups.items()}
    return result


def _grouped(db: Db, key: str, where: str, args: list[object]) -> dict[object, GroupStats]:
    """Stats per value of the SQL expression ``key`` (whitelisted text), NULL first."""
    pct = _percentiles(db, key, where, args)
    sql = (
        f"SELECT g, {_AGGREGATES} FROM"  # noqa: S608
        f" (SELECT {key} AS g, {_BOUNDED} FROM requests{where}) AS r GROUP BY g"
    )
    groups: dict[object, GroupStats] = {}
    for row in sorted(db.rows(sql, args), key=lambda r: _null_first(r[0])):
        g50, g95 = pct.get(row[0], (None, None))
        groups[row[0]] = _group(iter(row[1:]), g50, g95)
    return groups


def _time_groups(db: Db, q: StatsQuery, where: str, args: list[object]) -> dict[str, GroupStats]:
    """Every bucket of since..until in time order, the empty ones as an empty range reads."""
    unit, since, until = q.group_by or "", q.filters.since, q.filters.until
    if since is None or until is None:
        raise ValueError("time buckets need since and until")
    found = _grouped(db, db.dialect.bucket(unit), where, args)
    if unit == "week":  # SQL names a week by its Monday
        found = {buckets.week_key(date.fromisoformat(str(g))): s for g, s in found.items() if g}
    empty_sql = f"SELECT {_AGGREGATES} FROM (SELECT {_BOUNDED} FROM requests WHERE 1 = 0) AS r"  # noqa: S608
    empty = db.rows(empty_sql)[0]
    keys = buckets.keys(unit, parse_time("since", since), parse_time("until", until))
    return buckets.fill(
        keys, {str(g): s for g, s in found.items()}, lambda: _group(iter(empty), None, None)
    )


def _escalations(db: Db, where: str, args: list[object]) -> dict[str, dict[str, int]]:
    """Re-asks by ``"<from tier>-><to tier>"`` and reason (the from tier is the re-asked
    row's; ``?`` when that row is not in the log)."""
    sql = f"""
        SELECT (SELECT f.tier FROM requests AS f WHERE f.request_id = e.escalated_from),
               e.tier, e.escalation, COUNT(*)
        FROM (SELECT tier, escalation, escalated_from FROM requests{where}) AS e
        WHERE e.escalation IS NOT NULL
        GROUP BY 1, 2, 3
    """  # noqa: S608 - the filters' values are bound
    out: dict[str, dict[str, int]] = {}
    found = db.rows(sql, args)
    for src, dst, reason, n in sorted(found, key=lambda r: [_null_first(v) for v in r[:3]]):
        hop = f"{src or '?'}->{dst or '?'}"
        out.setdefault(hop, {})[str(reason)] = int(n)
    return out


_REQUEST_COLUMNS = """
    id, request_id, timestamp, model, provider, policy, streaming, success, input_tokens,
    output_tokens, cost_sats, computed_cost_sats, provider_cost_sats, possibly_billed_sats,
    latency_ms,
    stream_duration_ms, error_status, error_message, api, tier, complexity, escalated_from,
    escalation
"""


def _request_row(row: tuple[Any, ...]) -> RequestRow:
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
        computed_cost,
        provider_cost,
        possibly_billed,
        latency,
        duration,
        err_status,
        err_message,
        api,
        tier,
        complexity,
        escalated_from,
        escalation,
    ) = row
    ok = bool(success)
    return RequestRow(
        id=rid,
        request_id=request_id,
        timestamp=ts,
        model=model,
        provider=provider,
        policy=policy,
        api=api,
        tier=tier if isinstance(tier, str) else None,
        complexity=_score(complexity),
        escalated_from=escalated_from if isinstance(escalated_from, str) else None,
        escalation=escalation if isinstance(escalation, str) else None,
        streaming=bool(streaming),
        success=ok,
        tokens=Tokens(stored_tokens(tokens_in), stored_tokens(tokens_out)),
        cost=_cost(cost, computed_cost, provider_cost, possibly_billed),
        timing=Timing(stored_int(latency), stored_int(duration)),
        error=None if ok else RowError(stored_int(err_status), err_message),
    )


def _score(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cost(cost: object, computed: object, provider: object, possibly_billed: object) -> Cost:
    sats, provider_sats = stored_sats(cost), stored_sats(provider)
    source = "provider" if provider_sats is not None else None if sats is None else "computed"
    return Cost(
        sats=sats,
        computed_sats=stored_sats(computed),
        provider_sats=provider_sats,
        source=source,
        possibly_billed_sats=stored_sats(possibly_billed),
    )


def query_requests(conn: sqlite3.Connection | Db, q: RequestsQuery) -> RequestsPage:
    """``/v1/requests`` on either backend (a bare SQLite connection is taken as one)."""
    if q.sort not in SORTS or q.order not in ORDERS:  # they become SQL text
        raise ValueError(f"sort must be one of {SORTS} and order one of {ORDERS}")
    db = _db(conn)
    where, args = q.filters.where()
    total = int(db.rows(f"SELECT COUNT(*) FROM requests{where}", args)[0][0])  # noqa: S608
    direction = q.order.upper()
    # NULLs as SQLite orders them, on both backends; only cost_sats can be NULL (an explicit
    # NULLS on a NOT NULL column keeps PostgreSQL from reading the time index in order)
    nulls = ("NULLS FIRST" if direction == "ASC" else "NULLS LAST") if q.sort == "cost_sats" else ""
    sql = (
        f"SELECT {_REQUEST_COLUMNS} FROM requests{where}"  # noqa: S608 - whitelisted names
        f" ORDER BY {q.sort} {direction} {nulls}, id {direction} LIMIT ? OFFSET ?"
    )
    offset = (q.page - 1) * q.per_page
    rows = db.rows(sql, [*args, q.per_page, offset]) if offset < total else []
    return RequestsPage(
        data=[_request_row(r) for r in rows],
        page=q.page,
        per_page=q.per_page,
        total=total,
        total_pages=(total + q.per_page - 1) // q.per_page,
    )


# ---------------------------------------------------------------------------------------------
# Reading either backend (blocking: run it in a thread from async code)


def read_with(location: str, query: Callable[[Db], T]) -> T:
    """Run ``query`` on a read connection of ``location``, a SQLite path or a PostgreSQL URL
    (:mod:`arbstr.storage.location`); errors are :class:`DatabaseUnavailable`. Every read of
    the request log goes through here: a new read is a function of a :class:`Db`."""
    if is_postgres(location):
        from arbstr.storage.postgres.reads import read

        return read(location, query)
    conn = open_readonly(location)
    try:
        return query(SqliteDb(conn))
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot read the request log {location}: {exc}") from None
    finally:
        conn.close()


def read_stats(location: str, q: StatsQuery) -> Stats:
    """``/v1/stats``."""
    return read_with(location, lambda db: query_stats(db, q))


def read_requests(location: str, q: RequestsQuery) -> RequestsPage:
    """``/v1/requests``."""
    return read_with(location, lambda db: query_requests(db, q))
