"""What the commands share: the --config option, Rich consoles (imported lazily), errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbstr.config import Config, load_config, resolve_config_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from arbstr.cli.fit import Overhead
    from arbstr.cli.tables import Col

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file [default: $ARBSTR_CONFIG or ./config.toml]"),
]

WideOpt = Annotated[
    bool, typer.Option("--wide", help="every column, however wide the terminal (no cell is cut)")
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


def print_fitted(
    cols: Sequence[Col],
    rows: Sequence[tuple[Sequence[str | Text], str | None]],
    wide: bool,
    overhead: Overhead,
    **table_kw: Any,
) -> None:
    """A table fitted to the terminal (``wide``: every column whole), and its note."""
    from arbstr.cli.tables import fitted_table

    out = console()
    width = None if wide else out.width
    if wide:  # the table is not expanded: it stays as wide as its content
        out.width = 10_000
    fitted = fitted_table(cols, rows, width, overhead=overhead, **table_kw)
    out.print(fitted.table)
    if fitted.note:
        out.print(fitted.note, markup=False, style="dim")
