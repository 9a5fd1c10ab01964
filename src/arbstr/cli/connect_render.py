"""What ``arbstr connect`` tells each client, computed from a config file's data (pure: no I/O
beyond reading the given ``env`` mapping). arbstr's auth_token is never part of the output: the
clients are pointed at an environment variable that holds it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from arbstr.config.listen import parse_listen
from arbstr.config.schema import FileConfig
from arbstr.config.secrets import ENV_REF
from arbstr.errors import ConfigError
from arbstr.routing.router import AUTO_MODELS, TIER_MODELS

CLIENTS = ("claude-code", "codex", "openai")
# the model names each client is made for, preferred when no --model is given
FAMILIES = {"claude-code": "claude", "codex": "gpt", "openai": "gpt"}
# the variable suggested when the config does not name one
TOKEN_VAR = "ARBSTR_TOKEN"  # noqa: S105 (a variable name, not a secret)
# Clients insist on some key; an arbstr without auth_token accepts any.
PLACEHOLDER_KEY = "arbstr"
PROVIDER_ID = "arbstr"  # the [model_providers.<id>] table in Codex's config


@dataclass(frozen=True, slots=True)
class Token:
    """Where a client reads arbstr's auth_token from: the variable ``var``."""

    var: str
    from_config: bool  # the config itself reads the token from ``${var}``
    in_env: bool  # ``var`` is set in this environment (to the token, when that can be checked)


@dataclass(frozen=True, slots=True)
class Target:
    """The arbstr a client is pointed at."""

    base_url: str  # http://HOST:PORT, no trailing slash
    token: Token | None  # None: the config has no auth_token
    model: str
    small_model: str
    source: str  # the config file, or a description when there is none
    notes: tuple[str, ...] = ()
    tiered: bool = False  # the client's model slots map to the tier pseudo-models


def client_host(host: str) -> str:
    """The host a local client connects to for a listen host: a wildcard listen is reached on
    loopback; an IPv6 literal is bracketed."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def target_from_data(
    data: Mapping[str, Any],
    *,
    source: str,
    env: Mapping[str, str],
    listen: str | None = None,
    model: str | None = None,
    small_model: str | None = None,
    family: str = "",
    tiered: bool = False,
) -> Target:
    """The target for a config file's parsed TOML (``{}`` when there is none: ``serve
    --mock``). Only the shape is checked: provider keys need not be set in this shell.
    Without ``model``, a model the providers list, preferring names that start with
    ``family`` (the client's own models: ``claude``, ``gpt``); with ``tiered`` (Claude Code's
    model slots) and tiers to fill, ``arbstr/auto`` with the slots mapped to tiers.
    Raises :class:`ConfigError`."""
    try:
        fc = msgspec.convert(data, type=FileConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    address = listen if listen is not None else fc.server.listen
    host, port = parse_listen(address, where="--listen" if listen is not None else "server.listen")
    notes: list[str] = []
    if data:
        served = _served_models(fc)
    else:
        from arbstr.mock.spec import MOCK_MODELS  # (lazily: the mock package brings aiohttp)

        served = frozenset(MOCK_MODELS)
    # the slots map to tiers when each tier has a model: [[tiers]], models found by
    # discovery, or at least three listed (a third each by price)
    tiered = tiered and model is None and (served is None or bool(fc.tiers) or len(served) >= 3)
    if tiered:
        model = "arbstr/auto"
        small_model = small_model or "arbstr/economy"
    if model is None:
        model = default_model(fc, served, family)
        if model in AUTO_MODELS:
            notes.append(
                f"model 'auto' needs a policy rule with allowed_models in {source}; or pass --model"
            )
    small = small_model or model
    for name in dict.fromkeys((model, small)):
        pseudo = name in AUTO_MODELS or name in TIER_MODELS
        if served is not None and name not in served and not pseudo:
            listed = ", ".join(sorted(served)) or "none"
            notes.append(f"no provider in {source} lists the model {name!r} (listed: {listed})")
    return Target(
        base_url=f"http://{client_host(host)}:{port}",
        token=_token(fc.server.auth_token, env),
        model=model,
        small_model=small,
        source=source,
        notes=tuple(notes),
        tiered=tiered,
    )


def default_model(fc: FileConfig, served: frozenset[str] | None, family: str) -> str:
    """The model a client asks for unless told: among what the providers list (else what
    the policy rules allow), the first of the client's ``family``, else the first; ``auto``
    when nothing is known offline (providers that discover their models)."""
    known = (
        sorted(served)
        if served
        else sorted({m for r in fc.policies.rules for m in r.allowed_models})
    )
    for name in known:
        if name.startswith(family):
            return name
    return known[0] if known else "auto"


def _served_models(fc: FileConfig) -> frozenset[str] | None:
    """The models the config's providers list; None when one serves any model (no list, or
    models learned by price discovery)."""
    models: set[str] = set()
    for p in fc.providers:
        if not p.models or p.discover:
            return None
        models.update(p.models)
    return frozenset(models)


def _token(raw: str | None, env: Mapping[str, str]) -> Token | None:
    if raw is None:
        return None
    ref = ENV_REF.fullmatch(raw)
    if ref is not None:
        return Token(ref.group(1), from_config=True, in_env=ref.group(1) in env)
    literal = ENV_REF.search(raw) is None
    return Token(TOKEN_VAR, from_config=False, in_env=literal and env.get(TOKEN_VAR) == raw)


def token_notes(target: Target) -> list[str]:
    """How the token reaches the client, and what the user must do for it."""
    tok = target.token
    if tok is None:
        return [
            f"no auth_token in {target.source}: arbstr accepts any key ({PLACEHOLDER_KEY!r} here)"
        ]
    if tok.from_config:
        notes = [f"arbstr's auth_token is read from ${tok.var} (as {target.source} does)"]
        if not tok.in_env:
            notes.append(f"{tok.var} is not set in this shell: export it before the client starts")
        return notes
    if tok.in_env:
        return [f"{tok.var} in this shell holds arbstr's auth_token"]
    return [
        f"auth_token is written in {target.source}: export {tok.var}=<that value> before the"
        " client starts (arbstr connect never prints it)"
    ]


def _comments(target: Target, extra: list[str]) -> list[str]:
    return [f"# {n}" for n in [*target.notes, *token_notes(target), *extra]]


def _exports(env: Mapping[str, str], refs: Mapping[str, str]) -> list[str]:
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [f'export {k}="${var}"' for k, var in refs.items()]
    return lines


# ---------------------------------------------------------------------------------------------
# Claude Code


def claude_env(target: Target) -> dict[str, str]:
    """The environment Claude Code reads (also the ``env`` of its settings.json), the token
    left out when there is one: it is referenced, never written."""
    env = {"ANTHROPIC_BASE_URL": target.base_url}
    if target.token is None:
        env["ANTHROPIC_AUTH_TOKEN"] = PLACEHOLDER_KEY
    # tiered: opus -> frontier, sonnet -> standard, haiku -> economy, the default -> auto
    big, mid = (
        ("arbstr/frontier", "arbstr/standard") if target.tiered else (target.model, target.model)
    )
    env.update(
        {
            "ANTHROPIC_MODEL": target.model,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": big,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": mid,
            "ANTHROPIC_DEFAULT_FABLE_MODEL": mid,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": target.small_model,
            "ANTHROPIC_SMALL_FAST_MODEL": target.small_model,  # read by older versions
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
    )
    return env


def claude_key_helper(target: Target) -> str | None:
    """settings.json's ``apiKeyHelper``: a command printing the token from its variable, so
    the file never holds it (Claude Code sends its output as x-api-key and Bearer token)."""
    return None if target.token is None else f'printf %s "${target.token.var}"'


def render_claude(target: Target) -> str:
    refs = {} if target.token is None else {"ANTHROPIC_AUTH_TOKEN": target.token.var}
    extra = ["Claude Code: put these in your shell, or `arbstr connect claude-code --write`"]
    return "\n".join([*_comments(target, extra), *_exports(claude_env(target), refs)]) + "\n"


# ---------------------------------------------------------------------------------------------
# Codex CLI


def codex_provider(target: Target) -> dict[str, str]:
    """Codex's ``[model_providers.arbstr]`` table (``env_key``: the variable whose value Codex
    sends as the Bearer token; without one it sends none)."""
    table = {
        "name": "arbstr",
        "base_url": f"{target.base_url}/v1",
        "wire_api": "responses",
    }
    if target.token is not None:
        table["env_key"] = target.token.var
    return table


def codex_top(target: Target) -> dict[str, str]:
    return {"model_provider": PROVIDER_ID, "model": target.model}


def _toml_str(value: str) -> str:
    return msgspec.json.encode(value).decode()  # a JSON string is a valid TOML basic string


def render_codex(target: Target, config_path: str) -> str:
    extra = [f"Codex CLI: add to {config_path}, or `arbstr connect codex --write`"]
    lines = _comments(target, extra)
    lines += [f"{k} = {_toml_str(v)}" for k, v in codex_top(target).items()]
    lines += ["", f"[model_providers.{PROVIDER_ID}]"]
    lines += [f"{k} = {_toml_str(v)}" for k, v in codex_provider(target).items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# OpenAI SDKs and compatible tools


def render_openai(target: Target) -> str:
    env = {"OPENAI_BASE_URL": f"{target.base_url}/v1"}
    refs: dict[str, str] = {}
    if target.token is None:
        env["OPENAI_API_KEY"] = PLACEHOLDER_KEY
    else:
        refs["OPENAI_API_KEY"] = target.token.var
    extra = [f"OpenAI SDKs and tools: these variables; model {target.model!r} picks the cheapest"]
    if target.model not in AUTO_MODELS:
        extra[0] = f"OpenAI SDKs and tools: these variables, with model {target.model!r}"
    return "\n".join([*_comments(target, extra), *_exports(env, refs)]) + "\n"
