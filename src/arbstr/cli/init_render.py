"""The ``config.toml`` that ``arbstr init`` writes: pure rendering from a URL and the
environment (which variable holds the key), so it can be tested without touching files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from arbstr.config import convention_env_name

DEFAULT_ROUTSTR_URL = "https://api.routstr.com/v1"
PROVIDER_NAME = "routstr"
KEY_VAR = "ROUTSTR_API_KEY"  # named by ``api_key = "${...}"`` when it is set at init time


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Where the written config takes the key from; never the key itself."""

    variable: str  # the environment variable the config reads
    referenced: bool  # True: ``api_key = "${variable}"``; False: the naming convention
    is_set: bool  # the variable holds a key now


def plan_key(env: Mapping[str, str]) -> KeyPlan:
    """``${ROUTSTR_API_KEY}`` when that is set; else the ``ARBSTR_ROUTSTR_API_KEY``
    convention, which leaves the config valid while no key is set yet."""
    if env.get(KEY_VAR):
        return KeyPlan(KEY_VAR, referenced=True, is_set=True)
    conv = convention_env_name(PROVIDER_NAME)
    return KeyPlan(conv, referenced=False, is_set=bool(env.get(conv)))


def _q(text: str) -> str:
    """``text`` as a TOML basic string: quote, backslash and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


DEFAULT_DAILY_SATS = 5000


def _budget(daily_sats: int) -> str:
    if daily_sats <= 0:
        return """\
# No daily budget. To cap what requests may spend per UTC day, add:
# [[budgets]]
# name = "daily"
# sats = 5000
"""
    return f"""\
# At most this many sats per UTC day (use counted from the request log, restarts included);
# a request over it gets 429 budget_exceeded. Raise it, scope it (policy, model, provider)
# or set action = "downgrade" (auto requests go to the cheapest tier instead).
[[budgets]]
name = "daily"
sats = {daily_sats}
per = "day"
action = "reject"
"""


def render_config(
    url: str, key: KeyPlan, db_path: str = "./arbstr.db", daily_sats: int = DEFAULT_DAILY_SATS
) -> str:
    """The commented config: one discovering Routstr provider, loopback server, a request
    log, two keyword rules, tiers left to placement by price and a daily budget."""
    conv = convention_env_name(PROVIDER_NAME)
    if key.referenced:
        key_lines = (
            f'api_key = "${{{key.variable}}}"     # read from the environment at start,'
            " never written here\n"
        )
    else:
        key_lines = (
            f"# No api_key line: the key is read from {conv} (the naming convention).\n"
            f"# Or uncomment this and set {KEY_VAR} instead (unset is then an error):\n"
            f'# api_key = "${{{KEY_VAR}}}"\n'
        )
    return f"""\
# arbstr configuration, written by `arbstr init`. Validate it with `arbstr check`.
# Every key is described in README.md ("Configuration"); config.example.toml shows them all.
# Keys are never written in this file: they come from environment variables.

[server]
# Loopback only: nothing off this machine can reach the proxy. A non-loopback listen
# needs auth_token = "${{ARBSTR_TOKEN}}" (serve refuses it otherwise, unless --insecure).
listen = "127.0.0.1:8080"

[database]
# The request log (SQLite): tokens, cost and latency per request; never prompts or keys.
path = {_q(db_path)}

[[providers]]
name = "{PROVIDER_NAME}"
url = {_q(url)}
# Models and prices (sats per token) come from GET {{url}}/models at start and about
# every discover_interval_s seconds; no models list or rates are needed here.
discover = true
{key_lines}
[policies]
default_strategy = "lowest_cost"   # the cheapest provider and model that fit

# The first rule with a keyword (whole word) in the last user message applies.
[[policies.rules]]
name = "code"
keywords = ["code", "function", "implement", "refactor", "debug", "bug", "test"]
strategy = "lowest_cost"
escalate = true                     # a failed tiered answer is re-asked one tier up

[[policies.rules]]
name = "cheap"
keywords = ["summarize", "summarise", "translate", "classify", "tldr", "rephrase"]
strategy = "lowest_cost"
# max_sats_per_1k_output = 2        # uncomment to drop dearer providers for these

# Tiers (economy, standard, frontier) for "model": "auto" and "arbstr/<tier>".
# None are configured: the discovered models are placed by output price, cut into
# thirds. To pin models, add for example:
# [[tiers]]
# name = "frontier"
# models = ["claude-sonnet-4", "gpt-4o"]

{_budget(daily_sats)}"""


def next_steps(key: KeyPlan) -> list[str]:
    """What to do after ``init``: the key (when unset), then serve and connect a client."""
    steps: list[str] = []
    if not key.is_set:
        steps.append(f"export {key.variable}=<your Routstr key>   (it is not set now)")
    steps.append("arbstr serve")
    steps.append("arbstr connect claude-code   (or codex, openai)")
    return steps
