"""Config loading (arbstr.config): values, errors naming file + field + reason, secrets."""

from __future__ import annotations

import json
import math
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbstr.config import (
    Config,
    config_from_data,
    convention_env_name,
    is_loopback_host,
    load_config,
    mask_secret,
    parse_listen,
    resolve_config_path,
    resolve_db_path,
)
from arbstr.errors import ConfigError
from arbstr.money import Rates

SPEC_EXAMPLE = """\
[server]
listen = "127.0.0.1:8080"
auth_token = "${ARBSTR_TOKEN}"   # optional; when set, clients must send Authorization: Bearer <it>
request_timeout_s = 120          # total per upstream attempt for non-streaming
connect_timeout_s = 10
stream_idle_timeout_s = 60       # max gap between upstream stream chunks

[database]
path = "./arbstr.db"

[retry]
max_attempts_per_provider = 3    # first try + 2 retries
backoff_base_ms = 500            # 500, 1000, 2000 … with ±25 % jitter
backoff_max_ms = 5000
fallback = true                  # then the next cheapest provider for the same model
retry_after_cap_s = 30           # honour Retry-After up to this
retry_on_timeout = false         # a read timeout after the request was sent may be billed

[[providers]]
name = "alpha"                   # unique, [a-z0-9_-]
url = "https://api.routstr.com/v1"
api_key = "${ALPHA_KEY}"         # or omit: ARBSTR_ALPHA_API_KEY is used
models = ["gpt-4o", "gpt-4o-mini"]   # empty/absent = any model
input_rate = 10                  # sats per 1000 input tokens (float allowed)
output_rate = 30                 # sats per 1000 output tokens
base_fee = 1                     # sats per request
discover = false                 # true: import models and per-model sats prices

[providers.model_rates."gpt-4o-mini"]   # optional per-model override
input_rate = 1.5
output_rate = 6

[policies]
default_strategy = "lowest_cost"  # lowest_cost | lowest_latency

[[policies.rules]]
name = "code_generation"
allowed_models = ["claude-3.5-sonnet", "gpt-4o"]
strategy = "lowest_cost"
max_sats_per_1k_output = 50
keywords = ["code", "function", "implement"]
"""

TOKEN = "tok-0123456789-abcdefghij"
ALPHA = "sk-alpha-0123456789abcdef"
ENV = {"ARBSTR_TOKEN": TOKEN, "ALPHA_KEY": ALPHA}

PROVIDER = '[[providers]]\nname = "alpha"\nurl = "https://a.example/v1"\n'


def write(tmp_path: Path, text: str, name: str = "config.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=ENV if env is None else env)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV if env is None else env)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # always names the file
    return message[len(f"{path}: ") :]


# --- the documented example ----------------------------------------------------------------------


def test_spec_example_loads_into_the_right_values(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    cfg = load_config(path, env=ENV)
    assert cfg.source == str(path)
    assert cfg.warnings == ()  # no literal secrets, mode 600

    s = cfg.server
    assert (s.host, s.port, s.is_loopback) == ("127.0.0.1", 8080, True)
    assert s.auth_token == TOKEN
    assert (s.request_timeout_s, s.connect_timeout_s, s.stream_idle_timeout_s) == (120, 10, 60)
    assert cfg.db_path == "./arbstr.db"

    r = cfg.retry
    assert r.max_attempts_per_provider == 3
    assert (r.backoff_base_ms, r.backoff_max_ms) == (500, 5000)
    assert r.fallback is True
    assert r.retry_after_cap_s == 30
    assert r.retry_on_timeout is False

    assert len(cfg.providers) == 1
    p = cfg.providers[0]
    assert p.name == "alpha"
    assert p.url == "https://api.routstr.com/v1"
    assert p.api_key == ALPHA
    assert p.key_source == "env ${ALPHA_KEY}"
    assert p.models == frozenset({"gpt-4o", "gpt-4o-mini"})
    assert p.model_order == ("gpt-4o", "gpt-4o-mini")
    assert p.serves("gpt-4o") and not p.serves("claude-3.5-sonnet")
    assert p.rates == Rates.of(10, 30, 1)
    assert p.rates_for("gpt-4o") == Rates.of(10, 30, 1)
    # the override sets input and output; base_fee is inherited from the provider
    assert p.rates_for("gpt-4o-mini") == Rates.of(Decimal("1.5"), 6, 1)
    assert p.discover is False

    pol = cfg.policies
    assert pol.default.name == "default"
    assert pol.default.strategy == "lowest_cost"
    assert pol.default.allowed_models == ()
    assert [rule.name for rule in pol.rules] == ["code_generation"]
    rule = pol.by_name["code_generation"]
    assert rule.allowed_models == ("claude-3.5-sonnet", "gpt-4o")
    assert rule.strategy == "lowest_cost"
    assert rule.max_sats_per_1k_output == 50
    assert rule.keywords == ("code", "function", "implement")
    assert pol.has_keywords
    assert set(pol.by_name) == {"default", "code_generation"}


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    assert cfg.server.auth_token is None
    assert cfg.providers == ()
    assert cfg.policies.rules == ()
    assert cfg.db_path is None
    assert cfg.retry.max_attempts_per_provider == 3


def test_defaults_inside_a_provider_and_rule(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        PROVIDER
        + '[policies]\ndefault_strategy = "lowest_latency"\n'
        + '[[policies.rules]]\nname = "r"\nkeywords = ["MiXeD"]\nallowed_models = ["a", "a"]\n',
    )
    p = cfg.providers[0]
    assert p.models is None and p.serves("anything")
    assert p.rates == Rates.of(0, 0, 0)
    assert p.key_source == "none (set ARBSTR_ALPHA_API_KEY)"
    assert p.api_key is None
    rule = cfg.policies.rules[0]
    assert rule.strategy == "lowest_latency"  # inherits default_strategy
    assert rule.keywords == ("mixed",)
    assert rule.allowed_models == ("a",)
    assert rule.max_sats_per_1k_output is None


def test_url_trailing_slash_is_removed(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '[[providers]]\nname = "a"\nurl = " http://h:1/v1/ "\n')
    assert cfg.providers[0].url == "http://h:1/v1"


# --- errors: file, field, reason -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", "colour: unknown key"),
        ('[server]\nlisten = "127.0.0.1:1"\nport = 8080\n', "server.port: unknown key"),
        (PROVIDER + "price = 3\n", "providers[0].price: unknown key"),
        (
            '[[policies.rules]]\nname = "r"\nkeyword = ["x"]\n',
            "policies.rules[0].keyword: unknown key",
        ),
        ("[retry]\nretries = 2\n", "retry.retries: unknown key"),
        ("[database]\nfile = 'x'\n", "database.file: unknown key"),
        (
            PROVIDER + '[providers.model_rates."m"]\ninput = 1\n',
            "providers[0].model_rates['m'].input: unknown key",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            PROVIDER + 'input_rate = "10"\n',
            "providers[0].input_rate",
            "Expected `float`, got `str`",
        ),
        (PROVIDER + "models = 'gpt-4o'\n", "providers[0].models", "Expected `array`, got `str`"),
        (PROVIDER + "discover = 1\n", "providers[0].discover", "Expected `bool`, got `int`"),
        ("[server]\nlisten = 8080\n", "server.listen", "Expected `str`, got `int`"),
        ("[server]\nrequest_timeout_s = 0\n", "server.request_timeout_s", "> 0"),
        ("[retry]\nmax_attempts_per_provider = 0\n", "retry.max_attempts_per_provider", ">= 1"),
        ("[retry]\nfallback = 'yes'\n", "retry.fallback", "Expected `bool`, got `str`"),
        ("server = 1\n", "server", "Expected `object`, got `int`"),
        ("providers = {}\n", "providers", "Expected `array`, got `object`"),
        ('[[providers]]\nname = "a"\n', "providers[0].url", "required key is missing"),
        ('[[providers]]\nurl = "http://h"\n', "providers[0].name", "required key is missing"),
        (
            '[[policies.rules]]\nname = "r"\nmax_sats_per_1k_output = "50"\n',
            "policies.rules[0].max_sats_per_1k_output",
            "Expected `float | null`, got `str`",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, field: str, reason: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{field}: "), message
    assert reason in message


def test_negative_rate_names_the_provider_index_and_field(tmp_path: Path) -> None:
    text = PROVIDER + '[[providers]]\nname = "b"\nurl = "https://b.example"\noutput_rate = -1\n'
    message = error_of(tmp_path, text)
    assert message.startswith("providers[1].output_rate: ")
    assert ">= 0" in message


@pytest.mark.parametrize(
    "field", ["input_rate", "output_rate", "base_fee", "cache_read_rate", "cache_write_rate"]
)
def test_negative_model_rate_names_the_model(tmp_path: Path, field: str) -> None:
    text = (
        PROVIDER
        + f'[providers.model_rates."ok"]\n[providers.model_rates."gpt-4o-mini"]\n{field} = -0.5\n'
    )
    message = error_of(tmp_path, text)
    assert message.startswith(f"providers[0].model_rates['gpt-4o-mini'].{field}: "), message


@pytest.mark.parametrize("value", ["inf", "+inf", "-inf", "nan"])
def test_non_finite_rates_are_rejected(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, PROVIDER + f"input_rate = {value}\n")
    assert message.startswith("providers[0].input_rate: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            PROVIDER + '[providers.model_rates."m"]\noutput_rate = inf\n',
            "providers[0].model_rates['m'].output_rate",
        ),
        (
            '[[policies.rules]]\nname = "r"\nmax_sats_per_1k_output = inf\n',
            "policies.rules[0].max_sats_per_1k_output",
        ),
        ("[server]\nrequest_timeout_s = inf\n", "server.request_timeout_s"),
    ],
)
def test_infinity_is_rejected_everywhere(tmp_path: Path, text: str, field: str) -> None:
    assert error_of(tmp_path, text) == f"{field}: must be a finite number"


def test_duplicate_provider_name(tmp_path: Path) -> None:
    text = PROVIDER + '[[providers]]\nname = "alpha"\nurl = "https://other.example"\n'
    assert error_of(tmp_path, text) == "providers[1].name: duplicate provider name 'alpha'"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "length >= 1"),
        ("   ", "http:// or https://"),
        ("ftp://h.example", "http:// or https://"),
        ("api.routstr.com/v1", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("https:///", "http:// or https://"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, reason: str) -> None:
    message = error_of(tmp_path, f'[[providers]]\nname = "a"\nurl = "{url}"\n')
    assert message.startswith("providers[0].url: "), message
    assert reason in message


@pytest.mark.parametrize("name", ["Alpha", "has space", "dot.name", "", "x" * 65, "ünï"])
def test_invalid_provider_names(tmp_path: Path, name: str) -> None:
    message = error_of(tmp_path, f'[[providers]]\nname = "{name}"\nurl = "http://h"\n')
    assert message.startswith("providers[0].name: "), message


def test_duplicate_models_in_a_provider(tmp_path: Path) -> None:
    message = error_of(tmp_path, PROVIDER + 'models = ["m", "m"]\n')
    assert message == "providers[0].models: lists a model twice"


def test_unknown_strategy_in_a_rule(tmp_path: Path) -> None:
    text = '[[policies.rules]]\nname = "ok"\n[[policies.rules]]\nname = "r"\nstrategy = "fastest"\n'
    message = error_of(
        tmp_path, text.replace('name = "ok"', 'name = "ok"\nstrategy = "lowest_latency"')
    )
    assert message.startswith("policies.rules[1].strategy: "), message
    assert "'fastest'" in message
    message0 = error_of(tmp_path, '[[policies.rules]]\nname = "r"\nstrategy = "cheapest"\n')
    assert message0.startswith("policies.rules[0].strategy: ")


def test_unknown_default_strategy(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[policies]\ndefault_strategy = "random"\n')
    assert message.startswith("policies.default_strategy: ")


@pytest.mark.parametrize("name", ["default", "dup"])
def test_duplicate_or_reserved_rule_names(tmp_path: Path, name: str) -> None:
    text = '[[policies.rules]]\nname = "dup"\n' + f'[[policies.rules]]\nname = "{name}"\n'
    message = error_of(tmp_path, text)
    assert message.startswith("policies.rules[1].name: ")


def test_backoff_max_below_base(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[retry]\nbackoff_base_ms = 900\nbackoff_max_ms = 100\n")
    assert message.startswith("retry.backoff_max_ms: ")


def test_invalid_toml(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[server\nlisten = "x"\n')
    assert message.startswith("invalid TOML: ")
    assert "line 1" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: config file not found"


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, env={})


# --- secrets: expansion, convention keys, key sources --------------------------------------


def test_env_expansion_in_api_key_and_auth_token(tmp_path: Path) -> None:
    text = '[server]\nauth_token = "Bearer-${A}-${B}"\n' + PROVIDER + 'api_key = "sk-${A}${B}"\n'
    cfg = load_text(tmp_path, text, env={"A": "one", "B": "two"})
    assert cfg.server.auth_token == "Bearer-one-two"
    assert cfg.providers[0].api_key == "sk-onetwo"
    assert cfg.providers[0].key_source == "env ${A}, ${B}"
    assert cfg.warnings == ()


def test_only_braced_references_expand(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, PROVIDER + 'api_key = "sk-$A-literal-key"\n', env={"A": "x"})
    assert cfg.providers[0].api_key == "sk-$A-literal-key"
    assert cfg.providers[0].key_source == "config file (literal)"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (PROVIDER + 'api_key = "${MISSING_KEY}"\n', "providers[0].api_key"),
        ('[server]\nauth_token = "${MISSING_KEY}"\n', "server.auth_token"),
    ],
)
def test_unset_variable_is_an_error_naming_it(tmp_path: Path, text: str, field: str) -> None:
    assert (
        error_of(tmp_path, text, env={}) == f"{field}: environment variable MISSING_KEY is not set"
    )


def test_empty_auth_token_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[server]\nauth_token = "${T}"\n', env={"T": ""})
    assert message == "server.auth_token: is empty"


@pytest.mark.parametrize(
    ("name", "var"),
    [
        ("alpha", "ARBSTR_ALPHA_API_KEY"),
        ("my-provider", "ARBSTR_MY_PROVIDER_API_KEY"),
        ("a_b-c9", "ARBSTR_A_B_C9_API_KEY"),
        ("with space", "ARBSTR_WITH_SPACE_API_KEY"),
    ],
)
def test_convention_env_name(name: str, var: str) -> None:
    assert convention_env_name(name) == var


def test_convention_key_is_used_when_api_key_is_absent(tmp_path: Path) -> None:
    text = '[[providers]]\nname = "my-prov"\nurl = "http://h"\n'
    cfg = load_text(tmp_path, text, env={"ARBSTR_MY_PROV_API_KEY": "sk-conventional-123456"})
    p = cfg.providers[0]
    assert p.api_key == "sk-conventional-123456"
    assert p.key_source == "env ARBSTR_MY_PROV_API_KEY"
    assert cfg.warnings == ()
    # set but empty counts as unset
    cfg = load_text(tmp_path, text, env={"ARBSTR_MY_PROV_API_KEY": ""})
    assert cfg.providers[0].api_key is None
    assert cfg.providers[0].key_source == "none (set ARBSTR_MY_PROV_API_KEY)"


def test_explicit_api_key_beats_the_convention_variable(tmp_path: Path) -> None:
    env = {"K": "sk-explicit-0123456", "ARBSTR_ALPHA_API_KEY": "sk-convention-0123"}
    cfg = load_text(tmp_path, PROVIDER + 'api_key = "${K}"\n', env=env)
    assert cfg.providers[0].api_key == "sk-explicit-0123456"
    assert cfg.providers[0].key_source == "env ${K}"


def test_literal_secrets_warn(tmp_path: Path) -> None:
    secret = "sk-literal-secret-value-42"
    token = "literal-token-value-42"
    cfg = load_text(
        tmp_path, f'[server]\nauth_token = "{token}"\n' + PROVIDER + f'api_key = "{secret}"\n'
    )
    assert cfg.providers[0].api_key == secret
    assert cfg.providers[0].key_source == "config file (literal)"
    assert len(cfg.warnings) == 2
    assert any("server.auth_token is written literally" in w for w in cfg.warnings)
    assert any("providers[0].api_key is written literally" in w for w in cfg.warnings)
    assert any("ARBSTR_ALPHA_API_KEY" in w for w in cfg.warnings)
    for w in cfg.warnings:
        assert secret not in w and token not in w


@pytest.mark.parametrize(
    ("mode", "warns"),
    [(0o600, False), (0o400, False), (0o644, True), (0o640, True), (0o604, True)],
)
def test_group_or_other_readable_file_warns(tmp_path: Path, mode: int, warns: bool) -> None:
    path = write(tmp_path, PROVIDER + 'api_key = "${K}"\n', mode=mode)
    cfg = load_config(path, env={"K": "sk-0123456789abcd"})
    perm = [w for w in cfg.warnings if "readable by group/other" in w]
    assert bool(perm) == warns
    if warns:
        assert f"chmod 600 {path}" in perm[0]
        assert f"{mode:o}" in perm[0]


# --- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-abcdef0123456789", "sk-abc…***"),
        ("sk-abcdefghi", "sk-abc…***"),  # 12 characters: long enough for a prefix
        ("sk-abcdefgh", "[REDACTED]"),  # 11
        ("short", "[REDACTED]"),
        ("", "(none)"),
        (None, "(none)"),
    ],
)
def test_mask_secret(secret: str | None, masked: str) -> None:
    assert mask_secret(secret) == masked


@given(st.text(min_size=1, max_size=200))
def test_mask_never_reveals_more_than_a_short_prefix(secret: str) -> None:
    masked = mask_secret(secret)
    if len(secret) < 12:
        assert masked == "[REDACTED]"
    else:
        assert masked == secret[:6] + "…***"
        assert secret not in masked


def test_reprs_never_contain_secrets(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SPEC_EXAMPLE), env=ENV)
    p = cfg.providers[0]
    assert p.masked_key == "sk-alp…***"
    for text in (repr(cfg), str(cfg), repr(p), str(p), repr(cfg.server), repr(cfg.providers)):
        assert ALPHA not in text
        assert TOKEN not in text
    assert "alpha" in repr(p)  # the repr is still useful


# --- listen addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("localhost:1", "localhost", 1),
        ("0.0.0.0:65535", "0.0.0.0", 65535),
        ("[::1]:8080", "::1", 8080),
        ("[::]:80", "::", 80),
        ("[fe80::1%eth0]:9000", "fe80::1%eth0", 9000),
        ("example.com:443", "example.com", 443),
    ],
)
def test_parse_listen(value: str, host: str, port: int) -> None:
    assert parse_listen(value, where="--listen") == (host, port)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "8080",
        "127.0.0.1",
        "127.0.0.1:",
        ":8080",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:80a",
        "127.0.0.1: 80",
        "127.0.0.1:²",  # isdigit() but not int()-able
        "127.0.0.1:١٢٣",  # non-ASCII digits
        "::1",  # unbracketed IPv6: the port is ambiguous
        "::1:8080",
        "[::1]8080",
        "[::1]",
        "[]:80",
    ],
)
def test_parse_listen_errors(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(value, where="--listen")
    assert str(info.value).startswith("--listen: expected HOST:PORT")
    assert repr(value) in str(info.value)


@given(st.text(max_size=30))
def test_parse_listen_only_raises_config_error(value: str) -> None:
    try:
        host, port = parse_listen(value, where="x")
    except ConfigError:
        return
    assert host
    assert 0 <= port <= 65535


def test_bad_listen_in_the_file_names_the_field(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[server]\nlisten = "localhost"\n')
    assert message.startswith("server.listen: expected HOST:PORT")


def test_ipv6_listen_in_the_file(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '[server]\nlisten = "[::1]:9999"\n')
    assert (cfg.server.host, cfg.server.port, cfg.server.is_loopback) == ("::1", 9999, True)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_with_listen_and_db_path(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    other = cfg.with_listen("0.0.0.0:9000").with_db_path("/tmp/x.db")
    assert (other.server.host, other.server.port, other.server.is_loopback) == (
        "0.0.0.0",
        9000,
        False,
    )
    assert other.db_path == "/tmp/x.db"
    assert (cfg.server.port, cfg.db_path) == (8080, None)  # frozen: the original is unchanged
    with pytest.raises(ConfigError, match="--listen"):
        cfg.with_listen("nope")


# --- path resolution -----------------------------------------------------------------------


def test_resolve_config_path() -> None:
    assert resolve_config_path("a.toml", {"ARBSTR_CONFIG": "b.toml"}) == Path("a.toml")
    assert resolve_config_path(None, {"ARBSTR_CONFIG": "b.toml"}) == Path("b.toml")
    assert resolve_config_path(None, {}) == Path("config.toml")


def test_resolve_db_path(tmp_path: Path) -> None:
    with_db = load_text(tmp_path, '[database]\npath = "from-file.db"\n')
    without = load_text(tmp_path, "")
    env = {"ARBSTR_DB": "from-env.db"}
    assert resolve_db_path("cli.db", with_db, env) == "cli.db"
    assert resolve_db_path(None, with_db, env) == "from-env.db"
    assert resolve_db_path(None, with_db, {}) == "from-file.db"
    assert resolve_db_path(None, without, {}) == "arbstr.db"
    assert resolve_db_path(None, None, {}) == "arbstr.db"


# --- properties: TOML round trip, junk never escapes as another exception ------------------


def toml_value(value: Any) -> str:
    """A tiny TOML emitter for the values used here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # "1e-07", "0.1", "12.0": all valid TOML floats
    if isinstance(value, str):
        # a JSON string is a TOML basic string, given raw non-ASCII (JSON would write surrogate
        # pairs) and an escaped DEL (TOML forbids it raw)
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def emit_providers(providers: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for p in providers:
        out.append("[[providers]]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in p.items() if k != "model_rates")
        for model, rates in p.get("model_rates", {}).items():
            out.append(f"[providers.model_rates.{toml_value(model)}]")
            out.extend(f"{k} = {toml_value(v)}" for k, v in rates.items())
        out.append("")
    return "\n".join(out)


rate_values = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
)
model_names = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
provider_tables = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z0-9_-]{1,16}", fullmatch=True),
            "url": st.sampled_from(["http://127.0.0.1:9/v1", "https://api.example.com/v1/"]),
            "input_rate": rate_values,
            "output_rate": rate_values,
            "base_fee": rate_values,
        },
        optional={
            "cache_read_rate": rate_values,
            "models": st.lists(model_names, unique=True, max_size=4),
            "discover": st.booleans(),
            "model_rates": st.dictionaries(
                model_names,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "input_rate": rate_values,
                        "output_rate": rate_values,
                        "cache_read_rate": rate_values,
                    },
                ),
                max_size=2,
            ),
        },
    ),
    max_size=5,
    unique_by=lambda p: str(p["name"]),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(tables=provider_tables)
def test_provider_tables_round_trip_through_toml(tables: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), emit_providers(tables))
        cfg = load_config(path, env={})
    assert [p.name for p in cfg.providers] == [t["name"] for t in tables]
    for p, t in zip(cfg.providers, tables, strict=True):
        assert p.url == t["url"].rstrip("/")
        cache_read = float(t.get("cache_read_rate", t["input_rate"]))
        assert p.rates == Rates.of(
            float(t["input_rate"]), float(t["output_rate"]), float(t["base_fee"]), cache_read
        )
        assert p.rates.input_f == float(t["input_rate"])
        assert p.rates.cache_read_f == p.rates.cache_write_f or "cache_read_rate" in t
        assert p.model_order == tuple(t.get("models", []))
        assert p.models == (frozenset(t["models"]) if t.get("models") else None)
        assert p.discover == t.get("discover", False)
        for model, override in t.get("model_rates", {}).items():
            r = p.rates_for(model)
            assert r.input_f == float(override.get("input_rate", t["input_rate"]))
            assert r.output_f == float(override.get("output_rate", t["output_rate"]))
            assert r.base_f == float(t["base_fee"])
            if "cache_read_rate" in override:
                assert r.cache_read_f == float(override["cache_read_rate"])
            elif "input_rate" in override:  # an own input_rate: its cache rate by default
                assert r.cache_read_f == float(override["input_rate"])
            else:
                assert r.cache_read_f == cache_read


junk = st.one_of(
    st.text(max_size=10),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(max_value=-1),
    st.integers(min_value=10**309),  # beyond any float
    st.floats(max_value=-1e-300),
    st.sampled_from([math.inf, -math.inf, math.nan, -0.5]),
    st.datetimes(),
)


@given(
    value=junk,
    where=st.sampled_from(
        [
            *("input_rate", "output_rate", "base_fee", "cache_read_rate", "cache_write_rate"),
            *("model", "cache_model", "cap"),
        ]
    ),
)
def test_junk_rates_always_give_config_error(value: Any, where: str) -> None:
    # (None, which TOML cannot spell, means "not set" for the optional override and cap)
    provider: dict[str, Any] = {"name": "p", "url": "http://h"}
    rule: dict[str, Any] = {"name": "r"}
    if where == "model":
        provider["model_rates"] = {"m": {"output_rate": value}}
    elif where == "cache_model":
        provider["model_rates"] = {"m": {"cache_read_rate": value}}
    elif where == "cap":
        rule["max_sats_per_1k_output"] = value
    else:
        provider[where] = value
    data = {"providers": [provider], "policies": {"rules": [rule]}}
    with pytest.raises(ConfigError) as info:
        config_from_data(data, source="junk.toml", env={})
    message = str(info.value)
    assert message.startswith("junk.toml: ")
    expected_field = {
        "model": "providers[0].model_rates['m'].output_rate",
        "cache_model": "providers[0].model_rates['m'].cache_read_rate",
        "cap": "policies.rules[0].max_sats_per_1k_output",
    }.get(where, f"providers[0].{where}")
    assert message.startswith(f"junk.toml: {expected_field}: "), message


@settings(max_examples=50)
@given(text=st.text(max_size=60))
def test_arbitrary_text_never_escapes_as_another_exception(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        os.chmod(path, 0o600)
        outcome: Config | ConfigError
        try:
            outcome = load_config(path, env={})
        except ConfigError as exc:
            outcome = exc
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith(f"{path}: ")
    else:
        assert outcome.source == str(path)


def test_cache_rates_default_to_the_input_rate_of_their_section() -> None:
    data = {
        "providers": [
            {
                "name": "p",
                "url": "http://h/v1",
                "input_rate": 10,
                "output_rate": 30,
                "cache_read_rate": 1,
                "model_rates": {
                    "inherits": {"output_rate": 40},  # the provider's cache rates
                    "own-input": {"input_rate": 4},  # cache rates default to its own input
                    "own-cache": {"input_rate": 4, "cache_read_rate": 0.4, "cache_write_rate": 5},
                },
            },
            {"name": "plain", "url": "http://h/v1", "input_rate": 3},
        ]
    }
    p, plain = config_from_data(data, source="<t>", env={}).providers
    assert (p.rates.cache_read_rate, p.rates.cache_write_rate) == (Decimal(1), Decimal(10))
    assert p.rates_for("inherits") == Rates.of(10, 40, 0, 1, 10)
    assert p.rates_for("own-input") == Rates.of(4, 30, 0, 4, 4)
    assert p.rates_for("own-cache") == Rates.of(4, 30, 0, Decimal("0.4"), 5)
    assert plain.rates == Rates.of(3, 0, 0, 3, 3)


def test_negative_cache_rate_names_the_field(tmp_path: Path) -> None:
    message = error_of(tmp_path, PROVIDER + "cache_write_rate = -1\n")
    assert message.startswith("providers[0].cache_write_rate: "), message
