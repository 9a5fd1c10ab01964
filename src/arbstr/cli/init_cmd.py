"""``arbstr init``: write a starter ``config.toml`` for a Routstr node (mode 600, a backup
kept when ``--force`` replaces a file), then ``check`` it and print the next steps."""

from __future__ import annotations

import os
import tomllib
from typing import Annotated

import typer

from arbstr.cli.common import ConfigOpt, console, esc, fail
from arbstr.cli.files import replace_file
from arbstr.cli.init_render import (
    DEFAULT_DAILY_SATS,
    DEFAULT_ROUTSTR_URL,
    next_steps,
    plan_key,
    render_config,
)
from arbstr.config import config_from_data, resolve_config_path
from arbstr.errors import ConfigError


def init(
    routstr: Annotated[
        str, typer.Option("--routstr", help="the Routstr node's API URL")
    ] = DEFAULT_ROUTSTR_URL,
    config: ConfigOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing file (a backup is kept)")
    ] = False,
    daily_sats: Annotated[
        int, typer.Option("--daily-sats", help="a daily budget in sats (0: none)", min=0)
    ] = DEFAULT_DAILY_SATS,
) -> None:
    """Write a commented config.toml for a Routstr node, check it, print the next steps."""
    from arbstr.cli.config_cmds import check

    path = resolve_config_path(config)
    key = plan_key(os.environ)
    text = render_config(routstr, key, daily_sats=daily_sats)
    try:  # refuse a bad --routstr before anything is written
        config_from_data(tomllib.loads(text), source=str(path), env=os.environ)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if path.exists() and not force:
        raise fail(f"{path} exists; pass --force to replace it (a backup is kept)")
    try:
        backup = replace_file(path, text, 0o600)  # (its backup too: it may name secrets)
    except OSError as exc:
        raise fail(f"{path}: cannot write: {exc}") from None
    out = console()
    out.print(f"wrote {esc(str(path))} (mode 600)", markup=False)
    if backup is not None:
        out.print(f"  previous file kept as {esc(str(backup))}", markup=False)
    out.print(f"  key from the environment variable {key.variable}", markup=False)
    check(str(path))
    out.print("next steps:", markup=False)
    for step in next_steps(key):
        out.print(f"  {step}", markup=False)
