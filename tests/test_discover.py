"""`arbstr discover`: Routstr nodes from Nostr announcements, their prices, the cheapest.

The end-to-end tests run two real relays (the ``nostr-relay`` package, see nostr_relay.py) on
loopback: a *lax* one that stores whatever it is sent, bad signatures included, and a *strict*
one that verifies signatures itself (an independent implementation, so its ``OK`` checks our
ids and signatures). Fake Routstr nodes are aiohttp servers in a thread of their own, so that
the CLI, run as a subprocess, can reach them while a test waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.config import ModelInfo, config_from_data
from arbstr.money import MAX_MSATS, Rates
from arbstr.routstr.discover import (
    ROUTSTR_NODE_KIND,
    Discovery,
    Node,
    NodeReport,
    cheapest_offers,
    discover,
    fetch_node,
    model_base_urls,
)
from arbstr.routstr.models import parse_models, parse_sats_pricing
from arbstr.routstr.nostr import (
    Event,
    event_id,
    latest_replaceable,
    matches_filter,
    public_key_hex,
    query_relay,
    serialize_event,
    sign_event,
    verify_event,
    verify_schnorr,
)
from arbstr.routstr.render import provider_names, render_tables, render_toml
from nostr_relay import NostrRelay, publish
from serving import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def key(label: str) -> str:
    """A deterministic test secret key."""
    return hashlib.sha256(f"arbstr-test-{label}".encode()).hexdigest()


def models_body(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": entries}).encode()


def priced(
    model: str, prompt: Any, completion: Any, request: Any = 0, **pricing: Any
) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "sats_pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": request,
            "max_cost": 123,
            **pricing,
        },
    }


# ---------------------------------------------------------------------------------------------
# Fake Routstr nodes, in a thread with their own event loop


class FakeNodes:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def _run(self, coro: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def add(self, routes: dict[str, bytes]) -> int:
        """A server answering GET ``path`` with ``body`` for each route (404 otherwise)."""

        async def start() -> int:
            app = web.Application()
            for path, body in routes.items():

                async def handler(_: web.Request, body: bytes = body) -> web.Response:
                    return web.Response(body=body, content_type="application/json")

                app.router.add_get(path, handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)
            return port

        return self._run(start())

    def close(self) -> None:
        async def stop() -> None:
            for runner in self.runners:
                await runner.cleanup()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


# ---------------------------------------------------------------------------------------------
# The world: two relays, announcements, nodes


@dataclass
class World:
    lax: str
    strict: str
    alpha: int
    beta: int
    gamma: int
    dead: int
    accepted: dict[str, dict[str, bool]]  # relay -> event id -> OK
    events: dict[str, Event]


def announce(
    label: str, d: str, urls: list[str], content: str, *, age_s: int = 60, mints: int = 1
) -> Event:
    tags = [["d", d], *(["u", u] for u in urls)]
    tags += [["mint", f"https://mint{i}.example"] for i in range(mints)]
    return sign_event(
        key(label),
        kind=ROUTSTR_NODE_KIND,
        tags=tags,
        content=content,
        created_at=int(time.time()) - age_s,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("nostr")
    lax = NostrRelay(tmp / "lax", verify_signatures=False)
    strict = NostrRelay(tmp / "strict", verify_signatures=True)
    nodes = FakeNodes()
    try:
        lax.launch()
        strict.launch()
        alpha = nodes.add(
            {
                "/v1/models": models_body(
                    [
                        priced("gpt-4o", 0.0001, 0.0003, 1),
                        priced("gpt-4o-mini", 0.000015, 0.00006, 0),
                    ]
                )
            }
        )
        beta = nodes.add(
            {
                "/v1/models": models_body(
                    [
                        priced("gpt-4o", 0.00005, 0.0002, 0.5, input_cache_read=0.000005),
                        priced("gpt-4o-mini", "0.00002", 0.00008),
                        {"id": "llama-3-70b", "object": "model"},  # no sats_pricing: skipped
                        priced("odd", "abc", 1),  # not a number: skipped
                        priced("negative", -1, 1),  # skipped
                    ]
                )
            }
        )
        gamma = nodes.add(  # serves the list at the root only: {u}/v1/models is a 404
            {"/models": models_body([priced("claude-3.5-sonnet", 0.0003, 0.0015)])}
        )
        dead = free_port()  # nothing listens there

        alpha_old = announce(
            "alpha", "alpha", [f"http://127.0.0.1:{dead}"], '{"name": "Alpha (old)"}', age_s=600
        )
        alpha_new = announce(
            "alpha",
            "alpha",
            ["http://alphanodexyz.onion", f"http://127.0.0.1:{alpha}"],
            json.dumps({"name": "Alpha Node", "about": "fast\nand cheap \x1b[31mred"}),
        )
        beta_ev = announce(
            "beta", "beta", [f"http://127.0.0.1:{beta}/v1/"], '{"name": "Beta"}', mints=2
        )
        gamma_ev = announce("gamma", "gamma", [f"http://127.0.0.1:{gamma}"], "not json")
        delta = announce("delta", "delta", [f"http://127.0.0.1:{dead}"], '{"name": "Delta Dead"}')
        good = announce("evil", "evil", [f"http://127.0.0.1:{beta}"], '{"name": "Forged"}')
        bad_sig = good.sig[:-2] + ("00" if good.sig[-2:] != "00" else "01")
        forged = replace(good, sig=bad_sig)  # right id, wrong signature
        signed = announce("evil2", "evil2", [f"http://127.0.0.1:{beta}"], '{"name": "Honest"}')
        tampered = replace(signed, content='{"name": "Tampered"}')  # id no longer matches
        note = sign_event(key("alpha"), kind=1, content="hello")

        lax.wait_ready()
        strict.wait_ready()
        accepted = {
            "lax": asyncio.run(
                publish(lax.url, [alpha_new, beta_ev, delta, forged, tampered, note])
            ),
            "strict": asyncio.run(publish(strict.url, [alpha_old, beta_ev, gamma_ev])),
        }
        yield World(
            lax=lax.url,
            strict=strict.url,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            dead=dead,
            accepted=accepted,
            events={
                "alpha_old": alpha_old,
                "alpha_new": alpha_new,
                "beta": beta_ev,
                "forged": forged,
                "tampered": tampered,
            },
        )
    finally:
        nodes.close()
        lax.stop()
        strict.stop()


def run_cli(
    *args: str, timeout_s: float = 30, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, "-m", "arbstr", "discover", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env=env,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Against the real relays


def test_relays_store_what_they_should(world: World) -> None:
    """The lax relay keeps the forged and tampered events (so the client must drop them); the
    strict relay, an independent implementation that verifies, accepts our ids and signatures."""
    ev = world.events
    assert world.accepted["lax"][ev["forged"].id] is True
    assert world.accepted["lax"][ev["tampered"].id] is True
    assert world.accepted["strict"][ev["beta"].id] is True
    assert world.accepted["strict"][ev["alpha_old"].id] is True


async def test_discover_finds_verified_newest_nodes(world: World) -> None:
    d = await discover([world.lax, world.strict], timeout_s=5)
    assert set(d.relays_answered) == {world.lax, world.strict}
    assert d.relay_errors == {}
    by_name = {r.node.name: r for r in d.nodes}
    # forged and tampered announcements are dropped; alpha's older version is replaced
    assert set(by_name) == {"Alpha Node", "Beta", "gamma", "Delta Dead"}
    assert d.dropped_events >= 2

    alpha = by_name["Alpha Node"]
    assert alpha.node.pubkey == public_key_hex(key("alpha"))
    assert alpha.node.provider_id == "alpha"
    assert alpha.node.about.startswith("fast")
    assert alpha.error is None
    assert alpha.url == f"http://127.0.0.1:{world.alpha}/v1"  # .onion skipped, /v1 added
    assert alpha.models == {  # sats_pricing.request is not billed: no base fee
        "gpt-4o": Rates.of("0.1", "0.3"),
        "gpt-4o-mini": Rates.of("0.015", "0.06"),
    }

    beta = by_name["Beta"]
    assert beta.url == f"http://127.0.0.1:{world.beta}/v1"  # trailing slash dropped
    assert beta.node.mints == ("https://mint0.example", "https://mint1.example")
    assert beta.models == {
        "gpt-4o": Rates.of("0.05", "0.2", 0, "0.005"),
        "gpt-4o-mini": Rates.of("0.02", "0.08"),
    }

    gamma = by_name["gamma"]  # content not JSON: named after its d tag
    assert gamma.url == f"http://127.0.0.1:{world.gamma}"  # /v1/models 404 -> /models
    assert gamma.models == {"claude-3.5-sonnet": Rates.of("0.3", "1.5")}

    delta = by_name["Delta Dead"]
    assert delta.url is None
    assert delta.models == {}
    assert delta.error is not None
    assert "cannot connect" in delta.error


async def test_cheapest_per_model(world: World) -> None:
    d = await discover([world.lax, world.strict], timeout_s=5)
    offers = {o.model: o for o in cheapest_offers(d.nodes)}
    assert sorted(offers) == ["claude-3.5-sonnet", "gpt-4o", "gpt-4o-mini"]
    gpt4o = offers["gpt-4o"]
    assert (gpt4o.report.node.name, gpt4o.nodes) == ("Beta", 2)
    assert (gpt4o.rates.input_rate, gpt4o.rates.output_rate, gpt4o.rates.base_fee) == (
        Decimal("0.05"),
        Decimal("0.2"),
        Decimal(0),
    )
    assert gpt4o.rates.cache_read_rate == Decimal("0.005")
    assert offers["gpt-4o-mini"].report.node.name == "Alpha Node"
    assert offers["claude-3.5-sonnet"].report.node.name == "gamma"


def test_cli_prints_tables(world: World) -> None:
    t0 = time.monotonic()
    res = run_cli("--relay", world.lax, "--relay", world.strict, "--timeout", "5", "--wide")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for text in (
        "Alpha Node",
        "Beta",
        "gamma",
        "Delta Dead",
        "cannot connect",
        "claude-3.5-sonnet",
    ):
        assert text in out
    assert "Forged" not in out
    assert "Tampered" not in out
    assert "Alpha (old)" not in out
    row = next(line for line in out.splitlines() if "gpt-4o " in line or "gpt-4o│" in line)
    assert "Beta" in row
    assert "0.05" in row
    assert "0.2" in row
    assert "0.005" in row  # the cache-read rate, shown as it differs from the input rate
    assert "0.5" not in row  # sats_pricing.request: not a fee
    mini = next(line for line in out.splitlines() if "gpt-4o-mini" in line)
    assert mini.count("0.015") == 1  # a cache rate equal to the input rate is not repeated
    assert "\x1b[31m" not in out  # a node's text cannot drive the terminal
    assert time.monotonic() - t0 < 10
    narrow = run_cli("--relay", world.lax, "--relay", world.strict, "--timeout", "5", columns=80)
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "Delta Dead" in narrow.stdout and "gpt-4o-mini" in narrow.stdout


def test_cli_toml_is_valid_config(world: World) -> None:
    res = run_cli("--relay", world.lax, "--relay", world.strict, "--toml", "--timeout", "5")
    assert res.returncode == 0, res.stderr
    data = tomllib.loads(res.stdout)
    cfg = config_from_data(data, source="<discover>", env={})
    providers = {p.name: p for p in cfg.providers}
    assert set(providers) == {"alpha-node", "beta", "gamma"}
    alpha = providers["alpha-node"]
    assert alpha.url == f"http://127.0.0.1:{world.alpha}/v1"
    # no pinned models: discovery serves whatever the node lists now
    assert "models" not in data["providers"][0]
    assert alpha.models is None
    assert alpha.discover is True
    assert alpha.api_key is None
    assert providers["gamma"].url == f"http://127.0.0.1:{world.gamma}"
    assert "ARBSTR_ALPHA_NODE_API_KEY" in res.stdout
    assert "api_key" not in data["providers"][0]
    assert "# skipped Delta Dead" in res.stdout


def test_cli_refused_relay_alone_exits_1() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    res = run_cli("--relay", url, "--timeout", "3")
    assert res.returncode == 1
    assert f"warning: relay {url}" in res.stderr
    assert "no relay answered" in res.stderr
    assert res.stdout == ""


def test_cli_refused_relay_among_others_is_a_warning(world: World) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    res = run_cli("--relay", url, "--relay", world.strict, "--timeout", "5")
    assert res.returncode == 0, res.stderr
    assert f"warning: relay {url}" in res.stderr
    assert "Beta" in res.stdout


# ---------------------------------------------------------------------------------------------
# Relay protocol edge cases, against small in-process websocket servers


async def ws_server(
    handler: Callable[[web.WebSocketResponse, list[Any]], Awaitable[None]],
) -> tuple[web.AppRunner, str]:
    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        req = json.loads(await ws.receive_str())
        await handler(ws, req)
        return ws

    app = web.Application()
    app.router.add_get("/", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"ws://127.0.0.1:{port}/"


async def test_relay_without_eose_times_out_keeping_events() -> None:
    ev = announce("slow", "slow", ["http://127.0.0.1:1"], "{}")
    release = asyncio.Event()

    async def handler(ws: web.WebSocketResponse, req: list[Any]) -> None:
        await ws.send_str(json.dumps(["EVENT", req[1], ev.to_json()]))
        await ws.send_str(json.dumps(["EVENT", "other-sub", ev.to_json()]))  # ignored
        await release.wait()  # never EOSE

    runner, url = await ws_server(handler)
    try:
        async with aiohttp.ClientSession() as s:
            a = await query_relay(s, url, [{"kinds": [ROUTSTR_NODE_KIND]}], timeout_s=0.5)
        assert a.events == [ev]
        assert a.answered
        assert a.error is not None
        assert "no EOSE" in a.error
    finally:
        release.set()
        await runner.cleanup()


async def test_relay_closed_subscription_and_unasked_kinds() -> None:
    note = sign_event(key("x"), kind=1, content="not asked for")

    async def handler(ws: web.WebSocketResponse, req: list[Any]) -> None:
        await ws.send_str("not json")
        await ws.send_str(json.dumps(["NOTICE", "hello"]))
        await ws.send_str(json.dumps(["EVENT", req[1], note.to_json()]))
        await ws.send_str(json.dumps(["EVENT", req[1], {"id": "nope"}]))
        await ws.send_str(json.dumps(["CLOSED", req[1], "auth-required: no"]))

    runner, url = await ws_server(handler)
    try:
        async with aiohttp.ClientSession() as s:
            a = await query_relay(s, url, [{"kinds": [ROUTSTR_NODE_KIND]}], timeout_s=3)
        assert a.events == []
        assert a.dropped == 2
        assert a.notices[-1] == "hello"
        assert not a.answered
        assert a.error == "relay closed the subscription: auth-required: no"
    finally:
        await runner.cleanup()


async def test_relay_url_errors_never_raise() -> None:
    async with aiohttp.ClientSession() as s:
        not_ws = await query_relay(s, "https://relay.example", [{}], timeout_s=1)
        refused = await query_relay(s, f"ws://127.0.0.1:{free_port()}", [{}], timeout_s=2)
        garbage = await query_relay(s, "ws://[::1", [{}], timeout_s=1)
    assert not_ws.error == "not a ws:// or wss:// URL"
    assert refused.error is not None
    assert "cannot connect" in refused.error
    assert garbage.error is not None
    assert not (not_ws.answered or refused.answered or garbage.answered)


async def test_slow_node_times_out() -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_get("/v1/models", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    node = Node.from_event(announce("slow", "slow", [f"http://127.0.0.1:{port}"], "{}"))
    try:
        async with aiohttp.ClientSession() as s:
            rep = await fetch_node(s, node, timeout_s=0.3)
        assert rep.url is None
        assert rep.error is not None
        assert "no answer within 0.3 s" in rep.error
    finally:
        release.set()
        await runner.cleanup()


async def test_unusable_urls_are_reported() -> None:
    node = Node.from_event(announce("tor", "tor", ["http://abcdefghij.onion"], "{}"))
    async with aiohttp.ClientSession() as s:
        onion = await fetch_node(s, node, timeout_s=1)
        ftp = await fetch_node(s, replace(node, urls=("ftp://nope",)), timeout_s=1)
        none = await fetch_node(s, replace(node, urls=()), timeout_s=1)
    assert onion.url is None
    assert onion.error is not None
    assert onion.error.endswith(".onion URLs need Tor")
    assert ftp.error == "ftp://nope: not an http(s) URL"
    assert none.error == "announces no URL"


# ---------------------------------------------------------------------------------------------
# Events: ids, signatures, de-duplication (pure)


def test_bip340_vector_0() -> None:
    """BIP-340 test vector 0 (secret key 3, aux 0, message 0)."""
    pub = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
    sig = (
        "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca8215"
        "25f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0"
    )
    assert public_key_hex("00" * 31 + "03") == pub
    assert verify_schnorr(pub, bytes(32), sig)
    assert not verify_schnorr(pub, b"\x01" + bytes(31), sig)
    assert not verify_schnorr(pub, bytes(32), sig[:-1] + "1")
    assert not verify_schnorr("00" * 32, bytes(32), sig)  # not a curve point
    assert not verify_schnorr(pub, bytes(32), "zz")


def test_canonical_serialization() -> None:
    pk = "ab" * 32
    raw = serialize_event(pk, 7, 1, [["t", "x"]], 'a\nb"c\\d\te\x01é😀\u2028')
    expected = '[0,"' + pk + '",7,1,[["t","x"]],"a\\nb\\"c\\\\d\\te\\u0001é😀\u2028"]'
    assert raw == expected.encode("utf-8")
    assert (
        event_id(pk, 7, 1, [["t", "x"]], "")
        == hashlib.sha256(f'[0,"{pk}",7,1,[["t","x"]],""]'.encode()).hexdigest()
    )


def test_sign_verify_and_tamper() -> None:
    ev = sign_event(key("a"), kind=38421, tags=[["d", "x"]], content="{}", created_at=1000)
    assert verify_event(ev)
    assert Event.from_json(json.loads(json.dumps(ev.to_json()))) == ev
    assert not verify_event(replace(ev, content="{ }"))
    assert not verify_event(replace(ev, created_at=1001))
    assert not verify_event(replace(ev, tags=(("d", "y"),)))
    assert not verify_event(replace(ev, pubkey=public_key_hex(key("b"))))
    assert not verify_event(replace(ev, sig="00" * 64))
    assert not verify_event(replace(ev, content="\ud800"))  # not encodable: invalid, no raise


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": "AB" * 32}, "id"),
        ({"pubkey": "ab"}, "pubkey"),
        ({"sig": 5}, "sig"),
        ({"created_at": "1"}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"kind": 70000}, "kind"),
        ({"content": None}, "content"),
        ({"tags": [["d", 1]]}, "tags"),
        ({"tags": "d"}, "tags"),
    ],
)
def test_event_from_json_rejects_malformed(patch: dict[str, Any], field: str) -> None:
    good = sign_event(key("a"), kind=1, created_at=1).to_json()
    with pytest.raises(ValueError, match=field):
        Event.from_json({**good, **patch})
    with pytest.raises(ValueError, match="not a JSON object"):
        Event.from_json([good])


def test_latest_replaceable() -> None:
    def ev(label: str, kind: int, d: str, at: int, content: str = "") -> Event:
        return sign_event(key(label), kind=kind, tags=[["d", d]], content=content, created_at=at)

    old, new = ev("a", 38421, "n1", 100), ev("a", 38421, "n1", 200)
    other_d = ev("a", 38421, "n2", 50)
    other_author = ev("b", 38421, "n1", 10)
    t1, t2 = ev("a", 38421, "tie", 300, "x"), ev("a", 38421, "tie", 300, "y")
    notes = [ev("a", 1, "", 5, "one"), ev("a", 1, "", 5, "two")]
    meta_old, meta_new = ev("a", 0, "", 1), ev("a", 0, "", 2)
    got = latest_replaceable(
        [new, old, other_d, other_author, t1, t2, *notes, new, meta_new, meta_old]
    )
    assert new in got
    assert old not in got
    assert other_d in got
    assert other_author in got
    assert min(t1, t2, key=lambda e: e.id) in got
    assert max(t1, t2, key=lambda e: e.id) not in got
    assert all(n in got for n in notes)
    assert meta_new in got
    assert meta_old not in got
    assert len(got) == 7  # new, other_d, other_author, tie winner, 2 notes, meta_new
    assert [e.created_at for e in got] == sorted((e.created_at for e in got), reverse=True)


def test_matches_filter() -> None:
    ev = sign_event(key("a"), kind=38421, tags=[["d", "x"], ["u", "http://a"]], created_at=100)
    assert matches_filter(ev, {"kinds": [38421], "limit": 5})
    assert not matches_filter(ev, {"kinds": [1]})
    assert matches_filter(ev, {"authors": [ev.pubkey], "#d": ["x", "y"], "since": 100})
    assert not matches_filter(ev, {"#d": ["y"]})
    assert not matches_filter(ev, {"until": 99})
    assert not matches_filter(ev, {"ids": ["00" * 32]})


# ---------------------------------------------------------------------------------------------
# Prices, URLs, names, TOML (pure)


def test_parse_sats_pricing_converts_exactly() -> None:
    body = models_body(
        [
            priced("a", 0.0001, 0.0003, 1),
            priced("b", 1.5e-05, "2.5e-6", "0.25"),
            priced("c", 0, 0, None),  # null request fee: 0
            priced("a", 9, 9, 9),  # repeated id: first kept
            {"id": "d", "sats_pricing": {"prompt": 1e-7, "completion": 3e-7}, "extra": [1]},
        ]
    )
    rates = parse_sats_pricing(body)
    assert rates == {  # sats_pricing.request is never billed: no base fee
        "a": Rates.of("0.1", "0.3"),
        "b": Rates.of("0.015", "0.0025"),
        "c": Rates.of(0, 0),
        "d": Rates.of("0.0001", "0.0003"),
    }
    assert str(rates["a"].input_rate) == "0.1"  # no float noise: 0.0001 * 1000, exactly
    assert rates["a"].input_rate == Decimal("0.1")
    assert parse_sats_pricing(json.dumps([priced("x", 1, 2)]).encode()) == {
        "x": Rates.of(1000, 2000, 0)
    }


def test_parse_sats_pricing_skips_odd_entries() -> None:
    body = (
        b'{"data": [1, "x", null, {"id": 5, "sats_pricing": {"prompt": 1, "completion": 1}},'
        b'{"id": "", "sats_pricing": {"prompt": 1, "completion": 1}},'
        b'{"id": "nopricing"}, {"id": "list", "sats_pricing": [1, 2]},'
        b'{"id": "missing", "sats_pricing": {"prompt": 1}},'
        b'{"id": "bool", "sats_pricing": {"prompt": true, "completion": 1}},'
        b'{"id": "nan", "sats_pricing": {"prompt": NaN, "completion": 1}},'
        b'{"id": "inf", "sats_pricing": {"prompt": "Infinity", "completion": 1}},'
        b'{"id": "huge", "sats_pricing": {"prompt": 1e400, "completion": 1}},'
        b'{"id": "neg", "sats_pricing": {"prompt": -1, "completion": 1}},'
        b'{"id": "obj", "sats_pricing": {"prompt": {}, "completion": 1}},'
        b'{"id": "surrogate\\ud800", "sats_pricing": {"prompt": 1, "completion": 1}},'
        b'{"id": "ok", "sats_pricing": {"prompt": " 0.5 ", "completion": 1}}]}'
    )
    assert parse_sats_pricing(body) == {"ok": Rates.of(500, 1000, 0)}


def test_parse_models_reads_cache_rates_and_model_info() -> None:
    body = models_body(
        [
            {
                "id": "claude-3.5-sonnet",
                "canonical_slug": "anthropic/claude-3.5-sonnet-20240620",
                "context_length": 200000,
                "architecture": {"input_modalities": ["text", "image", 5, "text"]},
                "top_provider": {"context_length": 100000, "max_completion_tokens": 8192},
                "sats_pricing": {
                    "prompt": 0.003,
                    "completion": "0.015",
                    "request": 7,  # never billed: ignored
                    "input_cache_read": 0.0003,
                    "input_cache_write": 0.00375,
                    "max_cost": "123.4567",
                    "max_completion_cost": 122,
                },
            },
            {  # the bare minimum: cache rates are the prompt rate, no metadata
                "id": "plain",
                "sats_pricing": {"prompt": 0.001, "completion": 0.002},
                "top_provider": {"context_length": 4096.0},
            },
        ]
    )
    listing = parse_models(body)
    assert listing.rates == {
        "claude-3.5-sonnet": Rates.of(3, 15, 0, "0.3", "3.75"),
        "plain": Rates.of(1, 2, 0, 1, 1),
    }
    assert listing.info == {
        "claude-3.5-sonnet": ModelInfo(
            max_cost_msats=123457,  # 123.4567 sats, rounded up to the millisat
            max_completion_cost_msats=122000,
            context_length=200000,
            max_completion_tokens=8192,
            input_modalities=("text", "image"),
            canonical_slug="anthropic/claude-3.5-sonnet-20240620",
        ),
        "plain": ModelInfo(context_length=4096),  # top_provider's, when the entry has none
    }


def test_parse_models_ignores_odd_values_one_field_at_a_time() -> None:
    odd: dict[str, Any] = {
        "id": "m",
        "canonical_slug": "bad\nslug",
        "context_length": -5,
        "architecture": {"input_modalities": "text"},
        "top_provider": {"context_length": 1.5, "max_completion_tokens": True},
        "sats_pricing": {
            "prompt": 0.001,
            "completion": 0.002,
            "request": "junk",
            "input_cache_read": -1,
            "input_cache_write": "abc",
            "max_cost": 1e300,
            "max_completion_cost": [1],
        },
    }
    listing = parse_models(
        models_body([odd, {**odd, "id": "n", "top_provider": [], "architecture": 1}])
    )
    assert listing.rates == {"m": Rates.of(1, 2), "n": Rates.of(1, 2)}
    assert listing.info == {"m": ModelInfo(), "n": ModelInfo()}
    huge = {**odd, "context_length": 10**400, "canonical_slug": "x" * 300}
    assert parse_models(models_body([huge])).info["m"] == ModelInfo()


@pytest.mark.parametrize(
    "body", [b"", b"<html>", b"\xff\xfe\x00", b"3", b'"x"', b'{"data": {}}', b"{}", b"null"]
)
def test_parse_sats_pricing_rejects_non_lists(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"not JSON|not a model list"):
        parse_sats_pricing(body)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from(["0.001", "-1", "1e999", "x"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("id", "data", "sats_pricing", "prompt", "completion", "request", "k"),
                    *("input_cache_read", "input_cache_write", "max_cost", "max_completion_cost"),
                    *("context_length", "top_provider", "max_completion_tokens", "architecture"),
                    *("input_modalities", "canonical_slug"),
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_parse_sats_pricing_never_raises_on_a_model_list(doc: Any) -> None:
    body = json.dumps(doc).encode()
    is_list = isinstance(doc, list) or (isinstance(doc, dict) and isinstance(doc.get("data"), list))
    if is_list:
        listing = parse_models(body)
        assert listing.info.keys() == listing.rates.keys()
        for model, rates in listing.rates.items():
            assert isinstance(model, str)
            assert rates.input_rate >= 0
            assert rates.output_rate >= 0
            assert rates.base_fee == 0
            assert rates.cache_read_rate >= 0 and rates.cache_write_rate >= 0
            info = listing.info[model]
            for n in (info.context_length, info.max_completion_tokens):
                assert n is None or (type(n) is int and 0 < n <= 10**9)
            for m in (info.max_cost_msats, info.max_completion_cost_msats):
                assert m is None or (type(m) is int and 0 <= m <= MAX_MSATS)
            assert all(isinstance(x, str) for x in info.input_modalities)
            assert info.canonical_slug is None or isinstance(info.canonical_slug, str)
    else:
        with pytest.raises(ValueError, match="not a model list"):
            parse_sats_pricing(body)


@pytest.mark.parametrize(
    ("url", "bases"),
    [
        ("https://node.example", ["https://node.example/v1", "https://node.example"]),
        ("https://node.example/", ["https://node.example/v1", "https://node.example"]),
        ("https://node.example/v1", ["https://node.example/v1"]),
        (" https://node.example/v1/ ", ["https://node.example/v1"]),
        ("http://1.2.3.4:8000/api", ["http://1.2.3.4:8000/api/v1", "http://1.2.3.4:8000/api"]),
        ("wss://node.example", []),
        ("node.example", []),
        ("https://", []),
        ("http://[::1", []),
        ("https://node.example/?x=1", []),
    ],
)
def test_model_base_urls(url: str, bases: list[str]) -> None:
    assert model_base_urls(url) == bases


def report(name: str, d: str = "", models: dict[str, Rates] | None = None) -> NodeReport:
    node = Node(d, "ab" * 32, name, "", ("http://n.example",), (), 1)
    return NodeReport(node, "http://n.example/v1", models or {"m": Rates.of(1, 1)})


def test_provider_names_are_sanitised_and_unique() -> None:
    names = provider_names(
        [
            report("Alpha Node"),
            report("alpha node!"),
            report("Ünïcode Ñode"),
            report("   ", d="My.Node"),
            report("€€€"),
            report("x" * 100),
        ]
    )
    assert names[:5] == ["alpha-node", "alpha-node-2", "unicode-node", "my-node", "node-abababab"]
    assert len(names[5]) <= 64
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for n in names)


def test_render_toml_escapes_remote_text() -> None:
    odd_models = {'gpt "4"\\x': Rates.of(1, 2), "tab\there": Rates.of(1, 2), "é": Rates.of(1, 2)}
    reports = (
        report('Quote " Node\n[[providers]]', models=odd_models),
        report("second"),
        NodeReport(Node("", "cd" * 32, "broken", "", (), (), 1), None, {}, "down\nnow"),
    )
    text = render_toml(Discovery(reports, ("ws://r",), {}, 0))
    data = tomllib.loads(text)
    cfg = config_from_data(data, source="<t>", env={})
    assert [p.name for p in cfg.providers] == ["quote-node-providers", "second"]
    assert cfg.providers[0].models is None  # the node's odd model names are not pinned
    assert "# skipped broken: down now" in text
    assert "ARBSTR_QUOTE_NODE_PROVIDERS_API_KEY" in text


def test_render_tables_lists_nodes_and_offers() -> None:
    from rich.console import Console

    reports = (report("One", models={"m": Rates.of("0.5", 1, 0)}), report("[bold]Two[/]"))
    nodes, cheap = render_tables(Discovery(reports, ("ws://r",), {}, 0))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(nodes)
    console.print(cheap)
    text = console.export_text()
    assert "[bold]Two[/]" in text  # shown literally, not as markup
    assert "0.5" in text


_field_junk = _json | st.integers() | st.sampled_from(["1e999", "-0", "0.5", "\u0000", 10**400])


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["canonical_slug", "context_length", "architecture", "top_provider", "request"]
        ),
        _field_junk,
    ),
    pricing=st.dictionaries(
        st.sampled_from(
            ["request", "input_cache_read", "input_cache_write", "max_cost", "max_completion_cost"]
        ),
        _field_junk,
    ),
)
def test_odd_metadata_never_costs_the_priced_model(
    fields: dict[str, Any], pricing: dict[str, Any]
) -> None:
    entry = {"id": "m", **fields, "sats_pricing": {"prompt": 0.001, "completion": 0.002, **pricing}}
    listing = parse_models(json.dumps({"data": [entry]}).encode())
    rates, info = listing.rates["m"], listing.info["m"]
    assert (rates.input_rate, rates.output_rate, rates.base_fee) == (
        Decimal(1),
        Decimal(2),
        Decimal(0),
    )
    assert info.context_length is None or 0 < info.context_length <= 10**9
    assert info.max_cost_msats is None or 0 <= info.max_cost_msats <= MAX_MSATS
