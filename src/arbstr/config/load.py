"""TOML configuration -> typed, validated :class:`~arbstr.config.model.Config`.

Every error names the file, the field and the reason (``config.toml: providers[1].output_rate:
Expected `float` >= 0.0``). Secrets (`api_key`, `auth_token`) are expanded from
``${VAR}``, resolved by convention from ``ARBSTR_<NAME>_API_KEY`` and only ever shown masked.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from arbstr.apinames import ALL_APIS, ApiName
from arbstr.config.budgeting import resolve_budgets
from arbstr.config.complexity import resolve_complexity
from arbstr.config.listen import parse_listen
from arbstr.config.model import Config, Policies, Provider, Rule
from arbstr.config.schema import DatabaseSettings, FileConfig, ModelRateSection, ProviderSection
from arbstr.config.secrets import ENV_REF, convention_env_name, expand
from arbstr.config.tiering import resolve_model_info, resolve_tiers
from arbstr.errors import ConfigError
from arbstr.money import Rates
from arbstr.urls import parse_http_url

DEFAULT_CONFIG_PATH = "config.toml"
DEFAULT_DB_PATH = "arbstr.db"


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
    if path == "complexity.weights[...]":
        return _name_weight(data)
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


def _name_weight(data: Mapping[str, Any]) -> str:
    """Name the ``[complexity] weights`` entry msgspec rejected (the first bad one)."""
    try:
        for name, weight in data["complexity"]["weights"].items():
            ok = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not ok or not 0 <= weight <= 100:
                return f"complexity.weights.{name}"
    except (KeyError, TypeError, AttributeError):
        pass
    return "complexity.weights"


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


class _DatabaseOnly(msgspec.Struct):
    """A config file's ``[database]`` table, every other table ignored."""

    database: DatabaseSettings = DatabaseSettings()


def resolve_db_path(
    cli_path: str | None, config: Config | Path | None, env: Mapping[str, str]
) -> str:
    """The request log: ``--db``, else ``$ARBSTR_DB``, else the config's ``[database].path``,
    else ``./arbstr.db``. ``config`` is a loaded config (``serve``) or a config file, of which
    only ``[database]`` is then read, and only when needed: ``stats`` and ``requests`` need no
    provider key nor a valid ``[[providers]]``. Raises :class:`ConfigError`."""
    if cli_path:
        return cli_path
    if env.get("ARBSTR_DB"):
        return env["ARBSTR_DB"]
    if isinstance(config, Path):
        data = _read_toml(config)
        try:
            configured = msgspec.convert(data, type=_DatabaseOnly).database.path
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{config}: {_msgspec_error(exc, data)}") from None
    else:
        configured = config.db_path if config is not None else None
    return configured or DEFAULT_DB_PATH


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve a TOML config file. Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    p = Path(path)
    data = _read_toml(p)
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
    parse_listen(fc.server.listen, where=f"{source}: server.listen")
    auth_token = fc.server.auth_token
    if auth_token is not None:
        auth_token = expand(auth_token, f"{source}: server.auth_token", env)
        if not auth_token:
            raise fail("server.auth_token", "is empty")
        if not ENV_REF.search(fc.server.auth_token or ""):
            warnings.append(
                f"{source}: server.auth_token is written literally in the file;"
                ' prefer auth_token = "${ARBSTR_TOKEN}"'
            )
    server = msgspec.structs.replace(fc.server, auth_token=auth_token)

    r = fc.retry
    if r.backoff_max_ms < r.backoff_base_ms:
        raise fail("retry.backoff_max_ms", "must be >= retry.backoff_base_ms")
    if r.breaker_max_cooldown_s is not None and r.breaker_max_cooldown_s < r.breaker_cooldown_s:
        raise fail("retry.breaker_max_cooldown_s", "must be >= retry.breaker_cooldown_s")
    retry = r

    providers: list[Provider] = []
    seen: set[str] = set()
    for i, ps in enumerate(fc.providers):
        where = f"providers[{i}]"
        if ps.name in seen:
            raise fail(f"{where}.name", f"duplicate provider name {ps.name!r}")
        seen.add(ps.name)
        url = ps.url.strip().rstrip("/")
        try:
            parse_http_url(url)
        except ValueError as exc:
            raise fail(f"{where}.url", f"{exc}, got {ps.url!r}") from None
        api_key, key_source = _resolve_key(ps, where, source, env, warnings)
        base = Rates.of(
            ps.input_rate, ps.output_rate, ps.base_fee, ps.cache_read_rate, ps.cache_write_rate
        )
        model_rates = {model: _model_rates(base, mr) for model, mr in ps.model_rates.items()}
        if len(set(ps.models)) != len(ps.models):
            raise fail(f"{where}.models", "lists a model twice")
        apis = _apis(ps.apis, f"{where}.apis", fail)
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
                balance_interval_s=ps.balance_interval_s,
                apis=apis,
                model_info=resolve_model_info(ps.model_info),
            )
        )

    default = Rule(
        "default",
        (),
        fc.policies.default_strategy,
        None,
        (),
        escalate=fc.policies.escalate,
        escalate_streams=fc.policies.escalate_streams,
    )
    rules: list[Rule] = []
    by_name: dict[str, Rule] = {}
    for i, rs in enumerate(fc.policies.rules):
        where = f"policies.rules[{i}]"
        if rs.name in by_name or rs.name == "default":
            raise fail(f"{where}.name", f"duplicate or reserved rule name {rs.name!r}")
        keywords = tuple(k.lower() for k in rs.keywords)
        try:
            pattern = None if rs.keyword_regex is None else re.compile(rs.keyword_regex, re.I)
        except re.error as exc:
            raise fail(f"{where}.keyword_regex", f"not a valid regular expression: {exc}") from None
        rule = Rule(
            name=rs.name,
            allowed_models=tuple(dict.fromkeys(rs.allowed_models)),
            strategy=rs.strategy or fc.policies.default_strategy,
            max_sats_per_1k_output=rs.max_sats_per_1k_output,
            keywords=keywords,
            keyword_regex=pattern,
            escalate=rs.escalate,
            escalate_streams=rs.escalate_streams,
        )
        rules.append(rule)
        by_name[rule.name] = rule
    by_name["default"] = default
    policies = Policies(
        default=default,
        rules=tuple(rules),
        by_name=by_name,
        has_keywords=any(r.keywords or r.keyword_regex is not None for r in rules),
    )
    return Config(
        source=source,
        server=server,
        retry=retry,
        providers=tuple(providers),
        policies=policies,
        db_path=fc.database.path,
        warnings=tuple(warnings),
        tiers=resolve_tiers(fc.tiers, fail),
        complexity=resolve_complexity(fc.complexity, fail),
        budgets=resolve_budgets(fc.budgets, by_name, [p.name for p in providers], fail),
        metrics=fc.metrics,
    )


def _model_rates(base: Rates, mr: ModelRateSection) -> Rates:
    """A ``model_rates`` entry over the provider's rates: what it leaves out is inherited,
    except that its cache rates default to its own ``input_rate`` when it gives one."""
    own_input = mr.input_rate is not None
    return Rates.of(
        base.input_rate if mr.input_rate is None else mr.input_rate,
        base.output_rate if mr.output_rate is None else mr.output_rate,
        base.base_fee if mr.base_fee is None else mr.base_fee,
        mr.cache_read_rate
        if mr.cache_read_rate is not None
        else (mr.input_rate if own_input else base.cache_read_rate),
        mr.cache_write_rate
        if mr.cache_write_rate is not None
        else (mr.input_rate if own_input else base.cache_write_rate),
    )


def _resolve_key(
    ps: ProviderSection, where: str, source: str, env: Mapping[str, str], warnings: list[str]
) -> tuple[str | None, str]:
    if ps.api_key is not None:
        refs = ENV_REF.findall(ps.api_key)
        key = expand(ps.api_key, f"{source}: {where}.api_key", env)
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


def _apis(
    names: list[str] | None, where: str, fail: Callable[[str, str], ConfigError]
) -> frozenset[ApiName]:
    """A provider's ``apis``: names from :data:`ALL_APIS` (unset: all of them)."""
    if names is None:
        return frozenset(ALL_APIS)
    known: dict[str, ApiName] = {n: n for n in ALL_APIS}
    out: set[ApiName] = set()
    for name in names:
        api = known.get(name)
        if api is None:
            raise fail(where, f"unknown API {name!r}; known: {', '.join(ALL_APIS)}")
        out.add(api)
    if not out:
        raise fail(where, f"is empty; list some of {', '.join(ALL_APIS)} (or leave it out)")
    return frozenset(out)
