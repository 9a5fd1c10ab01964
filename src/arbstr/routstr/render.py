"""``arbstr discover``'s output: tables of nodes and cheapest offers, ``[[providers]]`` TOML.

Everything shown comes from strangers on Nostr: it is cleaned of control characters and
bounded in length before it reaches a terminal or a config file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from arbstr.config import convention_env_name
from arbstr.routstr.discover import Discovery, NodeReport, cheapest_offers

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

__all__ = ["node_rows", "offer_rows", "provider_names", "render_tables", "render_toml"]


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


NODE_HEADERS = ("node", "id", "pubkey", "url", "models", "mints", "status")
OFFER_HEADERS = ("model", "cheapest node", "in/1k", "cached/1k", "out/1k", "nodes")
OFFERS_TITLE = "cheapest node per model (sats; compared on 1k input + 1k output tokens)"


def node_rows(discovery: Discovery) -> list[list[Text]]:
    """One row of cells (rich Text, never markup) per node, as :data:`NODE_HEADERS`."""
    from rich.text import Text

    rows = []
    for rep in discovery.nodes:
        n = rep.node
        url = rep.url or (n.urls[0] if n.urls else "")
        status = Text("ok", style="green") if rep.error is None else Text(_clean(rep.error, 200))
        if rep.error is not None:
            status.stylize("red")
        rows.append(
            [
                Text(_clean(n.name, 40)),
                Text(_clean(n.provider_id, 24)),
                Text(n.pubkey[:12] + "…"),
                Text(_clean(url, 120)),
                Text(str(len(rep.models))),
                Text(str(len(n.mints))),
                status,
            ]
        )
    return rows


def offer_rows(discovery: Discovery) -> list[list[Text]]:
    """The cheapest offer of each model, as :data:`OFFER_HEADERS`."""
    from rich.text import Text

    rows = []
    for o in cheapest_offers(discovery.nodes):
        r = o.rates
        rows.append(
            [
                Text(_clean(o.model, 60)),
                Text(_clean(o.report.node.name, 40)),
                Text(_fmt(r.input_rate)),
                Text(_fmt(r.cache_read_rate) if r.cache_read_rate != r.input_rate else ""),
                Text(_fmt(r.output_rate)),
                Text(str(o.nodes)),
            ]
        )
    return rows


def render_tables(discovery: Discovery) -> tuple[Table, Table]:
    """The nodes table and the cheapest-per-model table, every column whole."""
    from rich.table import Table

    nodes = Table(title=f"Routstr nodes ({len(discovery.nodes)})")
    for col in NODE_HEADERS:
        nodes.add_column(col, justify="right" if col in ("models", "mints") else "left")
    for row in node_rows(discovery):
        nodes.add_row(*row)
    cheap = Table(title=OFFERS_TITLE)
    for col in OFFER_HEADERS:
        cheap.add_column(col, justify="left" if col in ("model", "cheapest node") else "right")
    for row in offer_rows(discovery):
        cheap.add_row(*row)
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
    with priced models. ``discover = true`` keeps the node's models and prices current, so no
    ``models`` list pins them; there is no ``api_key`` line: a comment names the
    ``ARBSTR_<NAME>_API_KEY`` variable to set. Nodes that could not be used are listed in
    comments."""
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
            # no models list: discovery keeps the node's own list current, a pinned one goes
            # stale as the node adds and drops models
            "discover = true",
        ]
    skipped = [r for r in discovery.nodes if r not in usable]
    if skipped:
        lines.append("")
        for rep in skipped:
            why = rep.error or "no priced models"
            lines.append(f"# skipped {_clean(rep.node.name, 40)}: {_clean(why, 160)}")
    return "\n".join(lines) + "\n"
