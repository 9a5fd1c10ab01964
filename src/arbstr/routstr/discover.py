"""Find Routstr nodes on Nostr, read their prices, pick the cheapest, write config blocks.

A Routstr node announces itself as a kind 38421 event (parameterized replaceable): tag ``d`` =
provider id, one ``u`` tag per endpoint URL, ``mint`` tags, content ``{"name", "about"}``.
Its ``GET /v1/models`` is an OpenAI model list whose entries carry ``sats_pricing`` =
``{"prompt", "completion", "request", ...}`` in sats **per token** (``request``: sats per
request). arbstr's rates are sats per 1000 tokens, so prompt and completion are scaled by 1000,
exactly, in :class:`~decimal.Decimal`.

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
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from arbstr.config import convention_env_name
from arbstr.money import Rates, to_decimal
from arbstr.routstr.nostr import Event, query_relays

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "DEFAULT_RELAYS",
    "DEFAULT_TIMEOUT_S",
    "ROUTSTR_NODE_KIND",
    "Discovery",
    "Node",
    "NodeReport",
    "Offer",
    "cheapest_offers",
    "discover",
    "fetch_node",
    "model_base_urls",
    "parse_sats_pricing",
    "provider_names",
    "reference_cost",
    "render_tables",
    "render_toml",
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
_THOUSAND = Decimal(1000)


# ---------------------------------------------------------------------------------------------
# Prices


def _sats(value: object) -> Decimal | None:
    """A price as a finite, non-negative Decimal, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        d = to_decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d < 0:
        return None
    return d


def _per_1k(d: Decimal) -> Decimal | None:
    """Sats per token -> sats per 1000 tokens, exactly (a shift of the decimal exponent, so no
    context rounds it); None when the result would not fit a float."""
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)  # finite, checked by _sats
    scaled = Decimal((sign, digits, exp + 3))
    return scaled if math.isfinite(float(scaled)) else None


def parse_sats_pricing(models_json: bytes) -> dict[str, Rates]:
    """Per-model rates from a Routstr ``GET /models`` body.

    The body is an OpenAI list (``{"data": [...]}``, or a bare list). Each entry with a string
    ``id`` and a ``sats_pricing`` object whose ``prompt`` and ``completion`` are non-negative
    numbers (sats per token; numeric strings accepted) gives ``Rates`` in sats per 1000 tokens,
    with ``request`` (sats per request, absent = 0) as the base fee. Entries without
    ``sats_pricing`` or with odd values are skipped, unknown fields ignored, the first entry of a
    repeated id kept. Raises ``ValueError`` only when the body is not JSON or not a model list.
    """
    try:
        doc = json.loads(models_json, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints
        raise ValueError(f"models body is not JSON: {exc}") from None
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError('models body is not a model list (expected {"data": [...]})')
    out: dict[str, Rates] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        model, pricing = entry.get("id"), entry.get("sats_pricing")
        if not isinstance(model, str) or not model.strip() or not isinstance(pricing, dict):
            continue
        if model in out or not _encodable(model):
            continue
        prompt, completion = _sats(pricing.get("prompt")), _sats(pricing.get("completion"))
        fee = pricing.get("request")
        request = _sats(0 if fee is None else fee)
        if prompt is None or completion is None or request is None:
            continue
        p1k, c1k = _per_1k(prompt), _per_1k(completion)
        if p1k is None or c1k is None or not math.isfinite(float(request)):
            continue
        out[model] = Rates.of(p1k, c1k, request)
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return False
    return True


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


# ---------------------------------------------------------------------------------------------
# Output


def _clean(text: str, limit: int = 80) -> str:
    """Remote text made safe for one terminal line: no control or format characters (escape
    sequences), bounded length."""
    out = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") else ch for ch in text
    )
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _fmt(d: Decimal) -> str:
    return f"{d.normalize():f}" if d else "0"


def render_tables(discovery: Discovery) -> tuple[Table, Table]:
    """The nodes table and the cheapest-per-model table (rich, imported here)."""
    from rich.table import Table
    from rich.text import Text

    nodes = Table(title=f"Routstr nodes ({len(discovery.nodes)})")
    for col in ("node", "id", "pubkey", "url", "models", "mints", "status"):
        nodes.add_column(col, justify="right" if col in ("models", "mints") else "left")
    for rep in discovery.nodes:
        n = rep.node
        url = rep.url or (n.urls[0] if n.urls else "")
        status = Text("ok", style="green") if rep.error is None else Text(_clean(rep.error, 200))
        if rep.error is not None:
            status.stylize("red")
        nodes.add_row(
            Text(_clean(n.name, 40)),
            Text(_clean(n.provider_id, 24)),
            Text(n.pubkey[:12] + "…"),
            Text(_clean(url, 120)),
            Text(str(len(rep.models))),
            Text(str(len(n.mints))),
            status,
        )
    offers = cheapest_offers(discovery.nodes)
    cheap = Table(
        title="cheapest node per model (sats; compared on 1k input + 1k output tokens)",
    )
    for col in ("model", "cheapest node", "in/1k", "out/1k", "base fee", "nodes"):
        cheap.add_column(col, justify="left" if col in ("model", "cheapest node") else "right")
    for o in offers:
        cheap.add_row(
            Text(_clean(o.model, 60)),
            Text(_clean(o.report.node.name, 40)),
            Text(_fmt(o.rates.input_rate)),
            Text(_fmt(o.rates.output_rate)),
            Text(_fmt(o.rates.base_fee)),
            Text(str(o.nodes)),
        )
    return nodes, cheap


_NAME_BAD = re.compile(r"[^a-z0-9_-]+")


def _sanitise(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return _NAME_BAD.sub("-", folded).strip("-_")[:56].strip("-_")


def provider_names(reports: Sequence[NodeReport]) -> list[str]:
    """A unique config name per report, ``[a-z0-9_-]``, from the node name, else its d tag, else
    ``node-<pubkey prefix>``; repeats get ``-2``, ``-3``..."""
    names: list[str] = []
    taken: set[str] = set()
    for rep in reports:
        n = rep.node
        base = _sanitise(n.name) or _sanitise(n.provider_id) or f"node-{n.pubkey[:8]}"
        name, i = base, 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
        taken.add(name)
        names.append(name)
    return names


def _toml_str(text: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_toml(discovery: Discovery) -> str:
    """``[[providers]]`` blocks, ready to paste into config.toml, for every node that answered
    with priced models (``discover = true`` keeps its prices current; no ``api_key`` line: a
    comment names the ``ARBSTR_<NAME>_API_KEY`` variable to set). Nodes that could not be used
    are listed in comments."""
    usable = [r for r in discovery.nodes if r.url is not None and r.models]
    lines = [
        "# Routstr nodes discovered on Nostr. Check a node before you fund a key for it:",
        "# an announcement proves who published it, not that the node is honest.",
    ]
    for rep, name in zip(usable, provider_names(usable), strict=True):
        n = rep.node
        assert rep.url is not None
        lines += [
            "",
            f"# {_clean(n.name, 60)} (id {_clean(n.provider_id, 40) or '-'},"
            f" pubkey {n.pubkey}), {len(rep.models)} priced model(s)",
        ]
        if n.about:
            lines.append(f"# {_clean(n.about, 100)}")
        lines += [
            f"# API key: set {convention_env_name(name)} (an sk-… key from this node)",
            "[[providers]]",
            f"name = {_toml_str(name)}",
            f"url = {_toml_str(rep.url)}",
            "models = [" + ", ".join(_toml_str(m) for m in sorted(rep.models)) + "]",
            "discover = true",
        ]
    skipped = [r for r in discovery.nodes if r not in usable]
    if skipped:
        lines.append("")
        for rep in skipped:
            why = rep.error or "no priced models"
            lines.append(f"# skipped {_clean(rep.node.name, 40)}: {_clean(why, 160)}")
    return "\n".join(lines) + "\n"
