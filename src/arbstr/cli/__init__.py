"""Command line: parse arguments, call into the package, print. Rich is imported lazily."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from arbstr import __version__
from arbstr.config import Config, load_config, resolve_config_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from types import FrameType

    from rich.console import Console

    from arbstr.routstr import PriceBook

app = typer.Typer(
    name="arbstr",
    help="Cost-aware OpenAI-compatible proxy for the Routstr marketplace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file [default: $ARBSTR_CONFIG or ./config.toml]"),
]


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _esc(text: str) -> str:
    """Escape config-supplied text (paths, urls, model names) for Rich markup, which would
    otherwise swallow ``[abc]`` or crash on ``[/x]``."""
    from rich.markup import escape

    return escape(text)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {_esc(message)}", markup=True)
    return typer.Exit(code)


def _load(config: str | None) -> Config:
    try:
        return load_config(resolve_config_path(config))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _warn(cfg: Config) -> None:
    err = _console(stderr=True)
    for w in cfg.warnings:
        err.print(f"[yellow]warning:[/] {_esc(w)}", markup=True)


@app.command()
def serve(
    config: ConfigOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", "-l", help="HOST:PORT, overrides server.listen")
    ] = None,
    mock: Annotated[
        bool, typer.Option("--mock", help="Serve built-in mock providers; needs no config")
    ] = False,
    db: Annotated[str | None, typer.Option("--db", help="SQLite path for the request log")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback listen without auth_token")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="ARBSTR_LOG", help="debug|info|warning|error")
    ] = "info",
) -> None:
    """Run the proxy."""
    from arbstr.config import DEFAULT_LISTEN, config_from_data, parse_listen, resolve_db_path
    from arbstr.logs import setup_logging
    from arbstr.server.runner import check_listen_safety, run
    from arbstr.server.runner import serve as serve_async

    try:
        log_writer = setup_logging(log_level)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        cfg: Config | None
        if mock:
            path = resolve_config_path(config)
            explicit = config is not None or "ARBSTR_CONFIG" in os.environ
            cfg = load_config(path) if explicit else None
            if cfg is None:
                cfg = config_from_data({}, source="<mock>", env={})
        else:
            cfg = load_config(resolve_config_path(config))
        if listen is not None:
            parse_listen(listen, where="--listen")
            cfg = cfg.with_listen(listen)
        elif mock and cfg.source == "<mock>":
            cfg = cfg.with_listen(DEFAULT_LISTEN)
        cfg = cfg.with_db_path(resolve_db_path(db, cfg, os.environ))
        check_listen_safety(cfg, insecure)
    except ConfigError as exc:
        log_writer.stop()
        raise _fail(str(exc)) from None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the handler that was in
    # place before: the default one would kill the process (exit -15) before the `finally`
    # blocks below and in the runner (mocks, request log, log queue) have run.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        run(serve_async(cfg, mock=mock, listen=None))
    except KeyboardInterrupt:
        pass
    finally:
        log_writer.stop()


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate the config; exit 0 when valid, 1 when not."""
    cfg = _load(config)
    out = _console()
    s = cfg.server
    out.print(f"[green]✓[/] {_esc(cfg.source)} is valid", markup=True)
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
    _warn(cfg)


@app.command()
def providers(config: ConfigOpt = None) -> None:
    """Table of providers, models, rates (sats per 1k tokens) and masked keys.

    Providers with ``discover = true`` have their prices fetched from ``GET {url}/models``
    now, as ``serve`` would; a failure is shown and the configured rates are listed."""
    from rich.table import Table

    from arbstr.routstr import PriceBook

    cfg = _load(config)
    book = PriceBook(cfg.providers)
    if book.enabled:
        from arbstr.server.runner import run

        run(_discover_prices(book, cfg.server.connect_timeout_s))
    table = Table(title=f"providers ({_esc(cfg.source)})")
    cols = ("provider", "url", "model", "in/1k", "out/1k", "base fee", "key", "key source")
    for col in (*cols, "prices"):
        table.add_column(col, justify="right" if col in ("in/1k", "out/1k", "base fee") else "left")
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
                f"{r.output_rate:f}",
                f"{r.base_fee:f}",
                p.masked_key if i == 0 else "",
                p.key_source if i == 0 else "",
                prices if i == 0 else "",
            )
            table.add_row(*(_esc(c) for c in cells))
    out = _console()
    if not out.is_terminal:  # piped: don't squeeze the table into 80 columns and cut cells
        out.width = 10_000  # the table is not expanded: it stays as wide as its content
    out.print(table)
    _warn(cfg)


async def _discover_prices(book: PriceBook, connect_timeout_s: float) -> None:
    import aiohttp

    from arbstr.routstr import discovery_timeout_s

    async with aiohttp.ClientSession() as session:
        await book.refresh_all(session, discovery_timeout_s(connect_timeout_s))


@app.command()
def balance(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each provider's balance from GET {url}/balance/info (sats); errors per provider."""
    from arbstr.routstr import Balance
    from arbstr.server.runner import run

    cfg = _load(config)
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
    from rich.table import Table

    table = Table(title="provider balances (sats)")
    for col in ("provider", "balance", "reserved", "error"):
        table.add_column(col, justify="right" if col in ("balance", "reserved") else "left")
    for b in results:
        table.add_row(
            _esc(b.provider),
            "-" if b.balance_sats is None else f"{b.balance_sats:,}",
            "-" if b.reserved_sats is None else f"{b.reserved_sats:,}",
            _esc(b.error or ""),
        )
    _console().print(table)


# --- the request log ---------------------------------------------------------------------

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="SQLite request log [default: $ARBSTR_DB, [database].path, ./arbstr.db]"
    ),
]
RangeOpt = Annotated[
    str | None,
    typer.Option("--range", help="last_1h | last_24h | last_7d | last_30d"),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="ISO 8601, e.g. 2024-05-01T12:00:00Z (no offset = UTC)"),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="ISO 8601 (inclusive)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="only this model")]
ProviderOpt = Annotated[str | None, typer.Option("--provider", help="only this provider")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="only this policy")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the /v1/… JSON instead of a table")]


def _db_path(db: str | None, config: str | None) -> str:
    """The log's path; a config file is optional here unless --config or $ARBSTR_CONFIG names
    one."""
    from arbstr.config import resolve_db_path

    path = resolve_config_path(config)
    explicit = config is not None or bool(os.environ.get("ARBSTR_CONFIG"))
    config_file = path if explicit or path.is_file() else None
    try:
        return resolve_db_path(db, config_file, os.environ)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _report(
    db: str | None,
    config: str | None,
    params: dict[str, str | None],
    kind: str,
    as_json: bool,
    group_by: str | None = None,
) -> None:
    import json

    from arbstr.errors import DatabaseUnavailable, InvalidParameter
    from arbstr.storage import queries

    path = _db_path(db, config)
    given = {k: v for k, v in params.items() if v is not None}
    try:
        if kind == "stats":
            result = queries.read_stats(path, queries.parse_stats_params(given))
        else:
            result = queries.read_requests(path, queries.parse_requests_params(given))
    except InvalidParameter as exc:
        raise _fail(f"--{exc.param.replace('_', '-')}: {exc.reason}") from None
    except DatabaseUnavailable as exc:
        raise _fail(exc.message) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from arbstr.cli.tables import provider_cost_table, requests_table, stats_table

    out = _console()
    if kind == "stats":
        out.print(stats_table(result, group_by))
        if group_by != "provider":  # the per-provider view of charged vs computed
            by_provider = queries.parse_stats_params({**given, "group_by": "provider"})
            result = queries.read_stats(path, by_provider)
        table = provider_cost_table(result)
        if table is not None:
            out.print(table)
    else:
        out.print(requests_table(result, short_ids=out.width < 150))


def _filters(
    range_: str | None,
    since: str | None,
    until: str | None,
    model: str | None,
    provider: str | None,
    policy: str | None,
) -> dict[str, str | None]:
    """The filters `stats` and `requests` share, named as the HTTP query parameters."""
    return {
        "range": range_,
        "since": since,
        "until": until,
        "model": model,
        "provider": provider,
        "policy": policy,
    }


@app.command()
def stats(
    db: DbOpt = None,
    config: ConfigOpt = None,
    range_: RangeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    policy: PolicyOpt = None,
    group_by: Annotated[
        str | None, typer.Option("--group-by", "-g", help="model | provider | policy")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests, cost and latency from the request log (as GET /v1/stats; default last 7 days)."""
    params = {
        **_filters(range_, since, until, model, provider, policy),
        "group_by": group_by,
    }
    _report(db, config, params, "stats", as_json, group_by)


@app.command()
def requests(
    db: DbOpt = None,
    config: ConfigOpt = None,
    range_: RangeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    policy: PolicyOpt = None,
    success: Annotated[
        bool | None, typer.Option("--success/--failed", help="only successes / only failures")
    ] = None,
    streaming: Annotated[
        bool | None,
        typer.Option("--streaming/--non-streaming", help="only streams / only non-streams"),
    ] = None,
    page: Annotated[int, typer.Option("--page", help="1, 2, …")] = 1,
    per_page: Annotated[int, typer.Option("--per-page", help="1 to 100")] = 20,
    sort: Annotated[
        str, typer.Option("--sort", help="timestamp | cost_sats | latency_ms")
    ] = "timestamp",
    order: Annotated[str, typer.Option("--order", help="asc | desc")] = "desc",
    as_json: JsonOpt = False,
) -> None:
    """The request log, newest first (as GET /v1/requests; default all time)."""
    params = {
        **_filters(range_, since, until, model, provider, policy),
        "success": None if success is None else str(success).lower(),
        "streaming": None if streaming is None else str(streaming).lower(),
        "page": str(page),
        "per_page": str(per_page),
        "sort": sort,
        "order": order,
    }
    _report(db, config, params, "requests", as_json)


@app.command()
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
    err = _console(stderr=True)
    for url, reason in found.relay_errors.items():
        err.print(f"[yellow]warning:[/] relay {_esc(url)}: {_esc(reason)}", markup=True)
    if found.dropped_events:
        err.print(f"note: dropped {found.dropped_events} invalid event(s)", markup=False)
    if not found.any_relay_answered:
        raise _fail(f"no relay answered (tried {len(relays)}); name reachable ones with --relay")
    if toml:
        print(render_toml(found), end="")
        return
    out = _console()
    if not out.is_terminal:  # piped: don't squeeze the tables into 80 columns
        out.width = 10_000
    if not found.nodes:
        out.print("no Routstr node announcements found", markup=False)
    for table in render_tables(found) if found.nodes else ():
        out.print(table)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app(prog_name="arbstr")


if __name__ == "__main__":  # pragma: no cover
    main()
