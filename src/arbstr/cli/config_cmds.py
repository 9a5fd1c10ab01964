"""``arbstr check``, ``providers`` and ``balance``: the config, and what providers say now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from arbstr.cli.common import ConfigOpt, WideOpt, console, esc, load, print_fitted, warn

if TYPE_CHECKING:
    from arbstr.cli.tables import Col
    from arbstr.config import Config, Provider
    from arbstr.routstr import Balance, PriceBook


def _provider_cols() -> tuple[Col, ...]:
    from arbstr.cli.tables import Col

    return (
        Col("provider", 0, least=8),
        Col("url", 7, least=12),
        Col("model", 1, least=10),
        Col("in/1k", 2, right=True),
        Col("cached/1k", 8, right=True),
        Col("out/1k", 3, right=True),
        Col("base fee", 6, right=True),
        Col("key", 9),
        Col("key source", 10, least=10),
        Col("prices", 5, least=10),
        Col("funds", 4, least=10),
    )


def check(config: ConfigOpt = None) -> None:
    """Validate the config; exit 0 when valid, 1 when not."""
    cfg = load(config)
    out = console()
    s = cfg.server
    out.print(f"[green]✓[/] {esc(cfg.source)} is valid", markup=True)
    out.print(
        f"  listen {s.host}:{s.port}, auth {'on' if s.auth_token else 'off'},"
        f" {len(cfg.providers)} provider(s), {len(cfg.policies.rules)} rule(s),"
        f" default strategy {cfg.policies.default.strategy}",
        markup=False,
    )
    for p in cfg.providers:
        models = ", ".join(p.model_order) if p.models is not None else "any model"
        key = f" ({p.masked_key})" if p.api_key else ""
        out.print(f"  provider {p.name}: key from {p.key_source}{key}; {models}", markup=False)
    warn(cfg)


def providers(
    config: ConfigOpt = None,
    wide: WideOpt = False,
) -> None:
    """Table of providers, models, rates (sats per 1k tokens), masked keys and funds.

    Providers with ``discover = true`` have their prices fetched from ``GET {url}/models``
    now, as ``serve`` would; a failure is shown and the configured rates are listed. Those
    whose balance ``serve`` polls have it fetched from ``GET {url}/balance/info`` now."""
    from arbstr.cli.tables import BOXED
    from arbstr.routstr import PriceBook

    cfg = load(config)
    book = PriceBook(cfg.providers)
    polled = [p for p in cfg.providers if p.api_key and p.balance_interval_s > 0]
    balances: dict[str, Balance] = {}
    if book.enabled or polled:
        from arbstr.server.runner import run

        run(_fetch_now(book, polled, cfg, balances))
    rows: list[tuple[list[str], str | None]] = []
    for p in book.listed:
        st = book.status[p.name]
        if not p.discover:
            prices = "configured"
        elif st.last_error is not None:
            prices = f"discovery failed: {st.last_error}"
        else:
            prices = f"discovered ({st.models} models) just now"
        models = list(p.model_order) or ["(any)"]
        extra = [m for m in p.model_rates if m not in models]
        for i, m in enumerate(models + extra):
            r = p.rates_for(m) if m != "(any)" else p.rates
            cells = (
                p.name if i == 0 else "",
                p.url if i == 0 else "",
                m,
                f"{r.input_rate:f}",  # :f, else 1e-07 prints as "1E-7"
                f"{r.cache_read_rate:f}",
                f"{r.output_rate:f}",
                f"{r.base_fee:f}",
                p.masked_key if i == 0 else "",
                p.key_source if i == 0 else "",
                prices if i == 0 else "",
                _funds_cell(p, balances.get(p.name)) if i == 0 else "",
            )
            rows.append(([esc(c) for c in cells], None))
    print_fitted(_provider_cols(), rows, wide, BOXED, title=f"providers ({esc(cfg.source)})")
    warn(cfg)


async def _fetch_now(
    book: PriceBook, polled: list[Provider], cfg: Config, balances: dict[str, Balance]
) -> None:
    import asyncio

    import aiohttp

    from arbstr.routstr import discovery_timeout_s, fetch_balances

    timeout_s = discovery_timeout_s(cfg.server.connect_timeout_s)
    async with aiohttp.ClientSession() as session:
        _, found = await asyncio.gather(
            book.refresh_all(session, timeout_s), fetch_balances(session, polled, timeout_s)
        )
    balances.update((b.provider, b) for b in found)


def _funds_cell(p: Provider, b: Balance | None) -> str:
    """``ok (12.345 sats)``, ``insufficient (0.000 sats)``, or ``unknown`` and why: what
    ``/health`` says of the provider's funds before any request."""
    from arbstr.money import format_msats
    from arbstr.routing import FundsBoard

    if b is None:
        return "unknown (no key)" if not p.api_key else "unknown (not polled)"
    msats = b.balance_msats
    if msats is None:
        return f"unknown: {b.error}"
    board = FundsBoard()
    board.record_balance(p.name, msats)
    return f"{board.state(p.name)} ({format_msats(msats)} sats)"


def balance(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    wide: WideOpt = False,
) -> None:
    """Each provider's balance from GET {url}/balance/info (sats); errors per provider."""
    from arbstr.server.runner import run

    cfg = load(config)
    results: list[Balance] = []

    async def fetch() -> None:
        import aiohttp

        from arbstr.routstr import fetch_balances

        async with aiohttp.ClientSession() as session:
            results.extend(await fetch_balances(session, cfg.providers))

    run(fetch())
    if as_json:
        import json

        print(json.dumps({"object": "list", "data": [b.as_json() for b in results]}, indent=2))
        return
    from arbstr.cli.tables import BOXED, Col

    cols = (
        Col("provider", 0, least=8),
        Col("balance", 1, right=True),
        Col("reserved", 3, right=True),
        Col("error", 2, least=12),
    )
    rows: list[tuple[list[str], str | None]] = []
    for b in results:
        cells = [
            esc(b.provider),
            "-" if b.balance_sats is None else f"{b.balance_sats:,}",
            "-" if b.reserved_sats is None else f"{b.reserved_sats:,}",
            esc(b.error or ""),
        ]
        rows.append((cells, None))
    print_fitted(cols, rows, wide, BOXED, title="provider balances (sats)")
