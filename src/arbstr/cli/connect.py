"""``arbstr connect CLIENT``: print the settings that point a client at this arbstr, or with
--write merge them into the client's config file (rendering in :mod:`.connect_render`, merging
and writing in :mod:`.connect_write`)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import replace
from typing import Annotated

import typer

from arbstr.cli.common import ConfigOpt, fail
from arbstr.cli.connect_render import (
    CLIENTS,
    FAMILIES,
    PROVIDER_ID,
    Target,
    claude_env,
    claude_key_helper,
    codex_provider,
    codex_top,
    render_claude,
    render_codex,
    render_openai,
    target_from_data,
    token_notes,
)
from arbstr.config import resolve_config_path
from arbstr.errors import ConfigError


def connect(
    client: Annotated[str, typer.Argument(help="claude-code | codex | openai")],
    write: Annotated[
        bool, typer.Option("--write", help="Merge into the client's config file (with a backup)")
    ] = False,
    config: ConfigOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", "-l", help="HOST:PORT, overrides server.listen")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model the client asks for [default: one the providers list, of the"
            " client's own family when there is one]",
        ),
    ] = None,
    small_model: Annotated[
        str | None,
        typer.Option("--small-model", help="Claude Code's small/fast model [default: --model]"),
    ] = None,
) -> None:
    """Print the settings that point CLIENT at this arbstr (--write: into its config file)."""
    if client not in CLIENTS:
        raise fail(f"unknown client {client!r}; one of: {', '.join(CLIENTS)}", code=2)
    if write and client == "openai":
        raise fail(
            "nothing to write for openai: its settings are environment variables;"
            ' run `eval "$(arbstr connect openai)"` or put them in your shell profile',
            code=2,
        )
    try:
        target = _target(config, listen, model, small_model, FAMILIES[client])
        if write:
            _write(client, target)
        else:
            print(_render(client, target), end="")
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _target(
    config: str | None, listen: str | None, model: str | None, small: str | None, family: str
) -> Target:
    path = resolve_config_path(config)
    explicit = config is not None or bool(os.environ.get("ARBSTR_CONFIG"))
    if not path.exists() and not explicit:
        target = target_from_data(
            {},
            source="the default settings",
            env=os.environ,
            listen=listen,
            model=model,
            small_model=small,
            family=family,
            tiered=family == FAMILIES["claude-code"],
        )
        note = f"no {path}: the default listen address, as `arbstr serve --mock` uses"
        return replace(target, notes=(note, *target.notes))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return target_from_data(
        data,
        source=str(path),
        env=os.environ,
        listen=listen,
        model=model,
        small_model=small,
        family=family,
        tiered=family == FAMILIES["claude-code"],
    )


def _render(client: str, target: Target) -> str:
    from arbstr.cli.connect_write import codex_config_path

    if client == "claude-code":
        return render_claude(target)
    if client == "codex":
        return render_codex(target, str(codex_config_path(os.environ)))
    return render_openai(target)


def _write(client: str, target: Target) -> None:
    from arbstr.cli import connect_write as cw

    if client == "claude-code":
        path = cw.claude_settings_path(os.environ)
        old = cw.read_text(path)
        new = cw.merge_claude_settings(
            old, str(path), claude_env(target), claude_key_helper(target)
        )
    else:
        path = cw.codex_config_path(os.environ)
        old = cw.read_text(path)
        new = cw.merge_codex_config(
            old, str(path), codex_top(target), PROVIDER_ID, codex_provider(target)
        )
    done = cw.write_merged(path, old, new)
    for line in [*target.notes, *token_notes(target)]:
        print(f"# {line}")
    if not done.changed:
        print(f"{path}: already up to date")
    elif done.backup is not None:
        print(f"{path}: updated (previous file kept as {done.backup})")
    else:
        print(f"{path}: written")
