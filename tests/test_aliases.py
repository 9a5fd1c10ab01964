"""Model aliases: a vendor-prefixed id (``anthropic/claude-3.5-sonnet``) or a listed model's
``canonical_slug`` is served as the provider's listed id, in routing, upstream, the row and
``GET /v1/models``."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from arbstr.config import ModelInfo, Provider, Rule, config_from_data
from arbstr.errors import InvalidRequest
from arbstr.money import Rates
from arbstr.routing.router import route
from arbstr.routstr.prices import apply_prices
from arbstr.server.admin import model_owners
from fake_upstream import FakeUpstream, Reply
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
SLUG = "anthropic/claude-3.5-sonnet-20240620"


def configured(name: str, models: list[str] | None, **kw: Any) -> Provider:
    entry: dict[str, Any] = {"name": name, "url": f"http://{name}.example/v1", **kw}
    if models is not None:
        entry["models"] = models
    return config_from_data({"providers": [entry]}, source="<t>", env={}).providers[0]


def discovered(
    name: str, listing: dict[str, str | None], models: list[str] | None = None, i: float = 1
) -> Provider:
    """A discovering provider after a refresh: ``listing`` = listed id -> canonical slug."""
    rates = {m: Rates.of(i, 2 * i) for m in listing}
    info = {m: ModelInfo(canonical_slug=slug) for m, slug in listing.items()}
    return apply_prices(configured(name, models, discover=True), rates, info)


RULE = Rule("default", (), "lowest_cost", None, ())


def rule(*allowed: str) -> Rule:
    return Rule("r", tuple(allowed), "lowest_cost", None, ())


def go(providers: list[Provider], model: str, r: Rule = RULE) -> list[tuple[str, str]]:
    found = route(providers, r, model, 100, lambda m: 100, {})
    assert found.model == found.candidates[0].model
    return [(c.provider.name, c.model) for c in found.candidates]


# --- Provider.resolve ------------------------------------------------------------------------


def test_resolve_exact_then_canonical_slug_then_vendor_prefix() -> None:
    p = discovered("n", {"claude-3.5-sonnet": SLUG, "gpt-4o": None, "meta/llama": None})
    assert p.resolve("claude-3.5-sonnet") == "claude-3.5-sonnet"
    assert p.resolve(SLUG) == "claude-3.5-sonnet"
    assert p.resolve("anthropic/claude-3.5-sonnet") == "claude-3.5-sonnet"
    assert p.resolve("openai/gpt-4o") == "gpt-4o"
    assert p.resolve("meta/llama") == "meta/llama"  # a listed id with a slash: itself
    assert p.resolve("gpt-4") is None
    assert p.resolve("anthropic/") is None
    assert p.resolve("/gpt-4o") == "gpt-4o"
    assert p.resolve("a/b/gpt-4o") is None  # only one vendor prefix is stripped
    assert p.serves(SLUG) and not p.serves("claude")


def test_any_model_provider_resolves_the_request_unchanged() -> None:
    p = configured("any", None)
    assert p.resolve("anthropic/claude-3.5-sonnet") == "anthropic/claude-3.5-sonnet"


def test_configured_models_take_vendor_prefixed_requests_too() -> None:
    p = configured("c", ["claude-3.5-sonnet"])
    assert p.resolve("anthropic/claude-3.5-sonnet") == "claude-3.5-sonnet"


def test_a_slug_that_is_listed_or_claimed_twice_is_no_alias() -> None:
    p = discovered("n", {"a": "b", "b": None, "c": "shared", "d": "shared"})
    assert p.resolve("b") == "b"  # the exact id wins
    assert p.resolve("shared") is None  # ambiguous: neither


def test_the_slug_index_follows_each_price_refresh() -> None:
    p = discovered("n", {"x": "vendor/x-2024"})
    assert p.resolve("vendor/x-2024") == "x"
    q = apply_prices(configured("n", None, discover=True), {"y": Rates.of(1, 1)}, {})
    assert q.resolve("vendor/x-2024") is None and q.resolve("vendor/y") == "y"


# --- routing ---------------------------------------------------------------------------------


def test_each_candidate_carries_its_providers_listed_id() -> None:
    short = discovered("short", {"claude-3.5-sonnet": SLUG}, i=1)
    long = discovered("long", {"anthropic/claude-3.5-sonnet": None}, i=2)
    assert go([short, long], "anthropic/claude-3.5-sonnet") == [
        ("short", "claude-3.5-sonnet"),
        ("long", "anthropic/claude-3.5-sonnet"),
    ]
    assert go([short, long], SLUG) == [("short", "claude-3.5-sonnet")]
    assert go([short, long], "claude-3.5-sonnet") == [("short", "claude-3.5-sonnet")]


def test_rates_are_those_of_the_listed_id() -> None:
    p = discovered("n", {"claude-3.5-sonnet": None}, i=3)
    found = route([p], RULE, "anthropic/claude-3.5-sonnet", 100, lambda m: 100, {})
    assert found.candidates[0].rates == Rates.of(3, 6)


def test_allowed_models_may_name_aliases() -> None:
    p = discovered("n", {"claude-3.5-sonnet": None, "gpt-4o": None})
    allowed = rule("anthropic/claude-3.5-sonnet")
    assert go([p], "claude-3.5-sonnet", allowed) == [("n", "claude-3.5-sonnet")]
    assert go([p], "anthropic/claude-3.5-sonnet", allowed) == [("n", "claude-3.5-sonnet")]
    with pytest.raises(InvalidRequest, match="not allowed"):
        go([p], "gpt-4o", allowed)
    # auto: an allowed alias picks the listed id; two names of one model count it once
    both = rule("anthropic/claude-3.5-sonnet", "claude-3.5-sonnet")
    assert go([p], "auto", both) == [("n", "claude-3.5-sonnet")]


def test_auto_falls_back_across_spellings_of_the_chosen_model() -> None:
    short = discovered("short", {"claude-3.5-sonnet": None}, i=1)
    long = discovered("long", {"anthropic/claude-3.5-sonnet": None, "gpt-4o": None}, i=2)
    allowed = rule("anthropic/claude-3.5-sonnet", "gpt-4o")
    assert go([short, long], "auto", allowed) == [
        ("short", "claude-3.5-sonnet"),
        ("long", "anthropic/claude-3.5-sonnet"),
    ]


def test_an_override_keyed_by_an_alias_applies_to_the_listed_id() -> None:
    base = configured(
        "n", None, discover=True, model_rates={"anthropic/claude-3.5-sonnet": {"input_rate": 9}}
    )
    p = apply_prices(base, {"claude-3.5-sonnet": Rates.of(1, 2)}, {})
    assert p.rates_for("claude-3.5-sonnet") == Rates.of(9, 0)
    assert p.model_info == {}


def test_v1_models_lists_an_alias_under_the_id_it_resolves_to() -> None:
    short = discovered("short", {"claude-3.5-sonnet": SLUG, "gpt-4o": None})
    long = discovered("long", {"anthropic/claude-3.5-sonnet": None, "other/thing": None})
    slugged = discovered("slugged", {SLUG: None})
    anything = configured("any", None)
    owners = model_owners([short, long, slugged, anything])
    assert owners == {
        "claude-3.5-sonnet": ["short", "long", "slugged"],
        "gpt-4o": ["short"],
        "other/thing": ["long"],
    }
    # two ids that are each other's alias both stay listed
    a = discovered("a", {"x": "y"})
    b = discovered("b", {"y": "x"})
    assert model_owners([a, b]) == {"x": ["a"], "y": ["b"]}


# --- through the proxy -----------------------------------------------------------------------


def listing(*entries: tuple[str, str | None]) -> Reply:
    data = [
        {
            "id": model,
            **({"canonical_slug": slug} if slug else {}),
            "sats_pricing": {"prompt": 0.01, "completion": 0.03, "max_cost": 5},
        }
        for model, slug in entries
    ]
    return Reply(json={"data": data})


async def start(proxies: list[ProxyThread], *providers: dict[str, Any]) -> ProxyThread:
    """Started off the event loop: the proxy fetches prices from upstreams on this loop."""
    data = {"providers": list(providers), "retry": {"max_attempts_per_provider": 1}}
    proxy = await asyncio.to_thread(ProxyThread(make_config(data)).start)
    proxies.append(proxy)
    return proxy


async def chat(proxy: ProxyThread, model: str, **extra: Any) -> tuple[int, Any, bytes]:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=payload) as r:
        return r.status, r.headers.copy(), await r.read()


async def rows(proxy: ProxyThread, n: int) -> list[Any]:
    for _ in range(300):
        if len(proxy.records) >= n:
            break
        await asyncio.sleep(0.01)
    return proxy.records


def discovering(name: str, url: str) -> dict[str, Any]:
    return provider(name, url, models=[], discover=True)


async def test_a_vendor_prefixed_request_is_served_as_the_listed_id(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    fake_upstream.models_reply = listing(("claude-3.5-sonnet", SLUG))
    proxy = await start(proxies, discovering("node", fake_upstream.url))
    status, headers, body = await chat(proxy, "anthropic/claude-3.5-sonnet")
    assert status == 200, body
    assert headers["x-arbstr-model"] == "claude-3.5-sonnet"
    status, _, body = await chat(proxy, SLUG, stream=True)
    assert status == 200 and b"[DONE]" in body
    sent = [r.json["model"] for r in fake_upstream.chat_requests]
    assert sent == ["claude-3.5-sonnet", "claude-3.5-sonnet"]
    assert [r.model for r in await rows(proxy, 2)] == ["claude-3.5-sonnet"] * 2
    assert proxy.gateway is not None
    (node,) = proxy.gateway.prices.providers
    assert node.model_info["claude-3.5-sonnet"] == ModelInfo(
        max_cost_msats=5000, canonical_slug=SLUG
    )


async def test_fallback_sends_each_provider_its_own_listed_id(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    async with FakeUpstream() as other:
        fake_upstream.models_reply = listing(("claude-3.5-sonnet", None))
        other.models_reply = listing(("anthropic/claude-3.5-sonnet", None))
        fake_upstream.push(Reply(status=503, json={"error": {"message": "busy"}}))
        data = [discovering("short", fake_upstream.url), discovering("zlong", other.url)]
        proxy = await start(proxies, *data)
        status, headers, body = await chat(proxy, "anthropic/claude-3.5-sonnet")
        assert status == 200, body
        assert headers["x-arbstr-provider"] == "zlong"
        assert headers["x-arbstr-model"] == "anthropic/claude-3.5-sonnet"
        assert [r.json["model"] for r in fake_upstream.chat_requests] == ["claude-3.5-sonnet"]
        assert [r.json["model"] for r in other.chat_requests] == ["anthropic/claude-3.5-sonnet"]
        (row,) = await rows(proxy, 1)
        assert (row.provider, row.model) == ("zlong", "anthropic/claude-3.5-sonnet")


async def test_v1_models_does_not_list_an_alias_twice(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    async with FakeUpstream() as other:
        fake_upstream.models_reply = listing(("claude-3.5-sonnet", None), ("gpt-4o", None))
        other.models_reply = listing(("anthropic/claude-3.5-sonnet", None))
        proxy = await start(
            proxies, discovering("a", fake_upstream.url), discovering("b", other.url)
        )
        async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/models") as r:
            got = {m["id"]: m["owned_by"] for m in (await r.json())["data"]}
    assert got == {"claude-3.5-sonnet": "a,b", "gpt-4o": "a"}


async def test_an_unknown_model_is_still_no_provider(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    fake_upstream.models_reply = listing(("claude-3.5-sonnet", None))
    proxy = await start(proxies, discovering("node", fake_upstream.url))
    status, _, body = await chat(proxy, "anthropic/claude-3-opus")
    assert status == 400 and b"no_provider" in body
    assert fake_upstream.chat_requests == []
