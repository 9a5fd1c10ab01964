"""Routstr-native behaviour against fake Routstr nodes on loopback: price discovery,
provider-reported cost, balances."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import config_from_data
from arbstr.money import Rates
from arbstr.routstr.prices import PriceBook, apply_prices, refresh_delay_s
from harness import ProxyThread, make_config

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


class FakeNode:
    """A Routstr node: /v1/models with sats_pricing (sats per token), /v1/balance/info,
    chat completions that report their cost in usage and in X-Routstr-Cost-Msats."""

    def __init__(
        self,
        name: str,
        prompt: float,
        completion: float,
        request: float = 0,
        cache_read: float | None = None,
    ) -> None:
        self.name = name
        self.pricing = {"prompt": prompt, "completion": completion, "request": request}
        if cache_read is not None:
            self.pricing["input_cache_read"] = cache_read
        self.cached_tokens = 0  # usage.prompt_tokens_details.cached_tokens of its answers
        self.models_status = 200
        self.balance_status = 200
        self.charge_msats: int | None = 1234  # None: the node reports no charge
        self.chats = 0
        self.models_calls = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/balance/info", self._balance)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        if self.models_status != 200:
            return web.json_response({"detail": "down"}, status=self.models_status)
        models = [
            {"id": "gpt-4o", "sats_pricing": dict(self.pricing)},
            {"id": "gpt-4o-mini", "sats_pricing": {"prompt": 0.0001, "completion": 0.0002}},
            {"id": "no-price-model"},
        ]
        return web.json_response({"object": "list", "data": models})

    async def _balance(self, request: web.Request) -> web.Response:
        if self.balance_status != 200:
            return web.json_response({"detail": "nope"}, status=self.balance_status)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return web.json_response({"api_key": key, "balance": 123_456_789, "reserved": 1_500})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chats += 1
        body = await request.json()
        usage: dict[str, Any] = {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
        }
        if self.charge_msats is not None:
            usage["cost"] = {"total_msats": self.charge_msats}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": "hi"}}],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            last = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
            return resp
        reply = {
            "id": "c",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {k: v for k, v in usage.items() if k != "cost"},
        }
        reported = (
            {} if self.charge_msats is None else {"X-Routstr-Cost-Msats": str(self.charge_msats)}
        )
        return web.json_response(reply, headers=reported)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[FakeNode, FakeNode]]:
    # cheap: 0.005 / 0.015 sats per token = 5 / 15 sats per 1k (cached prompt tokens 0.5);
    # dear: 8 / 24 per 1k (its 1 sat "request" price is never billed)
    cheap = FakeNode("cheap", 0.005, 0.015, cache_read=0.0005)
    dear = FakeNode("dear", 0.008, 0.024, 1)
    await cheap.start()
    await dear.start()
    yield cheap, dear
    await cheap.close()
    await dear.close()


def discovering(url: str, name: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "api_key": f"sk-{name}-secret-key-0000",
        "discover": True,
        **kw,
    }


async def start_proxy(proxies: list[ProxyThread], data: dict[str, Any]) -> ProxyThread:
    """Started off the event loop: the proxy fetches prices from nodes served by this loop."""
    proxy = await asyncio.to_thread(ProxyThread(make_config(data)).start)
    proxies.append(proxy)
    return proxy


async def post(proxy: ProxyThread, payload: Any = None) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=payload or HI) as r:
        return r.status, r.headers.copy(), await r.read()


async def get_json(proxy: ProxyThread, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(proxy.url + path) as r:
        assert r.status == 200
        return await r.json()


async def test_discovered_prices_route_to_the_cheaper_node_and_follow_price_changes(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, dear = nodes
    data = {
        "providers": [
            discovering(cheap.url, "cheap", discover_interval_s=0.3),
            discovering(dear.url, "dear", discover_interval_s=0.3),
        ]
    }
    proxy = await start_proxy(proxies, data)
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "cheap"
    # the node's own charge, not 100 prompt * 5 / 1000 + 50 completion * 15 / 1000 = 1.25
    assert headers["x-arbstr-cost-sats"] == "1.234"
    assert headers["x-arbstr-cost-source"] == "provider"
    listed = {p["name"]: p for p in (await get_json(proxy, "/providers"))["data"]}
    assert listed["cheap"]["model_rates"]["gpt-4o"] == {
        "input_rate": 5.0,
        "output_rate": 15.0,
        "cache_read_rate": 0.5,  # sats_pricing.input_cache_read
        "base_fee": 0.0,
    }
    # sats_pricing.request is never billed: no base fee; no cache price: the input rate
    assert listed["dear"]["model_rates"]["gpt-4o"]["base_fee"] == 0.0
    assert listed["dear"]["model_rates"]["gpt-4o"]["cache_read_rate"] == 8.0
    disc = listed["cheap"]["discovery"]
    assert disc["enabled"] and disc["models"] == 2 and disc["last_error"] is None
    assert disc["age_s"] is not None and disc["age_s"] < 5
    assert "no-price-model" not in listed["cheap"]["models"]
    models = {m["id"] for m in (await get_json(proxy, "/v1/models"))["data"]}
    assert models == {"gpt-4o", "gpt-4o-mini"}

    cheap.pricing = {"prompt": 0.05, "completion": 0.15, "request": 2}  # now far dearer
    calls = cheap.models_calls
    for _ in range(100):
        await asyncio.sleep(0.05)
        if cheap.models_calls > calls:
            break
    await asyncio.sleep(0.05)
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "dear"


async def test_failed_refresh_keeps_last_prices_and_shows_the_error(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, dear = nodes
    data = {
        "providers": [
            discovering(cheap.url, "cheap", discover_interval_s=0.2),
            discovering(dear.url, "dear"),
        ]
    }
    proxy = await start_proxy(proxies, data)
    cheap.models_status = 503
    calls = cheap.models_calls
    for _ in range(100):
        await asyncio.sleep(0.05)
        if cheap.models_calls > calls:
            break
    await asyncio.sleep(0.05)
    listed = {p["name"]: p for p in (await get_json(proxy, "/providers"))["data"]}
    disc = listed["cheap"]["discovery"]
    assert "503" in disc["last_error"]
    assert disc["last_success"] is not None  # the last good prices are still in use
    assert listed["cheap"]["model_rates"]["gpt-4o"]["input_rate"] == 5.0
    _, headers, _ = await post(proxy)
    assert headers["x-arbstr-provider"] == "cheap"


async def test_provider_without_known_prices_is_not_routed(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, dear = nodes
    cheap.models_status = 500
    data = {"providers": [discovering(cheap.url, "cheap"), discovering(dear.url, "dear")]}
    proxy = await start_proxy(proxies, data)
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "dear"
    assert cheap.chats == 0  # never priced at zero, never chosen
    listed = {p["name"]: p for p in (await get_json(proxy, "/providers"))["data"]}
    assert listed["cheap"]["discovery"]["last_success"] is None
    assert "500" in listed["cheap"]["discovery"]["last_error"]


async def test_configured_model_rates_override_discovered_prices(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, dear = nodes
    override = {"gpt-4o": {"input_rate": 100, "output_rate": 100}}
    data = {
        "providers": [
            discovering(cheap.url, "cheap", model_rates=override),
            discovering(dear.url, "dear"),
        ]
    }
    proxy = await start_proxy(proxies, data)
    _, headers, _ = await post(proxy)
    assert headers["x-arbstr-provider"] == "dear"


async def test_provider_reported_cost_is_recorded(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, _ = nodes
    cheap.charge_msats = 1750  # the node says 1.75 sats; its prices imply 1.25
    proxy = await start_proxy(proxies, {"providers": [discovering(cheap.url, "cheap")]})
    await post(proxy)  # cost in the X-Routstr-Cost-Msats header
    await post(proxy, {**HI, "stream": True})  # cost in the stream's usage chunk
    for _ in range(100):
        if len(proxy.records) >= 2:
            break
        await asyncio.sleep(0.02)
    plain, streamed = proxy.records[:2]
    assert plain.cost_msats == 1750 and plain.provider_cost_msats == 1750
    assert plain.computed_cost_msats == 1250
    assert streamed.streaming
    assert streamed.cost_msats == 1750 and streamed.computed_cost_msats == 1250
    assert streamed.provider_cost_msats == 1750


async def test_balances_per_provider_never_fail_the_whole_call(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, dear = nodes
    dear.balance_status = 401
    data = {
        "providers": [
            {"name": "cheap", "url": cheap.url, "api_key": "sk-cheap-secret-key-0000"},
            {"name": "dear", "url": dear.url, "api_key": "sk-dear-secret-key-0000"},
            {"name": "gone", "url": "http://127.0.0.1:9/v1", "api_key": "sk-gone-secret-key-00"},
            {"name": "keyless", "url": cheap.url},
        ]
    }
    proxy = await start_proxy(proxies, data)
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/balances") as r:
        assert r.status == 200
        raw = await r.read()
    assert b"secret" not in raw  # the node echoes the key; arbstr never passes it on
    got = {b["provider"]: b for b in json.loads(raw)["data"]}
    assert got["cheap"] == {
        "provider": "cheap",
        "balance_sats": 123456.789,
        "reserved_sats": 1.5,
        "error": None,
    }
    assert got["dear"]["balance_sats"] is None and "401" in got["dear"]["error"]
    assert got["gone"]["error"] and got["gone"]["balance_sats"] is None
    assert got["keyless"]["error"] == "no API key configured"


async def test_discovered_cache_rate_prices_cached_tokens(
    nodes: tuple[FakeNode, FakeNode], proxies: list[ProxyThread]
) -> None:
    cheap, _ = nodes
    cheap.cached_tokens = 60  # of 100 prompt tokens
    cheap.charge_msats = None  # so the header is arbstr's own figure
    proxy = await start_proxy(proxies, {"providers": [discovering(cheap.url, "cheap")]})
    _, headers, _ = await post(proxy)
    # 40 * 5 / 1000 + 60 * 0.5 / 1000 + 50 * 15 / 1000 = 0.2 + 0.03 + 0.75 sats
    assert headers["x-arbstr-cost-sats"] == "0.980"
    assert headers["x-arbstr-cost-source"] == "computed"


def test_apply_prices_keeps_configured_model_list() -> None:
    cfg = config_from_data(
        {
            "providers": [
                {"name": "a", "url": "http://x/v1", "models": ["gpt-4o"], "discover": True}
            ]
        },
        source="<t>",
        env={},
    )
    p = apply_prices(cfg.providers[0], {"gpt-4o": Rates.of(1, 2), "other": Rates.of(3, 4)})
    assert p.models == frozenset({"gpt-4o"})
    assert p.rates_for("gpt-4o").input_rate == 1
    book = PriceBook(cfg.providers)
    assert book.providers == ()  # nothing routable before prices are known
    assert [q.name for q in book.listed] == ["a"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "arbstr", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


async def test_cli_balance_and_providers_with_discovery(
    nodes: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    cheap, dear = nodes
    dear.models_status = 502
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[[providers]]\nname = "cheap"\nurl = "{cheap.url}"\n'
        'api_key = "${CHEAP_KEY}"\ndiscover = true\n\n'
        f'[[providers]]\nname = "dear"\nurl = "{dear.url}"\n'
        'api_key = "${CHEAP_KEY}"\ndiscover = true\n'
    )
    cfg.chmod(0o600)
    os.environ["CHEAP_KEY"] = "sk-cheap-secret-key-0000"
    try:
        bal = await asyncio.to_thread(_cli, "balance", "-c", str(cfg), "--json", cwd=tmp_path)
        prov = await asyncio.to_thread(_cli, "providers", "-c", str(cfg), cwd=tmp_path)
    finally:
        del os.environ["CHEAP_KEY"]
    assert bal.returncode == 0, bal.stderr
    assert "secret" not in bal.stdout
    rows = {b["provider"]: b for b in json.loads(bal.stdout)["data"]}
    assert rows["cheap"]["balance_sats"] == 123456.789
    assert prov.returncode == 0, prov.stderr
    assert "discovered (2 models)" in prov.stdout
    assert "discovery failed" in prov.stdout and "502" in prov.stdout
    cells = [[c.strip() for c in ln.split("│")] for ln in prov.stdout.splitlines() if "│" in ln]
    cheap_row = next(c for c in cells if "cheap" in c)
    assert cheap_row[3:8] == ["gpt-4o", "5", "0.5", "15", "0"]


def test_discovering_providers_refresh_every_120_s_by_default() -> None:
    """Routstr nodes re-price about every 120 s; a 300 s refresh lagged them by minutes."""
    cfg = config_from_data(
        {"providers": [{"name": "node", "url": "http://127.0.0.1:9/v1", "discover": True}]},
        source="<t>",
        env={},
    )
    assert cfg.providers[0].discover_interval_s == 120.0


@given(st.floats(min_value=0.01, max_value=1e6), st.integers(min_value=0, max_value=2**32))
def test_refresh_delay_is_jittered_but_never_longer_than_the_interval(
    interval: float, seed: int
) -> None:
    delay = refresh_delay_s(interval, random.Random(seed))
    assert interval * 0.8 <= delay <= interval


def test_refresh_delays_differ_between_instances() -> None:
    delays = {refresh_delay_s(120.0, random.Random(seed)) for seed in range(20)}
    assert len(delays) == 20
