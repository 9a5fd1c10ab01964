"""Price discovery at run time: providers with ``discover = true`` get their prices from
``GET {url}/models``, before serving and then every ``discover_interval_s`` (default 120 s:
Routstr nodes re-price about that often as BTC/USD moves), jittered shorter so that several
arbstr instances do not ask a node in step.

Discovered prices never go stale silently: each provider's :class:`DiscoveryStatus` says when
prices were last fetched, and the last error. A failed refresh keeps the last good prices.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from arbstr.config import ModelInfo, Provider
from arbstr.money import Rates
from arbstr.routstr.models import ModelListing, parse_models

if TYPE_CHECKING:  # the caller brings aiohttp along with its session
    import aiohttp

log = logging.getLogger("arbstr.routstr")

# each wait is the interval scaled by a factor in [1 - JITTER, 1]: never longer than configured
JITTER = 0.2


def refresh_delay_s(interval_s: float, rng: random.Random) -> float:
    """How long to wait before the next refresh: at most ``interval_s``, at least 80 % of it."""
    return interval_s * (1.0 - JITTER * rng.random())


@dataclass(slots=True)
class DiscoveryStatus:
    enabled: bool
    last_success: float | None = None  # time.time() of the last good refresh
    last_error: str | None = None
    models: int = 0

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        age = None if self.last_success is None else round(now - self.last_success, 1)
        return {
            "enabled": self.enabled,
            "models": self.models,
            "last_success": _iso(self.last_success),
            "age_s": age,
            "last_error": self.last_error,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def apply_prices(
    base: Provider,
    discovered: Mapping[str, Rates],
    info: Mapping[str, ModelInfo] | None = None,
) -> Provider:
    """The provider as routing should see it: discovered per-model prices and metadata, with
    the config's own ``model_rates`` and ``model_info`` as overrides (a rate keyed by an alias
    applies to the model it names). A configured ``models`` list still restricts the models;
    without one, the discovered models are what the provider serves."""
    merged = {**discovered, **base.model_rates}
    model_info = dict(info or {})
    for model, own in base.model_info.items():  # the config's limits over the node's
        model_info[model] = model_info[model].overlaid(own) if model in model_info else own
    if base.models is not None:
        p = replace(base, model_rates=merged, model_info=model_info)
    else:
        order = tuple(sorted(discovered))
        p = replace(
            base,
            models=frozenset(order),
            model_order=order,
            model_rates=merged,
            model_info=model_info,
        )
    by_alias = {
        listed: rates
        for alias, rates in base.model_rates.items()
        if (listed := p.resolve(alias)) not in (None, alias) and listed not in base.model_rates
    }
    return replace(p, model_rates={**merged, **by_alias}) if by_alias else p


async def fetch_prices(
    session: aiohttp.ClientSession, provider: Provider, timeout_s: float
) -> ModelListing:
    """``GET {url}/models`` -> per-model rates (sats per 1k tokens) and metadata. Raises on
    any failure."""
    from aiohttp import ClientTimeout

    headers = {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
    async with session.get(
        f"{provider.url}/models",
        headers=headers,
        timeout=ClientTimeout(total=timeout_s),
    ) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET /models answered HTTP {resp.status}")
    listing = parse_models(body)
    if not listing.rates:
        raise RuntimeError("GET /models listed no model with sats_pricing")
    return listing


def discovery_timeout_s(connect_timeout_s: float) -> float:
    """How long one ``GET /models`` may take: the connect timeout plus 5 s, at most 15 s."""
    return min(15.0, connect_timeout_s + 5.0)


class PriceBook:
    """Current providers with discovered prices applied, refreshed in the background."""

    def __init__(self, configured: Sequence[Provider], rng: random.Random | None = None) -> None:
        self._configured = tuple(configured)
        self._rng = rng or random.Random()
        self.providers: tuple[Provider, ...] = ()  # what routing may use now
        self.listed: tuple[Provider, ...] = self._configured  # every provider, for listings
        self.status: dict[str, DiscoveryStatus] = {
            p.name: DiscoveryStatus(enabled=p.discover) for p in configured
        }
        self._discovered: dict[str, ModelListing] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuild()

    @property
    def enabled(self) -> bool:
        return any(p.discover for p in self._configured)

    def _rebuild(self) -> None:
        """A discovering provider is routable only once its prices are known: routing on
        unknown (zero) prices would make it look free."""
        found = self._discovered
        self.listed = tuple(
            apply_prices(p, found[p.name].rates, found[p.name].info) if p.name in found else p
            for p in self._configured
        )
        self.providers = tuple(
            p for p in self.listed if not p.discover or p.name in self._discovered
        )

    async def refresh(self, session: aiohttp.ClientSession, p: Provider, timeout_s: float) -> None:
        st = self.status[p.name]
        try:
            prices = await fetch_prices(session, p, timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning(
                "price discovery for %s failed (keeping last prices): %s", p.name, st.last_error
            )
            return
        self._discovered[p.name] = prices
        st.last_success = time.time()
        st.last_error = None
        st.models = len(prices.rates)
        self._rebuild()

    async def refresh_all(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        await asyncio.gather(
            *(self.refresh(session, p, timeout_s) for p in self._configured if p.discover)
        )

    def start(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """Refresh each discovering provider every ``discover_interval_s`` in the background."""
        for p in self._configured:
            if p.discover:
                self._tasks.append(asyncio.create_task(self._loop(session, p, timeout_s)))

    async def _loop(self, session: aiohttp.ClientSession, p: Provider, timeout_s: float) -> None:
        while True:
            await asyncio.sleep(refresh_delay_s(p.discover_interval_s, self._rng))
            await self.refresh(session, p, timeout_s)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
