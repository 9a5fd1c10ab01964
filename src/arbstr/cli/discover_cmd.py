"""``arbstr discover``: Routstr nodes announced on Nostr, their prices, config blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from arbstr.cli.common import WideOpt, console, esc, fail, print_fitted

if TYPE_CHECKING:
    from arbstr.routstr.discover import Discovery


def discover(
    relay: Annotated[
        list[str] | None,
        typer.Option(
            "--relay",
            "-r",
            help="Nostr relay, ws:// or wss://; repeat for several [default: a few public relays]",
        ),
    ] = None,
    toml: Annotated[
        bool, typer.Option("--toml", help="Print [[providers]] blocks to paste into config.toml")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds allowed each relay and each node")
    ] = 5.0,
    wide: WideOpt = False,
) -> None:
    """Find Routstr nodes announced on Nostr and compare their prices (sats per 1k tokens)."""
    import asyncio

    from arbstr.routstr.discover import DEFAULT_RELAYS
    from arbstr.routstr.discover import discover as find_nodes
    from arbstr.routstr.render import render_toml

    relays = relay or list(DEFAULT_RELAYS)
    found = asyncio.run(find_nodes(relays, timeout_s=timeout))
    err = console(stderr=True)
    for url, reason in found.relay_errors.items():
        err.print(f"[yellow]warning:[/] relay {esc(url)}: {esc(reason)}", markup=True)
    if found.dropped_events:
        err.print(f"note: dropped {found.dropped_events} invalid event(s)", markup=False)
    if not found.any_relay_answered:
        raise fail(f"no relay answered (tried {len(relays)}); name reachable ones with --relay")
    if toml:
        print(render_toml(found), end="")
        return
    if not found.nodes:
        console().print("no Routstr node announcements found", markup=False)
        return
    _print_tables(found, wide)


def _print_tables(found: Discovery, wide: bool) -> None:
    """The nodes and the cheapest offers, fitted to the terminal unless ``wide``."""
    from arbstr.cli.tables import BOXED, Col
    from arbstr.routstr import render

    numbers = ("models", "mints")
    node_cols = [
        Col(h, r, right=h in numbers, least=None if h in numbers else 8) for h, r in _NODE_RANKS
    ]
    rows = [(row, None) for row in render.node_rows(found)]
    title = f"Routstr nodes ({len(found.nodes)})"
    print_fitted(node_cols, rows, wide, BOXED, title=title)
    text = ("model", "cheapest node")
    offer_cols = [
        Col(h, r, right=h not in text, least=8 if h in text else None) for h, r in _OFFER_RANKS
    ]
    rows = [(row, None) for row in render.offer_rows(found)]
    print_fitted(offer_cols, rows, wide, BOXED, title=render.OFFERS_TITLE)


# the columns of arbstr.routstr.render, in display order, with their rank (0: dropped last)
_NODE_RANKS = (
    ("node", 0),
    ("id", 5),
    ("pubkey", 6),
    ("url", 1),
    ("models", 3),
    ("mints", 4),
    ("status", 2),
)
_OFFER_RANKS = (
    ("model", 0),
    ("cheapest node", 1),
    ("in/1k", 2),
    ("cached/1k", 5),
    ("out/1k", 3),
    ("nodes", 4),
)
