"""TOML configuration -> typed, validated :class:`Config`.

Every error names the file, the field and the reason (``config.toml: providers[1].output_rate:
Expected `float` >= 0.0``). Secrets (`api_key`, `auth_token`) are expanded from
``${VAR}``, resolved by convention from ``ARBSTR_<NAME>_API_KEY`` and only ever shown masked.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from arbstr.errors import ConfigError
from arbstr.pricing import Rates

Strategy = Literal["lowest_cost", "lowest_latency"]
NonNeg = Annotated[float, Meta(ge=0)]
Positive = Annotated[float, Meta(gt=0)]
Name = Annotated[str, Meta(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]

DEFAULT_CONFIG_PATH = "config.toml"
DEFAULT_DB_PATH = "arbstr.db"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The file's shape, as decoded (unknown keys and wrong types are rejected by msgspec)


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    listen: str = DEFAULT_LISTEN
    auth_token: str | None = None
    request_timeout_s: Positive = 120.0
    connect_timeout_s: Positive = 10.0
    stream_idle_timeout_s: Positive = 60.0
    max_body_bytes: Annotated[int, Meta(gt=0)] = DEFAULT_MAX_BODY_BYTES


class DatabaseSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    path: str | None = None


class RetrySection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_attempts_per_provider: Annotated[int, Meta(ge=1, le=20)] = 3
    backoff_base_ms: NonNeg = 500.0
    backoff_max_ms: NonNeg = 5000.0
    fallback: bool = True
    retry_after_cap_s: NonNeg = 30.0
    retry_on_timeout: bool = False
    deadline_s: Positive = 180.0
    breaker_failures: Annotated[int, Meta(ge=1)] = 3
    breaker_cooldown_s: NonNeg = 30.0


class ModelRateSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    input_rate: NonNeg | None = None
    output_rate: NonNeg | None = None
    base_fee: NonNeg | None = None


class ProviderSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    url: Annotated[str, Meta(min_length=1)]
    api_key: str | None = None
    models: list[Annotated[str, Meta(min_length=1)]] = []
    input_rate: NonNeg = 0.0
    output_rate: NonNeg = 0.0
    base_fee: NonNeg = 0.0
    discover: bool = False
    discover_interval_s: Positive = 300.0
    model_rates: dict[str, ModelRateSection] = {}


class RuleSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    allowed_models: list[Annotated[str, Meta(min_length=1)]] = []
    strategy: Strategy | None = None
    max_sats_per_1k_output: NonNeg | None = None
    keywords: list[Annotated[str, Meta(min_length=1)]] = []


class PoliciesSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    default_strategy: Strategy = "lowest_cost"
    rules: list[RuleSection] = []


class FileConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    server: ServerSection = ServerSection()
    database: DatabaseSection = DatabaseSection()
    retry: RetrySection = RetrySection()
    providers: list[ProviderSection] = []
    policies: PoliciesSection = PoliciesSection()


# ---------------------------------------------------------------------------------------------
# The resolved configuration the program uses


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    url: str  # no trailing slash; chat endpoint is f"{url}/chat/completions"
    api_key: str | None = field(repr=False)
    key_source: str  # human description of where the key came from; never the key
    models: frozenset[str] | None  # None: any model
    model_order: tuple[str, ...]  # models in config order, for listings
    rates: Rates
    model_rates: Mapping[str, Rates]
    discover: bool = False
    discover_interval_s: float = 300.0

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def rates_for(self, model: str) -> Rates:
        return self.model_rates.get(model, self.rates)

    @property
    def masked_key(self) -> str:
        return mask_secret(self.api_key)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    allowed_models: tuple[str, ...]
    strategy: Strategy
    max_sats_per_1k_output: float | None
    keywords: tuple[str, ...]  # lower-cased


@dataclass(frozen=True, slots=True)
class Policies:
    default: Rule
    rules: tuple[Rule, ...]
    by_name: Mapping[str, Rule]
    has_keywords: bool


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str
    port: int
    auth_token: str | None = field(repr=False)
    request_timeout_s: float
    connect_timeout_s: float
    stream_idle_timeout_s: float
    max_body_bytes: int

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts_per_provider: int = 3
    backoff_base_ms: float = 500.0
    backoff_max_ms: float = 5000.0
    fallback: bool = True
    retry_after_cap_s: float = 30.0
    retry_on_timeout: bool = False
    deadline_s: float = 180.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from, or a description like "<mock>"
    server: ServerSettings
    retry: RetrySettings
    providers: tuple[Provider, ...]
    policies: Policies
    db_path: str | None
    warnings: tuple[str, ...] = ()

    def provider(self, name: str) -> Provider | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None

    def with_listen(self, listen: str) -> Config:
        host, port = parse_listen(listen, where="--listen")
        return replace(self, server=replace(self.server, host=host, port=port))

    def with_db_path(self, path: str) -> Config:
        return replace(self, db_path=path)


# ---------------------------------------------------------------------------------------------
# Helpers

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, *, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port)."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]:")
    else:
        host, sep, rest = value.rpartition(":")
        if ":" in host:  # an IPv6 address must be bracketed, else the port is ambiguous
            sep = ""
    # isascii: str.isdigit() accepts e.g. "²" (int() then raises ValueError) and "١٢٣"
    if (
        not sep
        or not host
        or not (rest.isascii() and rest.isdigit())
        or not 0 <= int(rest) <= 65535
    ):
        raise ConfigError(
            f"{where}: expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got {value!r}"
        )
    return host, int(rest)


def _expand(value: str, where: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in env:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        return env[var]

    return _ENV_REF.sub(sub, value)


def _msgspec_error(exc: msgspec.ValidationError, data: Mapping[str, Any]) -> str:
    """Turn msgspec's ``Reason - at `$.a.b[1]``` into ``a.b[1]: Reason``."""
    text = str(exc)
    reason, sep, path = text.rpartition(" - at `$")
    if not sep:
        reason, path = text, ""
    else:
        path = _name_model_rates_key(path.rstrip("`").lstrip("."), data)
    m = re.match(r"Object contains unknown field `([^`]*)`", reason)
    if m:
        key = m.group(1)
        return f"{path + '.' if path else ''}{key}: unknown key"
    m = re.match(r"Object missing required field `([^`]*)`", reason)
    if m:
        key = m.group(1)
        return f"{path + '.' if path else ''}{key}: required key is missing"
    return f"{path or '(top level)'}: {reason}"


def _name_model_rates_key(path: str, data: Mapping[str, Any]) -> str:
    """msgspec spells a dict key as ``[...]``; name the ``model_rates`` entry at fault."""
    m = re.match(r"providers\[(\d+)\]\.model_rates\[\.\.\.\]", path)
    if m is None:
        return path
    try:
        entries = data["providers"][int(m.group(1))]["model_rates"]
        for model, entry in entries.items():
            try:
                msgspec.convert(entry, type=ModelRateSection)
            except msgspec.ValidationError:
                return path.replace("[...]", f"[{model!r}]", 1)
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return path


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first ``inf``/``nan`` float (TOML allows both) in parsed config data."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            if path.endswith("model_rates"):  # keyed by model name, spelt as in other errors
                sub = f"{path}[{k!r}]"
            else:
                sub = f"{path}.{k}" if path else str(k)
            found = _non_finite(v, sub)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(cli_path or env.get("ARBSTR_CONFIG") or DEFAULT_CONFIG_PATH)


def resolve_db_path(cli_path: str | None, config: Config | None, env: Mapping[str, str]) -> str:
    return (
        cli_path
        or env.get("ARBSTR_DB")
        or (config.db_path if config is not None else None)
        or DEFAULT_DB_PATH
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve a TOML config file. Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    warnings: list[str] = []
    try:
        mode = p.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(
                f"{p}: config file is readable by group/other (mode {stat.S_IMODE(mode):o});"
                f" it may hold secrets: chmod 600 {p}"
            )
    except OSError:
        pass
    return config_from_data(data, source=str(p), env=env, warnings=warnings)


def config_from_data(
    data: Mapping[str, Any],
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Validate an already-parsed config mapping (as from TOML) and resolve it."""
    env = os.environ if env is None else env
    warnings = [] if warnings is None else warnings
    try:
        fc = msgspec.convert(data, type=FileConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_msgspec_error(exc, data)}") from None

    def fail(where: str, reason: str) -> ConfigError:
        return ConfigError(f"{source}: {where}: {reason}")

    bad = _non_finite(data, "")
    if bad is not None:  # inf passes msgspec's ``ge=0`` and would break the cost arithmetic
        raise fail(bad, "must be a finite number")

    # server
    host, port = parse_listen(fc.server.listen, where=f"{source}: server.listen")
    auth_token = fc.server.auth_token
    if auth_token is not None:
        auth_token = _expand(auth_token, f"{source}: server.auth_token", env)
        if not auth_token:
            raise fail("server.auth_token", "is empty")
        if not _ENV_REF.search(fc.server.auth_token or ""):
            warnings.append(
                f"{source}: server.auth_token is written literally in the file;"
                ' prefer auth_token = "${ARBSTR_TOKEN}"'
            )
    server = ServerSettings(
        host=host,
        port=port,
        auth_token=auth_token,
        request_timeout_s=fc.server.request_timeout_s,
        connect_timeout_s=fc.server.connect_timeout_s,
        stream_idle_timeout_s=fc.server.stream_idle_timeout_s,
        max_body_bytes=fc.server.max_body_bytes,
    )

    r = fc.retry
    if r.backoff_max_ms < r.backoff_base_ms:
        raise fail("retry.backoff_max_ms", "must be >= retry.backoff_base_ms")
    retry = RetrySettings(
        max_attempts_per_provider=r.max_attempts_per_provider,
        backoff_base_ms=r.backoff_base_ms,
        backoff_max_ms=r.backoff_max_ms,
        fallback=r.fallback,
        retry_after_cap_s=r.retry_after_cap_s,
        retry_on_timeout=r.retry_on_timeout,
        deadline_s=r.deadline_s,
        breaker_failures=r.breaker_failures,
        breaker_cooldown_s=r.breaker_cooldown_s,
    )

    providers: list[Provider] = []
    seen: set[str] = set()
    for i, ps in enumerate(fc.providers):
        where = f"providers[{i}]"
        if ps.name in seen:
            raise fail(f"{where}.name", f"duplicate provider name {ps.name!r}")
        seen.add(ps.name)
        url = ps.url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise fail(f"{where}.url", f"must be an http:// or https:// URL, got {ps.url!r}")
        api_key, key_source = _resolve_key(ps, where, source, env, warnings)
        base = Rates.of(ps.input_rate, ps.output_rate, ps.base_fee)
        model_rates: dict[str, Rates] = {}
        for model, mr in ps.model_rates.items():
            model_rates[model] = Rates.of(
                ps.input_rate if mr.input_rate is None else mr.input_rate,
                ps.output_rate if mr.output_rate is None else mr.output_rate,
                ps.base_fee if mr.base_fee is None else mr.base_fee,
            )
        if len(set(ps.models)) != len(ps.models):
            raise fail(f"{where}.models", "lists a model twice")
        providers.append(
            Provider(
                name=ps.name,
                url=url,
                api_key=api_key,
                key_source=key_source,
                models=frozenset(ps.models) if ps.models else None,
                model_order=tuple(ps.models),
                rates=base,
                model_rates=model_rates,
                discover=ps.discover,
                discover_interval_s=ps.discover_interval_s,
            )
        )

    default = Rule("default", (), fc.policies.default_strategy, None, ())
    rules: list[Rule] = []
    by_name: dict[str, Rule] = {}
    for i, rs in enumerate(fc.policies.rules):
        where = f"policies.rules[{i}]"
        if rs.name in by_name or rs.name == "default":
            raise fail(f"{where}.name", f"duplicate or reserved rule name {rs.name!r}")
        rule = Rule(
            name=rs.name,
            allowed_models=tuple(dict.fromkeys(rs.allowed_models)),
            strategy=rs.strategy or fc.policies.default_strategy,
            max_sats_per_1k_output=rs.max_sats_per_1k_output,
            keywords=tuple(k.lower() for k in rs.keywords),
        )
        rules.append(rule)
        by_name[rule.name] = rule
    by_name["default"] = default
    policies = Policies(
        default=default,
        rules=tuple(rules),
        by_name=by_name,
        has_keywords=any(r.keywords for r in rules),
    )
    return Config(
        source=source,
        server=server,
        retry=retry,
        providers=tuple(providers),
        policies=policies,
        db_path=fc.database.path,
        warnings=tuple(warnings),
    )


def _resolve_key(
    ps: ProviderSection, where: str, source: str, env: Mapping[str, str], warnings: list[str]
) -> tuple[str | None, str]:
    if ps.api_key is not None:
        refs = _ENV_REF.findall(ps.api_key)
        key = _expand(ps.api_key, f"{source}: {where}.api_key", env)
        if refs:
            return key or None, "env " + ", ".join(f"${{{r}}}" for r in refs)
        warnings.append(
            f"{source}: {where}.api_key is written literally in the file;"
            f' prefer api_key = "${{...}}" or the {convention_env_name(ps.name)} variable'
        )
        return key or None, "config file (literal)"
    conv = convention_env_name(ps.name)
    if env.get(conv):
        return env[conv], f"env {conv}"
    return None, f"none (set {conv})"
