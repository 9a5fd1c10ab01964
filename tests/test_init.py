"""``arbstr init``: the written config (mode 600, no literal key, valid), overwrite refusal,
``--force`` backups, ``--routstr``; and config.example.toml through the real loader."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from arbstr.cli.commands import app
from arbstr.cli.init_render import KeyPlan, plan_key, render_config
from arbstr.config import load_config
from arbstr.config.schema import FileConfig
from arbstr.errors import ConfigError

KEY = "sk-routstr-secret-0123456789"
REPO = Path(__file__).resolve().parent.parent
KEY_VARS = ("ROUTSTR_API_KEY", "ARBSTR_ROUTSTR_API_KEY", "ARBSTR_CONFIG")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_check_from_an_empty_directory(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    cfg_path = tmp_path / "config.toml"
    assert mode(cfg_path) == 0o600
    assert "config.toml is valid" in result.output
    assert "export ARBSTR_ROUTSTR_API_KEY=" in result.output  # which variable to set
    assert "arbstr serve" in result.output and "arbstr connect claude-code" in result.output
    cfg = load_config(cfg_path, env={})
    assert cfg.warnings == ()
    (p,) = cfg.providers
    assert (p.name, p.url, p.discover, p.api_key) == (
        "routstr",
        "https://api.routstr.com/v1",
        True,
        None,
    )
    assert cfg.server.is_loopback and cfg.db_path == "./arbstr.db"
    assert [r.name for r in cfg.policies.rules] == ["code", "cheap"]
    assert cfg.tiers == ()  # left to placement by price
    (daily,) = cfg.budgets
    assert (daily.name, daily.limit_msats, daily.per, daily.action) == (
        "daily",
        5_000_000,
        "day",
        "reject",
    )
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    done = subprocess.run(
        [sys.executable, "-m", "arbstr", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stdout and done.stderr == ""


def test_key_variable_is_referenced_never_written(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTSTR_API_KEY", KEY)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "config.toml").read_text()
    assert KEY not in text and KEY not in result.output
    assert 'api_key = "${ROUTSTR_API_KEY}"' in text
    assert "export " not in result.output  # the key is set: nothing to ask
    cfg = load_config(tmp_path / "config.toml", env={"ROUTSTR_API_KEY": KEY})
    assert cfg.providers[0].api_key == KEY and cfg.warnings == ()


def test_convention_variable_is_used_never_written(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBSTR_ROUTSTR_API_KEY", KEY)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "config.toml").read_text()
    assert KEY not in text and KEY not in result.output
    cfg = load_config(tmp_path / "config.toml", env={"ARBSTR_ROUTSTR_API_KEY": KEY})
    assert cfg.providers[0].api_key == KEY


def test_daily_budget_is_an_option(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", "--daily-sats", "120"]).exit_code == 0
    assert [b.limit_msats for b in load_config(tmp_path / "config.toml", env={}).budgets] == [
        120_000
    ]
    assert runner.invoke(app, ["init", "--force", "--daily-sats", "0"]).exit_code == 0
    text = (tmp_path / "config.toml").read_text()
    assert load_config(tmp_path / "config.toml", env={}).budgets == ()
    assert "# [[budgets]]" in text  # how to add one, commented


def test_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text("# mine\n")
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 1
    assert "--force" in result.output
    assert cfg_path.read_text() == "# mine\n"
    assert list(tmp_path.iterdir()) == [cfg_path]


def test_force_keeps_a_backup(runner: CliRunner, tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text("# mine\n")
    cfg_path.chmod(0o644)
    result = runner.invoke(app, ["init", "--force"])
    assert result.exit_code == 0, result.output
    (backup,) = tmp_path.glob("config.toml.bak-*")
    assert backup.read_text() == "# mine\n" and mode(backup) == 0o600
    assert backup.name in result.output
    assert mode(cfg_path) == 0o600 and "discover = true" in cfg_path.read_text()
    again = runner.invoke(app, ["init", "--force"])
    assert again.exit_code == 0, again.output
    assert len(list(tmp_path.glob("config.toml.bak-*"))) == 2  # never overwrites a backup


def test_routstr_url_and_config_path(runner: CliRunner, tmp_path: Path) -> None:
    url = "http://127.0.0.1:8000/v1"
    result = runner.invoke(app, ["init", "--routstr", url, "-c", "sub/arb.toml"])
    assert result.exit_code == 0, result.output
    cfg = load_config(tmp_path / "sub" / "arb.toml", env={})
    assert cfg.providers[0].url == url
    assert not (tmp_path / "config.toml").exists()


def test_bad_routstr_url_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--routstr", "ftp://node.example"])
    assert result.exit_code == 1
    assert "providers[0].url" in result.output
    assert list(tmp_path.iterdir()) == []


def test_plan_key() -> None:
    assert plan_key({}) == KeyPlan("ARBSTR_ROUTSTR_API_KEY", referenced=False, is_set=False)
    assert plan_key({"ROUTSTR_API_KEY": ""}).referenced is False  # empty is unset
    assert plan_key({"ARBSTR_ROUTSTR_API_KEY": KEY}).is_set
    assert plan_key({"ROUTSTR_API_KEY": KEY}) == KeyPlan("ROUTSTR_API_KEY", True, True)


@given(st.text(min_size=1, max_size=40))
def test_render_keeps_any_url_exact(path: str) -> None:
    url = f"https://node.example/{path}"
    data = tomllib.loads(render_config(url, plan_key({})))
    assert data["providers"][0]["url"] == url


def test_example_config_is_valid() -> None:
    env = {
        "ARBSTR_TOKEN": "token-0123456789abcdef",
        "ROUTSTR_API_KEY": KEY,
        "ALPHA_KEY": "sk-alpha-0123456789",
    }
    cfg = load_config(REPO / "config.example.toml", env=env)
    assert [w for w in cfg.warnings if "readable by group/other" not in w] == []
    assert cfg.server.auth_token == env["ARBSTR_TOKEN"]
    routstr, alpha = cfg.providers
    assert routstr.discover and routstr.api_key == KEY
    assert alpha.api_key == env["ALPHA_KEY"] and "claude-3.5-sonnet" in alpha.model_rates
    assert [t.name for t in cfg.tiers] == ["economy", "frontier"]
    assert [r.name for r in cfg.policies.rules] == ["code_generation", "quick"]
    assert cfg.retry.breaker_max_cooldown_s == 300
    data = tomllib.loads((REPO / "config.example.toml").read_text())
    assert set(data) == set(FileConfig.__struct_fields__)  # every section is shown
    assert [b.name for b in cfg.budgets] == ["daily", "code-weekly"]
    assert cfg.metrics.enabled is False
    without = {k: v for k, v in env.items() if k != "ALPHA_KEY"}
    with pytest.raises(ConfigError, match="ALPHA_KEY is not set"):  # it reads the given env
        load_config(REPO / "config.example.toml", env=without)
