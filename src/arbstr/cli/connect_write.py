"""``arbstr connect --write``: merge the client settings into the client's own config file,
keeping every other setting and a timestamped backup of the previous file. The merges are pure
(text in, text out); :func:`write_merged` does the file work."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import InlineTable

from arbstr.cli.files import replace_file
from arbstr.errors import ConfigError

HELPER_PREFIX = 'printf %s "$'  # an apiKeyHelper of this form was written by arbstr connect
# Claude Code variables this command manages beyond the ones it writes (dropped when unset).
MANAGED_CLAUDE_ENV = ("ANTHROPIC_AUTH_TOKEN",)


def claude_settings_path(env: Mapping[str, str]) -> Path:
    base = env.get("CLAUDE_CONFIG_DIR") or str(Path(env.get("HOME", "~")).expanduser() / ".claude")
    return Path(base) / "settings.json"


def codex_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("CODEX_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".codex")
    return Path(base) / "config.toml"


def merge_claude_settings(
    text: str | None, where: str, env: Mapping[str, str], key_helper: str | None
) -> str:
    """settings.json with ``env`` merged into its ``env`` object (other keys and variables
    kept). With ``key_helper`` it becomes the ``apiKeyHelper`` and a written
    ``ANTHROPIC_AUTH_TOKEN`` is dropped (it would win over the helper); without, a helper this
    command wrote before is dropped. Raises :class:`ConfigError` for a file it cannot merge."""
    settings: dict[str, Any] = {}
    if text is not None and text.strip():
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc}); not changed") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: not a JSON object; not changed")
        settings = loaded
    current = settings.get("env", {})
    if not isinstance(current, dict):
        raise ConfigError(f"{where}: `env` is not an object; not changed")
    merged = {k: v for k, v in current.items() if k not in MANAGED_CLAUDE_ENV or k in env}
    merged.update(env)
    settings["env"] = merged
    if key_helper is not None:
        settings["apiKeyHelper"] = key_helper
    elif str(settings.get("apiKeyHelper", "")).startswith(HELPER_PREFIX):
        del settings["apiKeyHelper"]
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def merge_codex_config(
    text: str | None, where: str, top: Mapping[str, str], provider_id: str, table: Mapping[str, str]
) -> str:
    """config.toml with ``top`` keys set and ``[model_providers.<provider_id>]`` holding
    ``table`` (its other keys kept, except an ``env_key`` ``table`` no longer has); comments,
    order and every other table kept. Raises :class:`ConfigError` for invalid TOML."""
    text = text or ""
    try:
        tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc}); not changed") from None
    for key, value in top.items():
        doc[key] = value
    providers = doc.get("model_providers")
    if providers is None:
        providers = tomlkit.table(is_super_table=True)
        doc["model_providers"] = providers
    elif not isinstance(providers, MutableMapping):
        raise ConfigError(f"{where}: `model_providers` is not a table; not changed")
    entry = providers.get(provider_id)
    if not isinstance(entry, MutableMapping):
        entry = tomlkit.inline_table() if isinstance(providers, InlineTable) else tomlkit.table()
        providers[provider_id] = entry
    if "env_key" not in table and "env_key" in entry:
        del entry["env_key"]
    for key, value in table.items():
        entry[key] = value
    return tomlkit.dumps(doc)


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    backup: Path | None  # the previous file, kept; None when there was none
    changed: bool  # False: the file already said all this (nothing written)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def write_merged(path: Path, old: str | None, new: str, now: datetime | None = None) -> Written:
    """Replace ``path`` with ``new`` atomically (same mode as before; 0600 for a new file),
    after copying the old file to ``<name>.bak-<UTC time>``. Unchanged content: no write."""
    if old == new:
        return Written(path, None, changed=False)
    try:
        mode = path.stat().st_mode & 0o777 if old is not None else 0o600
        backup = replace_file(path, new, mode, now)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc}") from None
    return Written(path, backup, changed=True)
