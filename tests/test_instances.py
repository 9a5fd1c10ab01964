"""Two real ``arbstr serve`` processes on one PostgreSQL database under concurrent load:
exactly one row per request, stats equal to the sum of both instances' cost headers, and a
budget both share that holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fake_upstream import Completion, FakeUpstream
from logdb import sql_rows
from pg_server import PgServer
from serving import free_port, wait_up

CHAT = "/v1/chat/completions"
FEE = 7  # sats per request, whatever the tokens
PER_INSTANCE = 120
ROOM = 100  # requests the budget has room for, of 240

CONFIG = """
[[providers]]
name = "alpha"
url = "{url}"
models = ["gpt-4o"]
input_rate = 0
output_rate = 0
base_fee = {fee}
balance_interval_s = 0

[[budgets]]
name = "team"
sats = {sats}
"""


@pytest.fixture
def instances(
    pg_server: PgServer, tmp_path: Path
) -> Iterator[tuple[str, list[tuple[subprocess.Popen[str], str]], list[str]]]:
    """(database URL, [(process, url)] x2, config path): started by the test."""
    started: list[tuple[subprocess.Popen[str], str]] = []
    yield pg_server.create_database(), started, [str(tmp_path / "config.toml")]
    for proc, _ in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)


def serve(config: str, db: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_")}
    env["ARBSTR_ALPHA_API_KEY"] = "sk-instances-0123456789"
    env["ARBSTR_DATABASE_URL"] = db
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "arbstr", "serve", "-c", config, "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def write_config(path: str, text: str) -> None:
    Path(path).write_text(text)
    os.chmod(path, 0o600)


async def stats_when(url: str, total: int) -> Any:
    """``/v1/stats`` once it counts ``total`` requests (the writers batch every 20 ms)."""
    async with aiohttp.ClientSession() as s:
        for _ in range(250):
            async with s.get(url + "/v1/stats?range=last_1h") as r:
                stats = await r.json()
            if stats["counts"]["total"] >= total:
                assert stats["counts"]["total"] == total
                return stats
            await asyncio.sleep(0.02)
    raise AssertionError(f"stats count {stats['counts']['total']}, not {total}")


async def load(url: str, n: int) -> list[tuple[int, str, str | None]]:
    """``n`` requests, 30 at a time: (status, request id, cost header)."""
    sem = asyncio.Semaphore(30)
    out: list[tuple[int, str, str | None]] = []

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x " * (i % 40)}]}
        async with sem, s.post(url + CHAT, json=body) as r:
            await r.read()
            out.append(
                (r.status, r.headers["x-arbstr-request-id"], r.headers.get("x-arbstr-cost-sats"))
            )

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, i) for i in range(n)))
    return out


async def test_two_serve_processes_share_one_log_and_one_budget(
    instances: tuple[str, list[tuple[subprocess.Popen[str], str]], list[str]],
) -> None:
    db, started, (config,) = instances
    async with FakeUpstream(default=Completion(delay_s=0.05)) as up:
        write_config(config, CONFIG.format(url=up.url, fee=FEE, sats=ROOM * FEE))
        started.extend(serve(config, db) for _ in range(2))
        await asyncio.gather(*(wait_up(p, u, 20) for p, u in started))
        answers: list[Any] = await asyncio.gather(*(load(u, PER_INSTANCE) for _, u in started))
        everything = [a for per in answers for a in per]
        ok = [a for a in everything if a[0] == 200]
        assert len(ok) == ROOM  # exactly what the shared budget has room for
        assert {a[0] for a in everything} == {200, 429}
        assert all(sum(a[0] == 200 for a in per) > 0 for per in answers)  # both served
        told = sum(int(Decimal(a[2]) * 1000) for a in ok)
        for _, u in started:  # either instance's stats cover both
            stats = await stats_when(u, 2 * PER_INSTANCE)
            assert round(stats["costs"]["total_cost_sats"] * 1000) == told
        for proc, _ in started:  # SIGTERM: each flushes its rows and settles
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 0, out
    rows = sql_rows(db, "SELECT request_id FROM requests")
    assert sorted(r[0] for r in rows) == sorted(a[1] for a in everything)  # one row each
    assert told == ROOM * FEE * 1000
    ((logged,),) = sql_rows(db, "SELECT CAST(ROUND(SUM(cost_sats) * 1000) AS BIGINT) FROM requests")
    assert logged == told
    ((used,),) = sql_rows(db, "SELECT used_msats FROM budget_usage WHERE budget = 'team'")
    assert used == told
    assert sql_rows(db, "SELECT * FROM budget_holds") == []
