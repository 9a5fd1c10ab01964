"""What the commands share: the --config option, Rich consoles (imported lazily), errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from arbstr.config import Config, load_config, resolve_config_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file [default: $ARBSTR_CONFIG or ./config.toml]"),
]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def esc(text: str) -> str:
    """Escape config-supplied text (paths, urls, model names) for Rich markup, which would
    otherwise swallow ``[abc]`` or crash on ``[/x]``."""
    from rich.markup import escape

    return escape(text)


def fail(message: str, code: int = 1) -> typer.Exit:
    console(stderr=True).print(f"[bold red]error:[/] {esc(message)}", markup=True)
    return typer.Exit(code)


def load(config: str | None) -> Config:
    try:
        return load_config(resolve_config_path(config))
    except ConfigError as exc:
        raise fail(str(exc)) from None


def warn(cfg: Config) -> None:
    err = console(stderr=True)
    for w in cfg.warnings:
        err.print(f"[yellow]warning:[/] {esc(w)}", markup=True)
