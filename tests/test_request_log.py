"""The request log through the proxy: every request is a row, /health, /v1/stats,
/v1/requests, learned token ratios, shutdown and an unwritable database."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner
from yarl import URL

from arbstr import storage
from arbstr.cli import app
from arbstr.records import RequestRecord
from arbstr.storage import Store
from fake_upstream import Completion, FakeUpstream, Hang, closed_port_url
from harness import ProxyThread, make_config, provider
from logdata import (
    assert_stats_match,
    expected_stats,
    make_records,
    record,
    sort_key,
    ts,
    where,
)
from logdb import sql_rows
from pg_server import PASSWORD
from serving import free_port, wait_up

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def start(proxies: list[ProxyThread], proxy: ProxyThread) -> ProxyThread:
    proxies.append(proxy.start())
    return proxy


def db_rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` on a SQLite path or a PostgreSQL URL."""
    return sql_rows(path, sql)


async def get_json(
    url: str | URL, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# --- every request is one row -------------------------------------------------------------


async def test_1000_concurrent_requests_make_1000_exact_rows(
    log_location: str, proxies: list[ProxyThread]
) -> None:
    path = log_location
    store = Store.open(path)
    proxy = start(proxies, ProxyThread(make_config({}), sink=store, with_mocks=True))
    sem = asyncio.Semaphore(50)
    headers: list[tuple[str, str, str]] = []

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x " * (i % 97)}]}
        async with sem, s.post(proxy.url + CHAT, json=body) as r:
            assert r.status == 200
            await r.read()
            headers.append(
                (
                    r.headers["x-arbstr-request-id"],
                    r.headers["x-arbstr-cost-sats"],
                    r.headers["x-arbstr-provider"],
                )
            )

    conn = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(one(s, i) for i in range(1000)))
    assert store.flush()
    assert store.dropped == 0
    got = {
        rid: (cost, provider, success)
        for rid, cost, provider, success in db_rows(
            path, "SELECT request_id, cost_sats, provider, success FROM requests"
        )
    }
    assert len(got) == 1000
    for rid, cost, prov in headers:
        assert got[rid] == (float(cost), prov, 1)
    header_msats = sum(int(Decimal(cost) * 1000) for _, cost, _ in headers)
    ((db_msats,),) = db_rows(
        path, "SELECT SUM(CAST(ROUND(cost_sats * 1000) AS BIGINT)) FROM requests"
    )
    assert db_msats == header_msats
    status, stats = await get_json(proxy.url + "/v1/stats", {"range": "last_1h"})
    assert status == 200
    assert stats["counts"] == {
        "total": 1000,
        "success": 1000,
        "error": 0,
        "streaming": 0,
        "escalated": 0,
    }
    assert stats["costs"]["total_cost_sats"] == header_msats / 1000
    status, health = await get_json(proxy.url + "/health")
    assert (health["database"], health["log_dropped"]) == ("ok", 0)


def arbstr_trailer(raw: bytes) -> dict[str, Any]:
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: {") and b'"arbstr"' in block:
            return json.loads(block[6:])["arbstr"]  # type: ignore[no-any-return]
    raise AssertionError("no arbstr chunk")


async def test_streams_and_errors_are_logged(
    log_location: str, fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    path = log_location
    store = Store.open(path)
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = start(proxies, ProxyThread(cfg, sink=store))
    fake_upstream.push(Completion("one two three", prompt_tokens=40, completion_tokens=3))
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url + CHAT, json={**HI, "stream": True}) as r:
            trailer = arbstr_trailer(await r.read())
        async with s.post(proxy.url + CHAT, json={"model": "unknown", "messages": []}) as r:
            assert r.status == 400
            bad_id = r.headers["x-arbstr-request-id"]
    assert store.flush()
    rows = db_rows(
        path,
        "SELECT request_id, streaming, success, input_tokens, output_tokens, cost_sats,"
        " ttft_ms IS NOT NULL, stream_duration_ms IS NOT NULL, error_status FROM requests"
        " ORDER BY id",
    )
    assert rows == [
        (trailer["request_id"], 1, 1, 40, 3, trailer["cost_sats"], 1, 1, None),
        (bad_id, 0, 0, None, None, None, 0, 0, 400),
    ]


async def test_a_timed_out_request_is_logged_as_possibly_billed(
    log_location: str, fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    """A read timeout after the request was sent may still be billed: its row has no cost
    but the estimate as possibly_billed_sats, which /v1/stats sums apart."""
    path = log_location
    store = Store.open(path)
    cfg = make_config(
        {
            "providers": [provider("alpha", fake_upstream.url)],
            "server": {"request_timeout_s": 0.3},
        }
    )
    proxy = start(proxies, ProxyThread(cfg, sink=store))
    fake_upstream.push(Hang())
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=HI) as r:
        assert r.status == 504
        rid = r.headers["x-arbstr-request-id"]
    assert store.flush()
    ((cost, billed, status),) = db_rows(
        path,
        f"SELECT cost_sats, possibly_billed_sats, error_status FROM requests"  # noqa: S608
        f" WHERE request_id = '{rid}'",
    )
    assert (cost, status) == (None, 504)
    assert isinstance(billed, float) and billed > 0
    status, stats = await get_json(proxy.url + "/v1/stats", {"range": "last_1h"})
    assert status == 200
    assert stats["costs"]["total_cost_sats"] == 0.0
    assert stats["costs"]["possibly_billed_sats"] == billed
    assert stats["costs"]["possibly_billed_requests"] == 1
    status, page = await get_json(proxy.url + "/v1/requests")
    assert page["data"][0]["cost"] == {
        "sats": None,
        "computed_sats": None,
        "provider_sats": None,
        "source": None,
        "possibly_billed_sats": billed,
    }


@pytest.mark.parametrize("charged", ["NaN", "-Infinity", "1e400", "-5"])
async def test_a_provider_charge_no_node_can_have_made_is_stored_as_unknown(
    log_location: str, fake_upstream: FakeUpstream, proxies: list[ProxyThread], charged: str
) -> None:
    """X-Routstr-Cost-Msats: NaN made the millisat conversion raise after the answer was
    sent; the row then carried a 500 instead of the request's success."""
    path = log_location
    store = Store.open(path)
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = start(proxies, ProxyThread(cfg, sink=store))
    for stream in (False, True):
        fake_upstream.push(Completion(headers={"X-Routstr-Cost-Msats": charged}))
        async with (
            aiohttp.ClientSession() as s,
            s.post(proxy.url + CHAT, json={**HI, "stream": stream}) as r,
        ):
            assert r.status == 200
            await r.read()
    assert store.flush()
    rows = db_rows(
        path, "SELECT success, error_status, cost_sats, provider_cost_sats FROM requests"
    )
    assert [row[:2] for row in rows] == [(1, None), (1, None)]
    assert all(row[2] is not None and row[3] is None for row in rows)


# --- /health ------------------------------------------------------------------------------


async def test_health_without_a_database(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = start(proxies, ProxyThread(cfg))  # a MemorySink: no request log
    status, health = await get_json(proxy.url + "/health")
    assert status == 200
    assert health["status"] == "ok" and "alpha" in health["providers"]
    assert (health["database"], health["log_dropped"]) == ("unavailable", 0)
    status, body = await get_json(proxy.url + "/v1/stats")
    assert status == 503
    assert body["error"]["code"] == "database_unavailable"


async def test_full_queue_is_counted_in_health_and_never_slows_requests(
    tmp_path: Path, fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    path = str(tmp_path / "log.db")
    store = Store.open(path, queue_size=5, busy_timeout_s=10.0)
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = start(proxies, ProxyThread(cfg, sink=store))
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the writer blocks on its first batch
    try:
        t0 = time.perf_counter()
        async with aiohttp.ClientSession() as s:
            for _ in range(30):
                async with s.post(proxy.url + CHAT, json=HI) as r:
                    assert r.status == 200
        assert time.perf_counter() - t0 < 5.0
        status, health = await get_json(proxy.url + "/health")
        assert status == 200
        # the writer holds what it took before blocking; 5 more wait in the queue; the rest
        # are dropped and counted
        assert 0 < health["log_dropped"] == store.dropped <= 30 - 5
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.flush()
    ((n,),) = db_rows(path, "SELECT COUNT(*) FROM requests")
    assert n + store.dropped == 30


async def test_unwritable_database_keeps_proxying(
    tmp_path: Path, fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    store = Store.open(str(tmp_path / "missing-dir" / "log.db"))
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = start(proxies, ProxyThread(cfg, sink=store))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(proxy.url + CHAT, json=HI) as r:
                assert r.status == 200
    await wait_for(lambda: store.dropped == 3)
    status, health = await get_json(proxy.url + "/health")
    assert status == 200 and health["status"] == "ok"
    assert (health["database"], health["log_dropped"]) == ("unavailable", 3)
    status, body = await get_json(proxy.url + "/v1/requests")
    assert status == 503
    assert body["error"]["code"] == "database_unavailable"
    assert "no request log" in body["error"]["message"]


async def test_shutdown_writes_the_queued_rows(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    path = str(tmp_path / "log.db")
    store = Store.open(path, busy_timeout_s=10.0)
    cfg = make_config({"providers": [provider("alpha", fake_upstream.url)]})
    proxy = ProxyThread(cfg, sink=store).start()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                async with s.post(proxy.url + CHAT, json=HI) as r:
                    assert r.status == 200
        assert store.written == 0
        stopper = threading.Thread(target=proxy.stop)
        stopper.start()  # lifespan shutdown -> Gateway.close -> Store.close, writer still stuck
        await asyncio.sleep(0.3)
        assert stopper.is_alive()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    stopper.join(15)
    assert not stopper.is_alive()
    assert db_rows(path, "SELECT COUNT(*) FROM requests") == [(100,)]
    assert store.dropped == 0


# --- learned token ratios -----------------------------------------------------------------


async def test_learned_ratio_changes_routing_and_survives_restart(
    log_location: str, fake_upstream: FakeUpstream
) -> None:
    """alpha: cheap input, dear output; beta the reverse. With the default 256-token output
    estimate beta wins; once arbstr has seen that this traffic answers in ~1% of the input
    tokens, alpha is cheaper, and it stays learned across a restart."""
    url = fake_upstream.url
    cfg = make_config(
        {
            "providers": [
                provider("alpha", url, input_rate=1, output_rate=100),
                provider("beta", url, input_rate=20, output_rate=1),
            ]
        }
    )
    fake_upstream.default = Completion("short", prompt_tokens=1000, completion_tokens=10)
    long_prompt = {"model": "gpt-4o", "messages": [{"role": "user", "content": "w" * 4000}]}
    path = log_location

    async def chosen(proxy: ProxyThread) -> str:
        async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=long_prompt) as r:
            assert r.status == 200
            return r.headers["x-arbstr-provider"]

    with ProxyThread(cfg, sink=Store.open(path)) as proxy:
        assert proxy.gateway is not None
        assert proxy.gateway.ratios.get("default", "gpt-4o") is None
        assert await chosen(proxy) == "beta"
        assert proxy.gateway.ratios.get("default", "gpt-4o") == pytest.approx(0.01)
        assert await chosen(proxy) == "alpha"
    assert db_rows(path, "SELECT * FROM token_ratios") == [("default", "gpt-4o", 0.01, 2)]

    with ProxyThread(cfg) as fresh:  # control: nothing learned, beta again
        assert await chosen(fresh) == "beta"

    with ProxyThread(cfg, sink=Store.open(path)) as proxy:  # restart: loaded from the database
        assert await chosen(proxy) == "alpha"
        assert proxy.gateway is not None
        assert proxy.gateway.ratios.get("default", "gpt-4o") == pytest.approx(0.01)


# --- /v1/stats and /v1/requests -----------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def logged(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[str, list[RequestRecord]]:
    recs = make_records(1200, datetime.now(UTC), seed=3)
    if request.param == "sqlite":
        path = str(tmp_path_factory.mktemp("api") / "log.db")
    else:
        path = request.getfixturevalue("pg_server").create_database()
    s = Store.open(path)
    for r in recs:
        s.submit(r)
    s.close()
    return path, recs


@pytest.fixture(scope="module")
def api(
    logged: tuple[str, list[RequestRecord]],
) -> Iterator[tuple[ProxyThread, list[RequestRecord]]]:
    """One proxy over the pre-filled log for the read-only route tests."""
    path, recs = logged
    cfg = make_config({"providers": [provider("alpha", closed_port_url())]})
    with ProxyThread(cfg, sink=Store.open(path)) as proxy:
        yield proxy, recs


STATS_CASES = [
    {},
    {"range": "last_24h", "group_by": "model"},
    {"range": "last_30d", "group_by": "provider"},
    {"range": "last_1h", "group_by": "policy"},
    {"model": "gpt-4o-mini", "provider": "alpha", "range": "last_30d"},
    {"policy": "default", "group_by": "provider"},
]


@pytest.mark.parametrize("params", STATS_CASES)
async def test_stats_route(
    api: tuple[ProxyThread, list[RequestRecord]], params: dict[str, str]
) -> None:
    proxy, recs = api
    status, got = await get_json(proxy.url + "/v1/stats", params)
    assert status == 200
    assert set(got) == {"since", "until", "counts", "costs", "performance"} | (
        {"groups"} if "group_by" in params else set()
    )
    pred = where(
        got["since"],
        got["until"],
        model=params.get("model"),
        provider=params.get("provider"),
        policy=params.get("policy"),
    )
    expected = expected_stats(recs, pred, params.get("group_by"))
    assert expected["counts"]["total"] > 0
    assert_stats_match(got, expected)
    days = {"last_1h": 1 / 24, "last_24h": 1, "last_30d": 30}.get(params.get("range", ""), 7)
    since = datetime.fromisoformat(got["since"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(got["until"].replace("Z", "+00:00"))
    assert abs((until - since) - timedelta(days=days)) < timedelta(milliseconds=2)
    assert abs(datetime.now(UTC) - until) < timedelta(seconds=30)


async def test_stats_time_zones(api: tuple[ProxyThread, list[RequestRecord]]) -> None:
    proxy, recs = api
    now = datetime.now(UTC).replace(microsecond=0)
    a, b = now - timedelta(days=2, hours=3), now - timedelta(hours=5)
    z = {"since": ts(a), "until": ts(b)}
    plus = {
        "since": (a + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        "until": (b - timedelta(hours=7)).strftime("%Y-%m-%dT%H:%M:%S-07:00"),
    }
    naive = {"since": a.strftime("%Y-%m-%dT%H:%M:%S"), "until": b.strftime("%Y-%m-%d %H:%M:%S")}
    results = []
    for params in (z, plus, naive):
        status, got = await get_json(proxy.url + "/v1/stats", params)
        assert status == 200, got
        results.append(got)
    # an unencoded '+' arrives as a space; still understood as the offset
    raw = URL(proxy.url + f"/v1/stats?since={plus['since']}&until={plus['until']}", encoded=True)
    status, got = await get_json(raw)
    assert status == 200, got
    results.append(got)
    assert results[0]["since"] == ts(a) and results[0]["until"] == ts(b)
    assert all(r == results[0] for r in results)
    assert_stats_match(results[0], expected_stats(recs, where(ts(a), ts(b))))


async def test_requests_route_filters_pages_and_sorts(
    api: tuple[ProxyThread, list[RequestRecord]],
) -> None:
    proxy, recs = api
    params = {
        "range": "last_30d",
        "provider": "beta",
        "streaming": "false",
        "success": "true",
        "sort": "cost_sats",
        "order": "asc",
        "per_page": "7",
    }
    status, first = await get_json(proxy.url + "/v1/requests", params)
    assert status == 200
    since = datetime.now(UTC) - timedelta(days=30)
    pred = where(ts(since), None, provider="beta", streaming=False, success=True)
    expected = sorted(
        ((i + 1, r) for i, r in enumerate(recs) if pred(r)), key=sort_key("cost_sats")
    )
    assert first["total"] == len(expected) > 20
    assert first["total_pages"] == -(-len(expected) // 7)
    assert (first["page"], first["per_page"]) == (1, 7)
    ids = []
    for page in range(1, first["total_pages"] + 1):
        status, got = await get_json(proxy.url + "/v1/requests", {**params, "page": str(page)})
        assert status == 200
        ids += [d["request_id"] for d in got["data"]]
        for d in got["data"]:
            assert d["provider"] == "beta" and d["success"] and not d["streaming"]
            assert d["error"] is None
    assert ids == [r.request_id for _, r in expected]

    status, got = await get_json(proxy.url + "/v1/requests")  # defaults: newest first, 20
    assert status == 200
    assert (got["page"], got["per_page"], got["total"]) == (1, 20, len(recs))
    newest = sorted(recs, key=lambda r: r.timestamp, reverse=True)[:20]
    assert [d["timestamp"] for d in got["data"]] == [r.timestamp for r in newest]
    status, got = await get_json(
        proxy.url + "/v1/requests", {"success": "false", "per_page": "100"}
    )
    assert all(d["error"] is not None and d["error"]["status"] for d in got["data"])


@pytest.mark.parametrize(
    ("route", "query", "param"),
    [
        ("/v1/stats", "range=last_2d", "range"),
        ("/v1/stats", "group_by=month", "group_by"),
        ("/v1/stats", "group_by=hour&range=last_30d", None),  # 721 buckets: fine
        ("/v1/stats", "group_by=hour&since=2026-01-01&until=2026-02-11T15:59:59Z", None),
        ("/v1/stats", "group_by=hour&since=2026-01-01&until=2026-02-11T16:00:00Z", "group_by"),
        ("/v1/stats", "group_by=day&since=2020-01-01", "group_by"),
        ("/v1/stats", "group_by=week&until=2026-01-01", "group_by"),  # no start
        ("/v1/stats", "since=yesterday", "since"),
        ("/v1/stats", "range=last_1h&since=2024-01-01", "range"),
        ("/v1/stats", "model=a&model=b", "model"),
        ("/v1/stats", "page=2", "page"),
        ("/v1/requests", "per_page=0", "per_page"),
        ("/v1/requests", "per_page=101", "per_page"),
        ("/v1/requests", "page=0", "page"),
        ("/v1/requests", "page=abc", "page"),
        ("/v1/requests", "sort=model", "sort"),
        ("/v1/requests", "sort=id%3BDROP%20TABLE%20requests", "sort"),
        ("/v1/requests", "order=sideways", "order"),
        ("/v1/requests", "success=perhaps", "success"),
        ("/v1/requests", "streaming=", None),  # empty = not given: fine
        ("/v1/requests", "until=2024-02-30T00:00:00Z", "until"),
    ],
)
async def test_bad_parameters_are_openai_400s_naming_the_parameter(
    api: tuple[ProxyThread, list[RequestRecord]], route: str, query: str, param: str | None
) -> None:
    proxy, _ = api
    status, body = await get_json(URL(proxy.url + route + "?" + query, encoded=True))
    if param is None:
        assert status == 200
        return
    assert status == 400
    err = body["error"]
    assert set(err) == {"message", "type", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_parameter"
    assert f"'{param}'" in err["message"]


async def test_stats_routes_need_the_auth_token(
    logged: tuple[str, list[RequestRecord]], proxies: list[ProxyThread]
) -> None:
    path, _ = logged
    cfg = make_config(
        {
            "server": {"auth_token": "${TOKEN}"},
            "providers": [provider("alpha", closed_port_url())],
        },
        {"TOKEN": "t0ken-for-admin"},
    )
    proxy = start(proxies, ProxyThread(cfg, sink=Store.open(path)))
    for route in ("/v1/stats", "/v1/requests"):
        status, body = await get_json(proxy.url + route)
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        status, body = await get_json(
            proxy.url + route, {"range": "last_30d"}, {"Authorization": "Bearer t0ken-for-admin"}
        )
        assert status == 200
    assert body["total"] > 0
    async with aiohttp.ClientSession() as s, s.post(proxy.url + "/v1/stats") as r:
        assert r.status == 405
    status, health = await get_json(proxy.url + "/health")  # public, as before
    assert status == 200 and health["database"] == "ok"


async def get_raw(url: str, params: dict[str, str]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        return r.status, await r.read()


async def test_routes_and_cli_json_encode_the_same_typed_answers(
    api: tuple[ProxyThread, list[RequestRecord]],
) -> None:
    """The server's body is the shared query's typed answer, encoded by the one encoder; the
    CLI's --json is that same document, indented."""
    proxy, _ = api
    assert proxy.gateway is not None and proxy.gateway.store is not None
    path = proxy.gateway.store.path
    stats_params = {
        "since": "2020-01-01T00:00:00Z",
        "until": "2100-01-01T00:00:00Z",
        "group_by": "model",
    }
    requests_params = {"provider": "beta", "sort": "cost_sats", "per_page": "50", "page": "2"}
    cases: list[tuple[str, dict[str, str], storage.Stats | storage.RequestsPage]] = [
        ("stats", stats_params, storage.read_stats(path, storage.parse_stats_params(stats_params))),
        (
            "requests",
            requests_params,
            storage.read_requests(path, storage.parse_requests_params(requests_params)),
        ),
    ]
    for route, params, answer in cases:
        status, body = await get_raw(proxy.url + "/v1/" + route, params)
        assert status == 200
        assert body == storage.encode(answer)
        args = [route, "--db", path, "--json"]
        for name, value in params.items():
            args += [f"--{name.replace('_', '-')}", value]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout == storage.encode_indented(answer) + "\n"
        assert json.loads(result.stdout) == json.loads(body)


async def test_stats_routes_stay_200_and_exact_over_rows_no_arbstr_writes(
    tmp_path: Path, proxies: list[ProxyThread]
) -> None:
    """Rows with costs of 1e27 sats and int64-sized token counts (an older arbstr wrote
    whatever it was given) used to make every /v1/stats covering them a 503 "integer
    overflow"; they now count as unknown and the rest is summed exactly."""
    path = str(tmp_path / "log.db")
    store = Store.open(path)
    proxy = start(
        proxies,
        ProxyThread(make_config({"providers": [provider("a", closed_port_url())]}), sink=store),
    )
    innocent = [record(cost_msats=1000 + i, input_tokens=i) for i in range(10)]
    for r in innocent:
        store.submit(r)
    assert store.flush()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO requests (request_id, timestamp, model, streaming, success, latency_ms,"
        " cost_sats, input_tokens) VALUES (?, ?, 'gpt-4o', 0, 1, 5, ?, ?)",
        [(f"old-{i}", innocent[0].timestamp, 1e27, 2**63 - 1) for i in range(2)],
    )
    conn.commit()
    conn.close()
    status, got = await get_json(proxy.url + "/v1/stats", {"group_by": "provider"})
    assert status == 200, got
    assert got["costs"]["total_cost_sats"] == sum(1000 + i for i in range(10)) / 1000
    assert got["costs"]["total_input_tokens"] == sum(range(10))
    assert got["counts"]["total"] == 12
    status, page = await get_json(proxy.url + "/v1/requests", {"sort": "cost_sats"})
    assert status == 200, page
    assert page["data"][0]["cost"]["sats"] is None and page["data"][0]["tokens"]["input"] is None


# --- `arbstr serve` in a real process -------------------------------------------------------


def serve(db: str, cwd: Path, prefix: list[str] | None = None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_")}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            *(prefix or []),
            sys.executable,
            "-m",
            "arbstr",
            "serve",
            "--mock",
            "--db",
            db,
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


async def post_many(url: str, n: int) -> list[str]:
    costs = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(url + CHAT, json=HI) as r:
                assert r.status == 200
                costs.append(r.headers["x-arbstr-cost-sats"])
    return costs


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    return out


async def test_serve_logs_every_request_and_flushes_on_sigterm(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db = str(tmp_path / "serve.db")
    if backend == "postgres":
        db = request.getfixturevalue("pg_server").create_database()
    proc, url = serve(db, tmp_path)
    out = ""
    try:
        await wait_up(proc, url)
        costs = await post_many(url, 25)
        _, health = await get_json(url + "/health")
        assert (health["database"], health["log_dropped"]) == ("ok", 0)
    finally:
        if proc.poll() is None:
            out = stop(proc)
    assert "request log: " in out
    if backend == "postgres":
        assert "postgresql://arbstr:***@127.0.0.1" in out and PASSWORD not in out
    rows = db_rows(
        db, "SELECT SUM(CAST(ROUND(cost_sats * 1000) AS BIGINT)), COUNT(*) FROM requests"
    )
    assert rows == [(sum(int(Decimal(c) * 1000) for c in costs), 25)]


def _without_dac_override() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run(  # noqa: S603
        [setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"],
        capture_output=True,
        check=False,
    )
    return (
        [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
        if probe.returncode == 0
        else None
    )


async def test_serve_with_a_read_only_database_keeps_proxying(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    db = str(tmp_path / "ro.db")
    Store.open(db).close()
    os.chmod(db, 0o444)
    proc, url = serve(db, tmp_path, prefix)
    try:
        await wait_up(proc, url)
        await post_many(url, 4)
        status, health = await get_json(url + "/health")
        assert status == 200 and health["status"] == "ok"
        assert health["database"] == "unavailable"
        deadline = time.monotonic() + 5
        while health["log_dropped"] < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            _, health = await get_json(url + "/health")
        assert health["log_dropped"] == 4
        status, stats = await get_json(url + "/v1/stats")  # reads still work
        assert status == 200 and stats["counts"]["total"] == 0
    finally:
        out = stop(proc) if proc.poll() is None else proc.communicate()[0]
    assert "request log unavailable" in out
    assert "readonly" in out or "read-only" in out
    assert db_rows(db, "SELECT COUNT(*) FROM requests") == [(0,)]
