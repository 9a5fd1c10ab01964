"""Low-traffic routes: /health, /providers, /v1/models, /v1/balances, /v1/budgets,
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from arbstr.config import Provider
from arbstr.money import Rates
from arbstr.routstr import DiscoveryStatus, fetch_balances
from arbstr.server.budgets import budgets_payload
from arbstr.server.gateway import Gateway
from arbstr.server.http import Send, send_bytes, send_json


def _rates_json(r: Rates) -> dict[str, float]:
    return {
        "input_rate": r.input_f,
        "output_rate": r.output_f,
        "cache_read_rate": r.cache_read_f,
        "base_fee": r.base_f,
    }


def provider_json(p: Provider, discovery: DiscoveryStatus | None = None) -> dict[str, Any]:
    return {
        "name": p.name,
        "url": p.url,
        "models": list(p.model_order) if p.models is not None else None,
        "rates": _rates_json(p.rates),
        "model_rates": {m: _rates_json(r) for m, r in p.model_rates.items()},
        "api_key": p.masked_key,
        "key_source": p.key_source,
        "apis": sorted(p.apis),
        "discovery": (discovery or DiscoveryStatus(enabled=p.discover)).as_json(),
    }


async def health(gw: Gateway, send: Send) -> None:
    providers = gw.health.snapshot()
    funds = gw.funds.snapshot()
    for name, entry in providers.items():
        entry.update(funds.get(name) or {"funds": "unknown"})
    states = [v["state"] for v in providers.values()]
    if states and all(s == "open" for s in states):
        status, code = "unhealthy", 503
    elif any(s != "closed" for s in states) or any(
        v["funds"] == "insufficient" for v in providers.values()
    ):  # a key short of funds degrades, but never makes arbstr unhealthy by itself
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    store = gw.store
    await send_json(
        send,
        code,
        {
            "status": status,
            "providers": providers,
            "database": "ok" if store is not None and store.available else "unavailable",
            "log_dropped": store.dropped if store is not None else 0,
        },
    )


async def providers(gw: Gateway, send: Send) -> None:
    await send_json(
        send,
        200,
        {
            "object": "list",
            "data": [provider_json(p, gw.prices.status.get(p.name)) for p in gw.prices.listed],
        },
    )


def model_owners(providers: Sequence[Provider]) -> dict[str, list[str]]:
    """Each model the providers list -> the providers serving it. A listed id that another
    provider serves under another listed id (``anthropic/x`` there, ``x`` here) is an alias:
    its providers are counted under that id, not listed as a model of their own."""
    owners: dict[str, list[str]] = {}
    for p in providers:
        for m in p.model_order:
            owners.setdefault(m, []).append(p.name)
    alias_of: dict[str, str] = {}
    for m in owners:
        for q in providers:
            listed = q.resolve(m)
            if listed is not None and listed != m and listed in owners:
                alias_of[m] = listed
                break
    for m, listed in alias_of.items():
        if listed not in alias_of:  # (two ids that are each other's alias both stay)
            names = owners[listed]
            names.extend(n for n in owners.pop(m) if n not in names)
    return owners


async def models(gw: Gateway, send: Send) -> None:
    owners = model_owners(gw.prices.providers)
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": ",".join(names)}
        for m, names in sorted(owners.items())
    ]
    await send_json(send, 200, {"object": "list", "data": data})


async def balances(gw: Gateway, send: Send) -> None:
    """Each provider's balance from ``GET {url}/balance/info``; errors per provider."""
    results = await fetch_balances(await gw.upstream.get_session(), gw.config.providers)
    await send_json(send, 200, {"object": "list", "data": [b.as_json() for b in results]})


async def budgets(gw: Gateway, send: Send) -> None:
    """Each ``[[budgets]]`` entry: limit, use in its window, holds in flight, reset."""
    await send_json(send, 200, budgets_payload(gw.budgets))


async def metrics(gw: Gateway, send: Send) -> None:
    """The Prometheus text format (routed only when metrics are enabled)."""
    from arbstr.server.metrics import CONTENT_TYPE, render

    assert gw.metrics is not None
    # copied here, formatted in a thread: ~0.1 ms per label set would stall the event loop
    body = await asyncio.to_thread(render, gw.metrics.snapshot())
    body = gw.redactor.bytes(body)  # (labels are config names and listed ids: a safeguard)
    await send_bytes(send, 200, body, [(b"content-type", CONTENT_TYPE)])
