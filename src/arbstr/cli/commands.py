"""The ``arbstr`` command: a typer app with one module per group of commands. Heavy imports
(Rich, the server, aiohttp, Nostr) happen inside the commands that need them."""

from __future__ import annotations

import typer

from arbstr import __version__
from arbstr.cli import budgets_cmd, config_cmds, discover_cmd, log_cmds, route_cmd
from arbstr.cli.connect import connect
from arbstr.cli.init_cmd import init
from arbstr.cli.serve import serve

app = typer.Typer(
    name="arbstr",
    help="Cost-aware OpenAI-compatible proxy for the Routstr marketplace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(init)
app.command()(serve)
app.command()(config_cmds.check)
app.command()(config_cmds.providers)
app.command()(config_cmds.balance)
app.command()(log_cmds.stats)
app.command()(log_cmds.requests)
app.command()(budgets_cmd.budgets)
app.command()(discover_cmd.discover)
app.command()(route_cmd.route)
app.command()(connect)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app(prog_name="arbstr")
