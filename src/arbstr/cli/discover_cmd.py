"""``arbstr discover``: Routstr nodes announced on Nostr, their prices, config blocks."""

from __future__ import annotations

from typing import Annotated

import typer

from arbstr.cli.common import console, esc, fail


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
) -> None:
    """Find Routstr nodes announced on Nostr and compare their prices (sats per 1k tokens)."""
    import asyncio

    from arbstr.routstr.discover import DEFAULT_RELAYS
    from arbstr.routstr.discover import discover as find_nodes
    from arbstr.routstr.render import render_tables, render_toml

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
    out = console()
    if not out.is_terminal:  # piped: don't squeeze the tables into 80 columns
        out.width = 10_000
    if not found.nodes:
        out.print("no Routstr node announcements found", markup=False)
    for table in render_tables(found) if found.nodes else ():
        out.print(table)
