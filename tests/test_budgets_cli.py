"""``arbstr budgets``: the config's budgets with their use from the request log, in 80 columns
and as JSON; and the log's spend query the server starts from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbstr.cli import app
from arbstr.routing.calendar import window
from arbstr.storage import Store
from arbstr.storage.spend import read_spent
from logdata import record, ts

CONFIG = """
[[providers]]
name = "alpha"
url = "http://127.0.0.1:9"
models = ["gpt-4o"]

[[policies.rules]]
name = "code"
keywords = ["code"]

[[budgets]]
name = "daily"
sats = 10

[[budgets]]
name = "code-month"
sats = 2.5
per = "month"
policy = "code"
action = "downgrade"

[database]
path = "log.db"
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for var in ("ARBSTR_DB", "ARBSTR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text(CONFIG)
    now = datetime.now(UTC)
    start_of_day = window("day", now)[0]
    today = ts(max(start_of_day, now - timedelta(seconds=1)))
    s = Store.open(str(tmp_path / "log.db"))
    for r in (
        record(timestamp=today, cost_msats=1250),
        record(timestamp=today, cost_msats=None, possibly_billed_msats=500, success=False),
        record(timestamp=today, policy="code", cost_msats=2001),
        record(timestamp=ts(now - timedelta(days=40)), policy="code", cost_msats=99_000),
    ):
        s.submit(r)
    s.close()
    return CliRunner()


def test_budgets_table_shows_use_limit_and_reset_within_80_columns(runner: CliRunner) -> None:
    result = runner.invoke(app, ["budgets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = {line.split()[0]: line.split() for line in lines if line.strip()}
    tomorrow = window("day", datetime.now(UTC))[1].date().isoformat()
    assert cells["daily"] == [
        "daily",
        "all",
        "requests",
        "reject",
        "3.751",
        "10.000/day",
        "6.249",
        tomorrow,
    ]
    assert cells["code-month"][1:6] == ["policy=code", "downgrade", "2.001", "2.500/month", "0.499"]


def test_budgets_json_is_the_servers_document(runner: CliRunner) -> None:
    result = runner.invoke(app, ["budgets", "--json"])
    assert result.exit_code == 0, result.output
    data = {b["name"]: b for b in json.loads(result.output)["data"]}
    assert data["daily"]["used_sats"] == 3.751  # cost and possibly billed, every policy
    assert data["daily"]["remaining_sats"] == 6.249
    assert data["code-month"]["used_sats"] == 2.001  # this month only, policy code
    assert data["code-month"]["scope"] == {"policy": "code", "model": None, "provider": None}
    reset = window("month", datetime.now(UTC))[1]
    assert data["code-month"]["resets_at"] == ts(reset)


def test_the_spend_query_groups_by_day_and_scope(runner: CliRunner, tmp_path: Path) -> None:
    since = datetime.now(UTC) - timedelta(days=60)
    got = sorted((s.policy, s.msats) for s in read_spent(str(tmp_path / "log.db"), since))
    assert got == [("code", 2001), ("code", 99_000), ("default", 1750)]
    assert read_spent(str(tmp_path / "none.db"), since) == []  # no log yet: nothing spent


def test_without_budgets_it_says_so(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CONFIG.split("[[budgets]]")[0])
    result = runner.invoke(app, ["budgets"])
    assert result.exit_code == 0 and "no [[budgets]]" in result.output
