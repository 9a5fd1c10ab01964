"""Budgets shared by two arbstr instances on one PostgreSQL database: concurrent requests
through both against one limit, the shared state after they end, a restart, an instance
that dies with requests in flight, and a database that cannot be reached."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from arbstr.storage import Store
from fake_upstream import Completion, FakeUpstream
from harness import ProxyThread, make_config, provider
from logdb import sql_exec, sql_rows
from pg_server import PgServer

CHAT = "/v1/chat/completions"
ASK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
FEE = 100  # sats per request: estimate and cost alike


@pytest.fixture
def url(pg_server: PgServer) -> str:
    return pg_server.create_database()


def config(upstream: str, sats: float) -> dict[str, Any]:
    return {
        "providers": [provider("alpha", upstream, input_rate=0, output_rate=0, base_fee=FEE)],
        "retry": {"max_attempts_per_provider": 1},
        "budgets": [{"name": "team", "sats": sats}],
    }


def instance(proxies: list[ProxyThread], data: dict[str, Any], url: str) -> ProxyThread:
    proxy = ProxyThread(make_config(data), sink=Store.open(url)).start()
    proxies.append(proxy)
    return proxy


async def post(proxy: ProxyThread) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ASK) as r:
        return r.status, json.loads(await r.read())


async def idle(url: str) -> None:
    """Until every hold is released (the settles run in the background)."""
    for _ in range(300):
        if not sql_rows(url, "SELECT 1 FROM budget_holds"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("holds left in the database")


async def test_a_budget_shared_by_two_instances_holds_under_concurrent_load(
    url: str, proxies: list[ProxyThread]
) -> None:
    async with FakeUpstream(default=Completion(delay_s=0.4)) as up:
        data = config(up.url, 10 * FEE)
        a, b = instance(proxies, data, url), instance(proxies, data, url)
        answers = await asyncio.gather(*(post(p) for _ in range(25) for p in (a, b)))
        statuses = sorted(s for s, _ in answers)
        assert statuses == [200] * 10 + [429] * 40
        assert len(up.chat_requests) == 10
        for status, body in answers:
            if status == 429:
                assert body["error"]["code"] == "budget_exceeded"
        await idle(url)
        ((used,),) = sql_rows(url, "SELECT used_msats FROM budget_usage WHERE budget = 'team'")
        assert used == 10 * FEE * 1000
        # both instances now refuse, however the load is split
        assert (await post(a))[0] == 429 and (await post(b))[0] == 429
        async with aiohttp.ClientSession() as s, s.get(b.url + "/v1/budgets") as r:
            (view,) = (await r.json())["data"]
        assert view["used_sats"] == 1000.0


async def test_a_new_instance_starts_from_what_the_others_spent(
    url: str, proxies: list[ProxyThread]
) -> None:
    async with FakeUpstream() as up:
        data = config(up.url, 3 * FEE)
        a = instance(proxies, data, url)
        assert [(await post(a))[0] for _ in range(2)] == [200, 200]
        await idle(url)
        b = instance(proxies, data, url)
        assert [(await post(b))[0] for _ in range(2)] == [200, 429]
        assert (await post(a))[0] == 429  # a sees b's request through the database


async def test_a_dead_instances_holds_lapse(url: str, proxies: list[ProxyThread]) -> None:
    async with FakeUpstream() as up:
        data = config(up.url, 2 * FEE)
        a = instance(proxies, data, url)
        # a request held by an instance that died: expired an hour ago
        ((start,),) = sql_rows(url, "SELECT window_start FROM budget_usage")
        stale = (start, 2 * FEE * 1000, "2000-01-01T00:00:00.000Z")
        sql_exec(url, "INSERT INTO budget_holds VALUES ('gone', 'team', ?, ?, ?)", stale)
        assert (await post(a))[0] == 200


async def test_without_the_database_each_instance_keeps_its_own_budget(
    proxies: list[ProxyThread],
) -> None:
    """A database that is down: rows are kept for later, and budgets hold per instance."""
    async with FakeUpstream() as up:
        data = config(up.url, 2 * FEE)
        dead = "postgresql://arbstr:secret-pass-1234@127.0.0.1:9/arbstr"
        a = instance(proxies, data, dead)
        assert [(await post(a))[0] for _ in range(3)] == [200, 200, 429]
