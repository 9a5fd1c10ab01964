"""``arbstr connect``: what it prints for each client, and --write merging into the clients'
config files (other settings kept, a backup made, a second run changing nothing)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbstr.cli import app
from arbstr.cli.connect_render import client_host, target_from_data
from arbstr.cli.connect_write import merge_claude_settings, merge_codex_config

SECRET = "tok-very-secret-0123456789"

CONFIG = """\
[server]
listen = "127.0.0.1:9123"
auth_token = "${ARBSTR_TOKEN}"

[[providers]]
name = "alpha"
url = "https://alpha.example/v1"
api_key = "${ALPHA_KEY}"
models = ["gpt-4o", "claude-sonnet-4", "claude-haiku-4"]
"""


# cleared for every run unless given: the tests' own shell must not leak in
_CLEARED = ("ARBSTR_CONFIG", "ARBSTR_TOKEN", "CLAUDE_CONFIG_DIR", "CODEX_HOME")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full: dict[str, str | None] = dict.fromkeys(_CLEARED)
    full.update(env or {})
    result = CliRunner().invoke(app, ["connect", *args], env=full)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "arbstr.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def homes(tmp_path: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "CODEX_HOME": str(tmp_path / "codex"),
        "ARBSTR_TOKEN": SECRET,
    }


def test_claude_code_with_the_token_in_an_env_var(config: Path, homes: dict[str, str]) -> None:
    code, out, _ = run("claude-code", "-c", str(config), env=homes)
    assert code == 0
    assert out == (
        "# arbstr's auth_token is read from $ARBSTR_TOKEN (as " + str(config) + " does)\n"
        "# Claude Code: put these in your shell, or `arbstr connect claude-code --write`\n"
        "export ANTHROPIC_BASE_URL=http://127.0.0.1:9123\n"
        "export ANTHROPIC_MODEL=arbstr/auto\n"
        "export ANTHROPIC_DEFAULT_OPUS_MODEL=arbstr/frontier\n"
        "export ANTHROPIC_DEFAULT_SONNET_MODEL=arbstr/standard\n"
        "export ANTHROPIC_DEFAULT_FABLE_MODEL=arbstr/standard\n"
        "export ANTHROPIC_DEFAULT_HAIKU_MODEL=arbstr/economy\n"
        "export ANTHROPIC_SMALL_FAST_MODEL=arbstr/economy\n"
        "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n"
        'export ANTHROPIC_AUTH_TOKEN="$ARBSTR_TOKEN"\n'
    )
    assert SECRET not in out


def test_claude_code_without_config_uses_the_default_listen_and_a_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("claude-code", "--listen", "[::1]:7000", "-m", "gpt-4o")
    assert code == 0
    assert "# no config.toml: the default listen address" in out
    assert "export ANTHROPIC_BASE_URL='http://[::1]:7000'\n" in out
    assert "export ANTHROPIC_AUTH_TOKEN=arbstr\n" in out
    assert "export ANTHROPIC_MODEL=gpt-4o\n" in out
    assert "export ANTHROPIC_DEFAULT_HAIKU_MODEL=gpt-4o\n" in out  # --model overrides all
    assert "export ANTHROPIC_DEFAULT_OPUS_MODEL=gpt-4o\n" in out


def test_a_literal_token_is_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\nauth_token = "{SECRET}"\n', encoding="utf-8")
    for client in ("claude-code", "codex", "openai"):
        code, out, err = run(client, "-c", str(path))
        assert code == 0
        assert SECRET not in out + err
        assert f"auth_token is written in {path}: export ARBSTR_TOKEN=<that value>" in out
    # already exported: said so
    _, out, _ = run("openai", "-c", str(path), env={"ARBSTR_TOKEN": SECRET})
    assert "# ARBSTR_TOKEN in this shell holds arbstr's auth_token\n" in out
    assert 'export OPENAI_API_KEY="$ARBSTR_TOKEN"\n' in out


def test_codex_block(config: Path, homes: dict[str, str]) -> None:
    code, out, _ = run("codex", "-c", str(config), "--model", "gpt-4o", env=homes)
    assert code == 0
    body = "\n".join(x for x in out.splitlines() if not x.startswith("#"))
    assert tomllib.loads(body) == {
        "model_provider": "arbstr",
        "model": "gpt-4o",
        "model_providers": {
            "arbstr": {
                "name": "arbstr",
                "base_url": "http://127.0.0.1:9123/v1",
                "wire_api": "responses",
                "env_key": "ARBSTR_TOKEN",
            }
        },
    }
    assert f"add to {homes['CODEX_HOME']}/config.toml" in out


def test_openai_env(config: Path, homes: dict[str, str]) -> None:
    code, out, _ = run("openai", "-c", str(config), "-l", "0.0.0.0:8443", env=homes)
    assert code == 0
    assert out.endswith(
        'export OPENAI_BASE_URL=http://127.0.0.1:8443/v1\nexport OPENAI_API_KEY="$ARBSTR_TOKEN"\n'
    )


def test_unset_token_var_and_unlisted_model_are_noted(config: Path) -> None:
    code, out, _ = run("openai", "-c", str(config), "-m", "gpt-5")
    assert code == 0
    assert "# ARBSTR_TOKEN is not set in this shell: export it before the client starts\n" in out
    assert "lists the model 'gpt-5' (listed: claude-haiku-4, claude-sonnet-4, gpt-4o)" in out


def test_bad_client_exits_2_with_the_list() -> None:
    code, _, err = run("cursor")
    assert code == 2
    assert "unknown client 'cursor'; one of: claude-code, codex, openai" in err


def test_openai_write_is_refused(config: Path) -> None:
    code, _, err = run("openai", "--write", "-c", str(config))
    assert code == 2
    assert "nothing to write for openai" in err


def test_bad_listen_and_bad_config_fail(config: Path, tmp_path: Path) -> None:
    code, _, err = run("codex", "-c", str(config), "--listen", "nope")
    assert code == 1
    assert "--listen: expected HOST:PORT" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n", encoding="utf-8")
    assert run("codex", "-c", str(bad))[0] == 1
    code, _, err = run("codex", "-c", str(tmp_path / "missing.toml"))
    assert code == 1
    assert "config file not found" in err


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("localhost", "localhost")],
)
def test_client_host(host: str, expected: str) -> None:
    assert client_host(host) == expected


def test_target_shape_errors_name_the_field() -> None:
    with pytest.raises(Exception, match=r"server\.listen"):
        target_from_data({"server": {"listen": 8080}}, source="c.toml", env={})


# ---------------------------------------------------------------------------------------------
# --write


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


def test_write_claude_settings_merges_keeps_and_backs_up(
    config: Path, homes: dict[str, str]
) -> None:
    settings = Path(homes["CLAUDE_CONFIG_DIR"]) / "settings.json"
    settings.parent.mkdir()
    before = {
        "permissions": {"allow": ["Bash(ls)"]},
        "env": {"FOO": "bar", "ANTHROPIC_AUTH_TOKEN": "old", "ANTHROPIC_MODEL": "old"},
    }
    settings.write_text(json.dumps(before), encoding="utf-8")
    settings.chmod(0o640)

    code, out, _ = run("claude-code", "--write", "-c", str(config), env=homes)
    assert code == 0, out
    after = json.loads(settings.read_text(encoding="utf-8"))
    assert after["permissions"] == {"allow": ["Bash(ls)"]}
    assert after["env"]["FOO"] == "bar"
    assert "ANTHROPIC_AUTH_TOKEN" not in after["env"]  # the helper supplies the token
    assert after["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9123"
    assert after["env"]["ANTHROPIC_MODEL"] == "arbstr/auto"  # Claude Code's slots: the tiers
    assert after["env"]["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "arbstr/economy"
    assert after["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert after["apiKeyHelper"] == 'printf %s "$ARBSTR_TOKEN"'
    assert SECRET not in settings.read_text(encoding="utf-8")
    assert settings.stat().st_mode & 0o777 == 0o640
    (backup,) = backups(settings)
    assert json.loads(backup.read_text(encoding="utf-8")) == before
    assert f"previous file kept as {backup}" in out

    code, out, _ = run("claude-code", "--write", "-c", str(config), env=homes)
    assert code == 0
    assert "already up to date" in out
    assert backups(settings) == [backup]
    assert json.loads(settings.read_text(encoding="utf-8")) == after


def test_write_claude_settings_new_file_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    code, out, _ = run("claude-code", "--write", "-l", "127.0.0.1:9", env={"HOME": str(home)})
    assert code == 0, out
    settings = home / ".claude" / "settings.json"
    data = json.loads(settings.read_text(encoding="utf-8"))
    assert data["env"]["ANTHROPIC_AUTH_TOKEN"] == "arbstr"
    assert "apiKeyHelper" not in data
    assert backups(settings) == []
    assert settings.stat().st_mode & 0o777 == 0o600


def test_write_claude_refuses_a_file_it_cannot_merge(config: Path, homes: dict[str, str]) -> None:
    settings = Path(homes["CLAUDE_CONFIG_DIR"]) / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{not json", encoding="utf-8")
    code, _, err = run("claude-code", "--write", "-c", str(config), env=homes)
    assert code == 1
    assert "not valid JSON" in err
    assert settings.read_text(encoding="utf-8") == "{not json"
    assert backups(settings) == []


CODEX_BEFORE = """\
# my Codex settings
model = "gpt-5"  # the old one
approval_policy = "on-request"

[profiles.fast]
model = "o4-mini"

[model_providers.other]
name = "Other"
base_url = "http://other.example/v1"

[model_providers.arbstr]
name = "stale"
env_key = "OLD_VAR"
request_max_retries = 2
"""


def test_write_codex_config_merges_keeps_and_backs_up(config: Path, homes: dict[str, str]) -> None:
    path = Path(homes["CODEX_HOME"]) / "config.toml"
    path.parent.mkdir()
    path.write_text(CODEX_BEFORE, encoding="utf-8")

    code, out, _ = run("codex", "--write", "-c", str(config), env=homes)
    assert code == 0, out
    text = path.read_text(encoding="utf-8")
    assert "# my Codex settings\n" in text
    data = tomllib.loads(text)
    assert data["model"] == "gpt-4o"  # the config's gpt model
    assert data["model_provider"] == "arbstr"
    assert data["approval_policy"] == "on-request"
    assert data["profiles"] == {"fast": {"model": "o4-mini"}}
    assert data["model_providers"]["other"]["name"] == "Other"
    assert data["model_providers"]["arbstr"] == {
        "name": "arbstr",
        "base_url": "http://127.0.0.1:9123/v1",
        "wire_api": "responses",
        "env_key": "ARBSTR_TOKEN",
        "request_max_retries": 2,
    }
    (backup,) = backups(path)
    assert backup.read_text(encoding="utf-8") == CODEX_BEFORE

    code, out, _ = run("codex", "--write", "-c", str(config), env=homes)
    assert code == 0
    assert "already up to date" in out
    assert backups(path) == [backup]
    assert path.read_text(encoding="utf-8") == text


def test_merge_codex_drops_env_key_without_a_token() -> None:
    table = {"name": "arbstr", "base_url": "http://h:1/v1", "wire_api": "responses"}
    merged = merge_codex_config(CODEX_BEFORE, "c", {"model": "auto"}, "arbstr", table)
    assert "env_key" not in tomllib.loads(merged)["model_providers"]["arbstr"]
    fresh = merge_codex_config(None, "c", {"model": "auto"}, "arbstr", table)
    assert tomllib.loads(fresh) == {"model": "auto", "model_providers": {"arbstr": table}}
    with pytest.raises(Exception, match="invalid TOML"):
        merge_codex_config("a = ", "c", {}, "arbstr", table)


def test_merge_claude_drops_its_own_helper_without_a_token() -> None:
    before = json.dumps({"apiKeyHelper": 'printf %s "$ARBSTR_TOKEN"', "env": {"A": "1"}})
    merged = json.loads(merge_claude_settings(before, "s", {"ANTHROPIC_AUTH_TOKEN": "x"}, None))
    assert merged == {"env": {"A": "1", "ANTHROPIC_AUTH_TOKEN": "x"}}
    own = json.dumps({"apiKeyHelper": "~/bin/key.sh"})
    assert json.loads(merge_claude_settings(own, "s", {}, None))["apiKeyHelper"] == "~/bin/key.sh"


@pytest.mark.parametrize(
    "before",
    [
        'model_providers = {other = {name = "o"}}\n',
        '[model_providers]\narbstr = {name = "old", x = 1}\n',
        "[model_providers.arbstr]\nx = 1\n",
        'model_providers.arbstr.x = 1\nmodel = "m"\n',
    ],
)
def test_merge_codex_handles_every_table_spelling(before: str) -> None:
    table = {"name": "arbstr", "base_url": "http://h:1/v1", "wire_api": "responses"}
    merged = tomllib.loads(merge_codex_config(before, "c", {"model": "auto"}, "arbstr", table))
    assert merged["model"] == "auto"
    entry = merged["model_providers"]["arbstr"]
    assert {k: entry[k] for k in table} == table
    assert entry.get("x", 1) == 1


def test_merge_codex_refuses_a_non_table_model_providers() -> None:
    with pytest.raises(Exception, match="`model_providers` is not a table"):
        merge_codex_config("model_providers = 3\n", "c", {}, "arbstr", {"name": "arbstr"})


def test_the_default_model_is_one_the_providers_list_of_the_clients_family() -> None:
    """``auto`` needs a policy with allowed_models: a model that works is the safer default."""
    with_config = {"providers": [{"name": "a", "url": "http://x/v1", "models": ["b-1", "gpt-9"]}]}
    claude = target_from_data(with_config, source="c", env={}, family="claude")
    assert claude.model == claude.small_model == "b-1"  # no claude model: the first listed
    assert target_from_data(with_config, source="c", env={}, family="gpt").model == "gpt-9"
    # no config: serve --mock's models
    assert target_from_data({}, source="d", env={}, family="claude").model == "claude-3.5-sonnet"
    two = target_from_data(with_config, source="c", env={}, family="claude", tiered=True)
    assert (two.model, two.tiered) == ("b-1", False)  # two models cannot fill three tiers
    tiered = target_from_data({}, source="c", env={}, family="claude", tiered=True)
    assert (tiered.model, tiered.small_model, tiered.notes) == ("arbstr/auto", "arbstr/economy", ())
    pinned = target_from_data(with_config, source="c", env={}, model="b-1", tiered=True)
    assert (pinned.model, pinned.tiered) == ("b-1", False)
    assert target_from_data({}, source="d", env={}, family="gpt").model == "gpt-4o"
    # discovered models are not known offline: auto, with a note saying what it needs
    found = {"providers": [{"name": "n", "url": "http://x/v1", "discover": True}]}
    t = target_from_data(found, source="c", env={}, family="gpt")
    assert t.model == "auto" and any("allowed_models" in n for n in t.notes)
    assert target_from_data(found, source="c", env={}, model="m", family="gpt").model == "m"
