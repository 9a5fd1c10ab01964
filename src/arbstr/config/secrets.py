"""Secrets in the config: ``${VAR}`` expansion, the ``ARBSTR_<NAME>_API_KEY`` convention and
masking for display."""

from __future__ import annotations

import re
from collections.abc import Mapping

from arbstr.errors import ConfigError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def mask_secret(secret: str | None) -> str:
    """``sk-abc…***`` for keys long enough to show a prefix safely, else ``[REDACTED]``."""
    if not secret:
        return "(none)"
    if len(secret) < 12:
        return "[REDACTED]"
    return f"{secret[:6]}…***"


def convention_env_name(provider_name: str) -> str:
    """``ARBSTR_<NAME>_API_KEY`` with ``-`` and spaces turned into ``_``."""
    upper = provider_name.upper().replace("-", "_").replace(" ", "_")
    return f"ARBSTR_{upper}_API_KEY"


def expand(value: str, where: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` replaced from ``env``; an unset variable is an error naming it."""

    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in env:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        return env[var]

    return ENV_REF.sub(sub, value)
