"""The request log on PostgreSQL beyond what the shared request-log tests cover: migrations
when instances start at once, several instances writing one database, the server going away
and coming back (rows kept, none lost or duplicated), and the password never shown."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest

from arbstr.errors import DatabaseUnavailable
from arbstr.storage import Store, encode, latest_version, read_requests, read_stats
from arbstr.storage.params import RequestsQuery, StatsQuery
from arbstr.storage.postgres.schema import schema_version
from fake_upstream import FakeUpstream, Reply
from harness import ProxyThread, make_config, provider
from logdata import record
from logdb import count, sql_exec, sql_rows
from pg_server import PASSWORD, PgServer

CHAT = "/v1/chat/completions"


@pytest.fixture
def url(pg_server: PgServer) -> str:
    return pg_server.create_database()


@pytest.fixture
def running(pg_server: PgServer) -> Iterator[PgServer]:
    """The server, started again after a test that stopped it."""
    yield pg_server
    if pg_server.proc is None:
        pg_server.start()


# --- schema -----------------------------------------------------------------------------------


def test_instances_starting_at_once_migrate_once(url: str) -> None:
    stores: list[Store] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        stores.append(Store.open(url))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(stores) == 6 and all(s.available for s in stores)
    for s in stores:
        s.close()
    assert sql_rows(url, "SELECT version FROM arbstr_schema") == [(latest_version(),)]
    indexes = {r[0] for r in sql_rows(url, "SELECT indexname FROM pg_indexes")}
    assert {
        "idx_requests_timestamp",
        "idx_requests_provider_time",
        "idx_requests_model_time",
    } <= indexes


def test_the_time_range_queries_use_the_indexes(url: str) -> None:
    s = Store.open(url)
    s.close()
    sql_exec(url, "ANALYZE requests")
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: ask whether one can be used
        for where in (
            "timestamp >= 'a' AND timestamp <= 'b'",
            "provider = 'x' AND timestamp >= 'a' AND timestamp <= 'b'",
            "model = 'x' AND timestamp >= 'a' AND timestamp <= 'b'",
        ):
            plan = conn.execute(f"EXPLAIN SELECT COUNT(*) FROM requests WHERE {where}").fetchall()  # noqa: S608
            assert "idx_requests_" in " ".join(str(r[0]) for r in plan), plan


def test_a_newer_schema_is_refused_and_read_as_unavailable(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    Store.open(url).close()
    sql_exec(url, "UPDATE arbstr_schema SET version = ?", (latest_version() + 1,))
    with caplog.at_level(logging.ERROR, logger="arbstr.storage"):
        s = Store.open(url)
    assert not s.available and s.error is not None and "newer" in s.error
    s.close()
    with pytest.raises(DatabaseUnavailable, match="newer"):
        read_stats(url, StatsQuery())


def test_reading_a_database_without_the_log(url: str) -> None:
    with pytest.raises(DatabaseUnavailable, match="no arbstr request log"):
        read_requests(url, RequestsQuery())


def test_a_retried_batch_never_duplicates_a_row(url: str) -> None:
    recs = [record() for _ in range(30)]
    s = Store.open(url)
    for r in recs:
        s.submit(r)
    assert s.flush()
    for r in recs[:10]:  # as if a batch whose commit was lost were written again
        s.submit(r)
    s.submit(record())
    s.close()
    assert count(url) == 31
    assert s.written == 31 and s.dropped == 0


# --- the server going away --------------------------------------------------------------------


def test_rows_queued_while_the_server_is_down_are_written_when_it_is_back(
    running: PgServer, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = Store.open(url, reopen_interval_s=0.5)
    before = [record() for _ in range(20)]
    for r in before:
        s.submit(r)
    assert s.flush()
    running.stop()
    during = [record() for _ in range(300)]
    with caplog.at_level(logging.WARNING, logger="arbstr.storage"):
        s.ratios.observe("default", "gpt-4o", 100, 25)  # learned during the outage
        for r in during:
            s.submit(r)
        assert not s.flush(timeout=1.0)  # kept, waiting for the server
        assert not s.available and s.kept == 300 and s.dropped == 0
        running.start()
        assert s.flush(timeout=20)
    assert s.available and s.kept == 0 and s.dropped == 0
    assert "writable again" in caplog.text
    s.close()
    ids = [r[0] for r in sql_rows(url, "SELECT request_id FROM requests")]
    assert sorted(ids) == sorted(r.request_id for r in before + during)  # none lost, no twins
    assert sql_rows(url, "SELECT policy, model, avg_ratio, sample_count FROM token_ratios") == [
        ("default", "gpt-4o", 0.25, 1)
    ]
    assert PASSWORD not in caplog.text


def test_an_outage_keeps_rows_up_to_the_queue_limit(running: PgServer, url: str) -> None:
    s = Store.open(url, queue_size=50, reopen_interval_s=0.5)
    running.stop()
    for _ in range(80):
        s.submit(record())
    assert not s.flush(timeout=1.0)
    assert s.kept + s.dropped == 80 and s.dropped == 30
    running.start()
    assert s.flush(timeout=20)
    s.close()
    assert count(url) == 50 and s.dropped == 30


def test_a_server_down_at_start_is_connected_to_later(running: PgServer, url: str) -> None:
    running.stop()
    s = Store.open(url, reopen_interval_s=0.5)
    assert not s.available and s.error is not None and PASSWORD not in s.error
    s.submit(record())
    running.start()
    assert s.flush(timeout=20)
    assert s.available
    s.close()
    assert count(url) == 1


# --- several instances, one database ----------------------------------------------------------


async def _load(proxy: ProxyThread, n: int, costs: list[str], ids: list[str]) -> None:
    sem = asyncio.Semaphore(20)

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x " * (i % 53)}]}
        async with sem, s.post(proxy.url + CHAT, json=body) as r:
            assert r.status == 200
            await r.read()
            costs.append(r.headers["x-arbstr-cost-sats"])
            ids.append(r.headers["x-arbstr-request-id"])

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, i) for i in range(n)))


async def _stats(proxy: ProxyThread) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/v1/stats", params={"range": "last_1h"}) as r,
    ):
        assert r.status == 200
        return await r.json()


def _msats(costs: list[str]) -> int:
    return sum(int(Decimal(c) * 1000) for c in costs)


async def test_two_instances_write_one_row_per_request(
    url: str, proxies: list[ProxyThread]
) -> None:
    stores = [Store.open(url), Store.open(url)]
    pair = [ProxyThread(make_config({}), sink=st, with_mocks=True).start() for st in stores]
    proxies.extend(pair)
    costs: list[list[str]] = [[], []]
    ids: list[list[str]] = [[], []]
    await asyncio.gather(*(_load(p, 300, costs[i], ids[i]) for i, p in enumerate(pair)))
    for st in stores:
        assert st.flush() and st.dropped == 0
    rows = sql_rows(url, "SELECT request_id FROM requests")
    assert sorted(r[0] for r in rows) == sorted(ids[0] + ids[1])  # exactly one row each
    total = _msats(costs[0]) + _msats(costs[1])
    for p in pair:  # either instance answers for both
        stats = await _stats(p)
        assert stats["counts"]["total"] == 600
        assert round(stats["costs"]["total_cost_sats"] * 1000) == total


async def test_the_server_stopped_mid_load_loses_and_duplicates_nothing(
    running: PgServer, url: str, proxies: list[ProxyThread]
) -> None:
    stores = [Store.open(url, reopen_interval_s=0.5), Store.open(url, reopen_interval_s=0.5)]
    pair = [ProxyThread(make_config({}), sink=st, with_mocks=True).start() for st in stores]
    proxies.extend(pair)
    costs: list[str] = []
    ids: list[str] = []

    seen_down: list[bool] = []

    async def outage() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(running.stop)
        await asyncio.sleep(1.0)
        seen_down.append(any(not st.available and st.kept for st in stores))
        await asyncio.to_thread(running.start)

    await asyncio.gather(*(_load(p, 400, costs, ids) for p in pair), outage())
    assert seen_down == [True]  # rows were kept while the server was down
    for st in stores:
        assert await asyncio.to_thread(st.flush, 30)
        assert st.dropped == 0 and st.available
    rows = sql_rows(url, "SELECT request_id FROM requests")
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert len(ids) == 800
    stats = await _stats(pair[0])
    assert stats["counts"]["total"] == 800
    assert round(stats["costs"]["total_cost_sats"] * 1000) == _msats(costs)


# --- the password stays secret ----------------------------------------------------------------


async def test_the_password_is_never_shown(
    pg_server: PgServer, url: str, proxies: list[ProxyThread], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = url.replace(PASSWORD, "wr0ng-but-secret-pass")
    with caplog.at_level(logging.DEBUG, logger="arbstr"):
        s = Store.open(wrong)
        s.submit(record())
        s.flush(timeout=1.0)
        assert not s.available and s.error is not None
        assert "password authentication failed" in s.error
        assert "wr0ng-but-secret-pass" not in s.error and "***" in s.error
        with pytest.raises(DatabaseUnavailable) as info:
            read_stats(wrong, StatsQuery())
        assert "wr0ng-but-secret-pass" not in str(info.value)
        proxy = ProxyThread(make_config({}), sink=s, with_mocks=True).start()
        proxies.append(proxy)
        async with aiohttp.ClientSession() as session:
            for route in ("/health", "/v1/stats", "/v1/requests"):
                async with session.get(proxy.url + route) as r:
                    body = await r.text()
                    assert "wr0ng-but-secret-pass" not in body, route
        good = Store.open(url)
        good.close()
    assert "wr0ng-but-secret-pass" not in caplog.text
    assert PASSWORD not in caplog.text
    assert f"arbstr:***@127.0.0.1:{pg_server.port}" in caplog.text


async def test_an_upstream_echoing_the_database_password_is_redacted(
    url: str, proxies: list[ProxyThread]
) -> None:
    echo = {"error": {"message": f"no such user; {PASSWORD} and postgres {url}"}}
    async with FakeUpstream(Reply(400, json=echo)) as up:
        data = {"providers": [provider("alpha", up.url)]}
        proxy = ProxyThread(make_config(data), sink=Store.open(url)).start()
        proxies.append(proxy)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                proxy.url + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            ) as r,
        ):
            body = await r.text()
        assert r.status == 400 and "no such user" in body
        assert PASSWORD not in body and "[REDACTED]" in body


def test_the_answers_are_those_of_sqlite_for_the_same_rows(url: str, tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from logdata import make_records

    recs = make_records(400, datetime.now(UTC), seed=5)
    lite = str(tmp_path / "log.db")
    for where in (url, lite):
        s = Store.open(where)
        for r in recs:
            s.submit(r)
        s.close()
    for group_by in (None, "model", "provider", "policy", "api", "tier"):
        q = StatsQuery(group_by=group_by)
        assert encode(read_stats(url, q)) == encode(read_stats(lite, q))
    for sort in ("timestamp", "cost_sats", "latency_ms"):
        for order in ("asc", "desc"):
            q2 = RequestsQuery(per_page=100, sort=sort, order=order, page=2)
            pg = msgspec.json.decode(encode(read_requests(url, q2)))
            sq = msgspec.json.decode(encode(read_requests(lite, q2)))
            assert pg == sq


def test_schema_version_of_an_empty_database(url: str) -> None:
    with psycopg.connect(url) as conn:
        assert schema_version(conn) == 0


def test_the_cli_reads_the_url_of_the_config_or_the_environment(
    url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from arbstr.cli import app

    s = Store.open(url)
    for _ in range(3):
        s.submit(record())
    s.close()
    for var in ("ARBSTR_DB", "ARBSTR_CONFIG", "ARBSTR_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    runner = CliRunner()
    result = runner.invoke(app, ["requests", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.stdout)["total"] == 3
    monkeypatch.setenv("ARBSTR_DATABASE_URL", url)
    result = runner.invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.stdout)["counts"]["total"] == 3
    monkeypatch.setenv("ARBSTR_DATABASE_URL", url.replace(PASSWORD, "n0t-the-pass-word"))
    result = runner.invoke(app, ["stats"])
    assert result.exit_code != 0
    assert "password authentication failed" in result.output
    assert "n0t-the-pass-word" not in result.output
