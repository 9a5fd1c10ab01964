"""Command line: parse arguments, call into the package, print. Rich is imported lazily."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from arbstr import __version__
from arbstr.config import Config, load_config, resolve_config_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

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


def _fail(message: str, code: int = 1) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code)


def _load(config: str | None) -> Config:
    try:
        return load_config(resolve_config_path(config))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _warn(cfg: Config) -> None:
    err = _console(stderr=True)
    for w in cfg.warnings:
        err.print(f"[yellow]warning:[/] {w}", markup=True)


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
    from arbstr.runner import check_listen_safety, run
    from arbstr.runner import serve as serve_async

    try:
        listener = setup_logging(log_level)
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
        listener.stop()
        raise _fail(str(exc)) from None
    try:
        run(serve_async(cfg, mock=mock, listen=None))
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate the config; exit 0 when valid, 1 when not."""
    cfg = _load(config)
    out = _console()
    s = cfg.server
    out.print(f"[green]✓[/] {cfg.source} is valid", markup=True)
    out.print(
        f"  listen {s.host}:{s.port}, auth {'on' if s.auth_token else 'off'},"
        f" {len(cfg.providers)} provider(s), {len(cfg.policies.rules)} rule(s),"
        f" default strategy {cfg.policies.default.strategy}"
    )
    for p in cfg.providers:
        models = ", ".join(p.model_order) if p.models is not None else "any model"
        out.print(f"  provider {p.name}: key from {p.key_source} ({p.masked_key}); {models}")
    _warn(cfg)


@app.command()
def providers(config: ConfigOpt = None) -> None:
    """Table of providers, models, rates (sats per 1k tokens) and masked keys."""
    from rich.table import Table

    cfg = _load(config)
    table = Table(title=f"providers ({cfg.source})")
    for col in ("provider", "url", "model", "in/1k", "out/1k", "base fee", "key", "key source"):
        table.add_column(col, justify="right" if col in ("in/1k", "out/1k", "base fee") else "left")
    for p in cfg.providers:
        models = list(p.model_order) or ["(any)"]
        extra = [m for m in p.model_rates if m not in models]
        for i, m in enumerate(models + extra):
            r = p.rates_for(m) if m != "(any)" else p.rates
            table.add_row(
                p.name if i == 0 else "",
                p.url if i == 0 else "",
                m,
                f"{r.input_rate}",
                f"{r.output_rate}",
                f"{r.base_fee}",
                p.masked_key if i == 0 else "",
                p.key_source if i == 0 else "",
            )
    _console().print(table)
    _warn(cfg)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app(prog_name="arbstr")


if __name__ == "__main__":  # pragma: no cover
    main()
