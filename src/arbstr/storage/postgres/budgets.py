"""Budgets shared by every arbstr instance on one PostgreSQL database (migration 0007).

Each instance keeps its :class:`~arbstr.routing.budgets.BudgetBook` as a fast, optimistic
first check; the database has the last word. Admitting a request takes a transaction lock
per budget covering it (instances take turns), checks what all instances settled and hold,
and records the request's hold, in one transaction and one round trip. A request's
end deletes its hold and adds its cost in one transaction, off the request path. Holds of an
instance that died expire after ``hold_ttl_s``. When the database cannot be reached, requests
are admitted on the local view alone (a warning is logged) rather than refused."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from arbstr.routing.budgets import Admission, BudgetBook, BudgetState
from arbstr.storage.location import display, scrub
from arbstr.storage.params import format_ts

log = logging.getLogger("arbstr.budgets")

HOLD_TTL_S = 900.0  # a hold outlives any request; then a dead instance's holds lapse
RETRY_AFTER_S = 5.0  # after a database failure, the local view alone for this long

_ENSURE = """
INSERT INTO budget_usage (budget, window_start, used_msats)
SELECT b, w, u FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(b, w, u)
ON CONFLICT (budget, window_start) DO NOTHING
"""
_HELD = """
SELECT budget, COALESCE(SUM(msats), 0) FROM budget_holds
WHERE (budget, window_start) IN (SELECT * FROM unnest(%s::text[], %s::text[]) AS t(b, w))
  AND expires_at > %s
GROUP BY budget
"""
# Admissions of a budget take turns on an advisory lock per budget (not its usage row, which
# a settling request updates: admissions need not wait for those). After it (a statement of
# its own: this one's snapshot then sees every hold committed by whoever held the lock
# before, and each settle's released hold and added cost together), the hold goes in only if
# every reject budget can take it.
_TAKE_TURNS = """
SELECT pg_advisory_xact_lock(hashtextextended('arbstr budget ' || b, 0))
FROM (SELECT b FROM unnest(%s::text[]) AS t(b) ORDER BY b) AS sorted
"""
_DECIDE = """
WITH want (b, w, lim, rej) AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bool[])
), held AS (
    SELECT budget, SUM(msats) AS m FROM budget_holds
    WHERE budget = ANY(%s::text[]) AND expires_at > %s GROUP BY budget, window_start
    HAVING (budget, window_start) IN (SELECT b, w FROM want)
), over AS (
    SELECT 1 FROM want
    LEFT JOIN budget_usage u ON u.budget = want.b AND u.window_start = want.w
    LEFT JOIN held ON held.budget = want.b
    WHERE want.rej AND COALESCE(u.used_msats, 0) + COALESCE(held.m, 0) + %s > want.lim
)
INSERT INTO budget_holds (request_id, budget, window_start, msats, expires_at)
SELECT %s, b, w, %s, %s FROM want WHERE NOT EXISTS (SELECT 1 FROM over)
ON CONFLICT (request_id, budget) DO NOTHING
RETURNING budget
"""
_USED = """
SELECT budget, used_msats FROM budget_usage
WHERE (budget, window_start) IN (SELECT * FROM unnest(%s::text[], %s::text[]) AS t(b, w))
"""
_RELEASE = "DELETE FROM budget_holds WHERE request_id = %s"
_ADD = """
INSERT INTO budget_usage (budget, window_start, used_msats)
SELECT b, w, %s FROM unnest(%s::text[], %s::text[]) AS t(b, w)
ON CONFLICT (budget, window_start)
DO UPDATE SET used_msats = budget_usage.used_msats + EXCLUDED.used_msats
"""
_EXPIRED = "DELETE FROM budget_holds WHERE expires_at <= %s"


def _windows(states: Sequence[BudgetState]) -> tuple[list[str], list[str]]:
    seen: dict[str, str] = {}
    for s in states:
        seen.setdefault(s.budget.name, format_ts(s.start))
    names = sorted(seen)
    return names, [seen[n] for n in names]


class SharedBudgets:
    def __init__(self, url: str, book: BudgetBook, hold_ttl_s: float = HOLD_TTL_S) -> None:
        self._url = url
        self.name = display(url)
        self.book = book
        self.hold_ttl_s = hold_ttl_s
        self._pool: AsyncConnectionPool[Any] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._down_until = 0.0

    async def start(self) -> None:
        """Open the pool; give each budget's current window its row (from the use the book
        has: the request log's, read at start) unless another instance did, and read back
        what the database has."""
        self._pool = AsyncConnectionPool(
            self._url, min_size=1, max_size=4, timeout=2.0, open=False, kwargs={"autocommit": True}
        )
        try:
            await self._pool.open(wait=True, timeout=5.0)
            async with self._pool.connection() as conn, conn.transaction():
                states = self.book.states
                names, starts = _windows(states)
                used = {s.budget.name: s.used_msats for s in states}
                await conn.execute(_ENSURE, [names, starts, [used[n] for n in names]])
                await conn.execute(_EXPIRED, [format_ts(self.book.clock())])
                cur = await conn.execute(_USED, [names, starts])
                stored = dict(await cur.fetchall())
            for s in states:
                s.used_msats = int(stored.get(s.budget.name, s.used_msats))
        except Exception as exc:  # psycopg's, the pool's timeouts, OSError
            self._failed("cannot read the shared budgets", exc)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5.0)
        if self._pool is not None:
            await self._pool.close()

    def _failed(self, what: str, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("%s on %s: %s", what, self.name, scrub(str(exc).strip(), self._url))
        self._down_until = time.monotonic() + RETRY_AFTER_S

    async def confirm(self, request_id: str, adm: Admission) -> BudgetState | None:
        """Hold ``adm``'s estimate in the database if every reject budget covering it can
        take it across all instances; else the budget that cannot (its figures the
        database's), nothing held. One round trip (a pipeline of one transaction)."""
        if self._pool is None or time.monotonic() < self._down_until:
            return None
        at = adm.at
        now = format_ts(at)
        by_name = {s.budget.name: s for s in adm.covering}
        names, starts = _windows(adm.covering)
        limits = [by_name[n].limit for n in names]
        rejects = [by_name[n].reject for n in names]
        expires = format_ts(at + timedelta(seconds=self.hold_ttl_s))
        est = adm.estimate
        try:
            async with self._pool.connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    await conn.execute(_TAKE_TURNS, [names])
                    decided = await conn.execute(
                        _DECIDE,
                        [names, starts, limits, rejects, names, now, est, request_id, est, expires],
                    )
                    used_cur = await conn.execute(_USED, [names, starts])
                held = await decided.fetchall()
                used = dict(await used_cur.fetchall())
                for n in names:
                    s = by_name[n]
                    s.used_msats = max(s.used_msats, int(used.get(n, 0)))
                if held:
                    return None
                # refused: the figures for the answer (held by all instances)
                cur = await conn.execute(_HELD, [names, starts, now])
                holds = dict(await cur.fetchall())
        except Exception as exc:  # psycopg's, the pool's timeouts, OSError
            self._failed("budgets checked on this instance alone", exc)
            return None
        for n in names:
            s = by_name[n]
            u, h = int(used.get(n, 0)), int(holds.get(n, 0))
            if s.reject and u + h + est > s.limit:
                return BudgetState(s.budget, s.start, s.reset, u, h)
        return BudgetState(adm.covering[0].budget, adm.covering[0].start, adm.covering[0].reset)

    def settle_later(self, request_id: str, counted: Sequence[BudgetState], msats: int) -> None:
        """Release the request's hold and add its cost to the budgets it counted on, in the
        background (one transaction)."""
        if self._pool is None:
            return
        names, starts = _windows(counted)
        task = asyncio.get_running_loop().create_task(
            self._settle(request_id, names, starts, msats)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(
        self, request_id: str, names: list[str], starts: list[str], msats: int
    ) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                await conn.execute(_RELEASE, [request_id])
                if names and msats > 0:
                    await conn.execute(_ADD, [msats, names, starts])
        except Exception as exc:  # the cost stays out; the hold lapses after hold_ttl_s
            self._failed(f"cannot settle request {request_id} on the shared budgets", exc)
