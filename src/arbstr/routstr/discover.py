"""Find Routstr nodes on Nostr, read their prices, pick the cheapest (``arbstr discover``;
the output is in :mod:`.render`).

A Routstr node announces itself as a kind 38421 event (parameterized replaceable): tag ``d`` =
provider id, one ``u`` tag per endpoint URL, ``mint`` tags, content ``{"name", "about"}``.
Its ``GET /v1/models`` lists its models with ``sats_pricing`` (read by :mod:`.models`).

Endpoint URLs: a ``u`` tag ending in ``/v1`` is the OpenAI base URL as is. Any other ``u`` is a
node's root: ``{u}/v1/models`` is tried first (Routstr serves the OpenAI API under ``/v1``), and
only when that answers 404, ``{u}/models``. The base URL that answered is the one used (and
written to ``url`` in ``--toml``), so chat goes to ``{base}/chat/completions``. ``.onion`` URLs
are tried only when a node announces no other URL (they need Tor; a failure says so).

Anyone can publish an announcement: a valid signature proves who published it (the pubkey),
not that the node is honest. The tables show each node's pubkey.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

import aiohttp

from arbstr.money import Rates
from arbstr.routstr.models import parse_sats_pricing
from arbstr.routstr.nostr import Event, query_relays

__all__ = [
    "DEFAULT_RELAYS",
    "ROUTSTR_NODE_KIND",
    "Discovery",
    "Node",
    "NodeReport",
    "cheapest_offers",
    "discover",
    "fetch_node",
    "model_base_urls",
]

ROUTSTR_NODE_KIND = 38421
DEFAULT_RELAYS: tuple[str, ...] = (
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.nostr.band",
)
DEFAULT_TIMEOUT_S = 5.0
MAX_MODELS_BODY_BYTES = 8 << 20
MAX_CONCURRENT_NODES = 16


def reference_cost(rates: Rates) -> Decimal:
    """What "cheapest" compares: the exact cost of a request of 1000 input and 1000 output
    tokens, ``input_rate + output_rate + base_fee``."""
    return rates.input_rate + rates.output_rate + rates.base_fee


# ---------------------------------------------------------------------------------------------
# Nodes


@dataclass(frozen=True, slots=True)
class Node:
    """A Routstr node as announced on Nostr."""

    provider_id: str  # the d tag
    pubkey: str
    name: str  # content.name, else the d tag, else the start of the pubkey
    about: str
    urls: tuple[str, ...]  # the u tags, in order, de-duplicated
    mints: tuple[str, ...]
    created_at: int

    @classmethod
    def from_event(cls, event: Event) -> Node:
        name = about = ""
        try:
            meta = json.loads(event.content)
        except (ValueError, RecursionError):
            meta = None
        if isinstance(meta, dict):
            raw_name, raw_about = meta.get("name"), meta.get("about")
            name = raw_name if isinstance(raw_name, str) else ""
            about = raw_about if isinstance(raw_about, str) else ""
        urls = tuple(dict.fromkeys(u.strip() for u in event.tag_values("u") if u.strip()))
        return cls(
            provider_id=event.d,
            pubkey=event.pubkey,
            name=(name or "").strip() or event.d or event.pubkey[:12],
            about=(about or "").strip(),
            urls=urls,
            mints=tuple(dict.fromkeys(event.tag_values("mint"))),
            created_at=event.created_at,
        )


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node and what its ``/models`` said: ``url`` is the working OpenAI base URL (None when
    no announced URL answered, then ``error`` says why)."""

    node: Node
    url: str | None
    models: Mapping[str, Rates]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """The cheapest node for one model, and how many nodes offer it."""

    model: str
    report: NodeReport
    rates: Rates
    nodes: int


@dataclass(frozen=True, slots=True)
class Discovery:
    nodes: tuple[NodeReport, ...]  # sorted by name
    relays_answered: tuple[str, ...]
    relay_errors: Mapping[str, str]
    dropped_events: int  # bad signature or id, malformed, not what was asked for

    @property
    def any_relay_answered(self) -> bool:
        return bool(self.relays_answered)


def _is_onion(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith(".onion")


def model_base_urls(u: str) -> list[str]:
    """The OpenAI base URLs to try, in order, for an announced URL: ``[u]`` when it ends in
    ``/v1`` (a trailing slash ignored), else ``[u + "/v1", u]``; ``[]`` when it is not an
    http(s) URL with a host."""
    u = u.strip()
    try:
        parts = urlsplit(u)
        host = parts.hostname
    except ValueError:
        return []
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        return []
    base = u.rstrip("/")
    if base.endswith("/v1"):
        return [base]
    return [base + "/v1", base]


class _NotFound(Exception):
    pass


async def _get_models(session: aiohttp.ClientSession, base: str) -> dict[str, Rates]:
    async with session.get(
        base + "/models", headers={"Accept": "application/json"}, allow_redirects=False
    ) as resp:
        if resp.status == 404:
            raise _NotFound
        if resp.status != 200:
            raise ValueError(f"GET {base}/models: HTTP {resp.status}")
        body = await resp.content.read(MAX_MODELS_BODY_BYTES + 1)
        if len(body) > MAX_MODELS_BODY_BYTES:
            raise ValueError(f"GET {base}/models: body larger than {MAX_MODELS_BODY_BYTES} bytes")
    try:
        return parse_sats_pricing(body)
    except ValueError as exc:
        raise ValueError(f"GET {base}/models: {exc}") from None


def _short(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        why = "connection refused" if isinstance(os_err, ConnectionRefusedError) else os_err
        return f"cannot connect to {exc.host}:{exc.port}: {getattr(why, 'strerror', None) or why}"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


async def fetch_node(session: aiohttp.ClientSession, node: Node, *, timeout_s: float) -> NodeReport:
    """Read the node's prices from the first announced URL that answers (clearnet URLs first;
    ``.onion`` ones only when there is nothing else), within ``timeout_s`` seconds in all.
    Never raises: failures are in the report's ``error``."""
    clear = [u for u in node.urls if not _is_onion(u)]
    candidates = clear or [u for u in node.urls if _is_onion(u)]
    if not candidates:
        return NodeReport(node, None, {}, "announces no URL")
    errors: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            for u in candidates:
                bases = model_base_urls(u)
                if not bases:
                    errors.append(f"{u}: not an http(s) URL")
                    continue
                for base in bases:
                    try:
                        return NodeReport(node, base, await _get_models(session, base))
                    except _NotFound:
                        errors.append(f"GET {base}/models: HTTP 404")
                    except (aiohttp.ClientError, OSError, ValueError) as exc:
                        errors.append(_short(exc))
                        break  # this URL does not answer: the next announced one
    except TimeoutError:
        errors.append(f"no answer within {timeout_s:g} s")
    if not clear:
        errors.append(".onion URLs need Tor")
    return NodeReport(node, None, {}, "; ".join(errors))


async def discover(
    relays: Sequence[str] = DEFAULT_RELAYS,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    session: aiohttp.ClientSession | None = None,
) -> Discovery:
    """Ask ``relays`` for Routstr announcements (signatures verified, newest per node kept), then
    every node's ``/models`` at once. ``timeout_s`` bounds each relay query and each node."""
    if session is None:
        connector = aiohttp.TCPConnector(limit=MAX_CONCURRENT_NODES * 2)
        async with aiohttp.ClientSession(connector=connector) as own:
            return await discover(relays, timeout_s=timeout_s, session=own)
    result = await query_relays(
        relays, [{"kinds": [ROUTSTR_NODE_KIND], "limit": 500}], timeout_s=timeout_s, session=session
    )
    nodes = [Node.from_event(ev) for ev in result.events]
    gate = asyncio.Semaphore(MAX_CONCURRENT_NODES)

    async def one(node: Node) -> NodeReport:
        async with gate:
            return await fetch_node(session, node, timeout_s=timeout_s)

    reports = await asyncio.gather(*(one(n) for n in nodes))
    return Discovery(
        nodes=tuple(sorted(reports, key=lambda r: (r.node.name.lower(), r.node.pubkey))),
        relays_answered=tuple(result.answered),
        relay_errors=result.errors,
        dropped_events=result.dropped,
    )


def cheapest_offers(reports: Sequence[NodeReport]) -> list[Offer]:
    """Per model (sorted), the node with the lowest :func:`reference_cost`; ties go to the node
    whose name sorts first."""
    best: dict[str, tuple[tuple[Decimal, str, str], NodeReport, Rates]] = {}
    count: dict[str, int] = {}
    for rep in reports:
        for model, rates in rep.models.items():
            count[model] = count.get(model, 0) + 1
            key = (reference_cost(rates), rep.node.name.lower(), rep.node.pubkey)
            if model not in best or key < best[model][0]:
                best[model] = (key, rep, rates)
    return [Offer(m, best[m][1], best[m][2], count[m]) for m in sorted(best)]
