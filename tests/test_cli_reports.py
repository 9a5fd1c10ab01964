"""`arbstr stats` and `arbstr requests`: the request log as tables and as JSON."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from arbstr.cli import app
from arbstr.cli.tables import id_suffixes
from arbstr.records import RequestRecord
from arbstr.storage import Store, schema
from logdata import assert_stats_match, expected_stats, record, ts, where


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for var in ("ARBSTR_DB", "ARBSTR_CONFIG", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def fill(path: str | Path, recs: list[RequestRecord]) -> None:
    s = Store.open(str(path))
    for r in recs:
        s.submit(r)
    s.close()


def sample() -> list[RequestRecord]:
    now = datetime.now(UTC)
    return [
        record(
            model="gpt-4o",
            provider="alpha",
            cost_msats=1250,
            latency_ms=100,
            timestamp=ts(now - timedelta(minutes=5)),
        ),
        record(
            model="gpt-4o",
            provider="beta",
            cost_msats=2001,
            latency_ms=300,
            streaming=True,
            timestamp=ts(now - timedelta(minutes=4)),
        ),
        record(
            model="gpt-4o-mini",
            provider="alpha",
            policy="cheap",
            cost_msats=333,
            latency_ms=200,
            timestamp=ts(now - timedelta(hours=3)),
        ),
        record(
            model="gpt-4o-mini",
            provider=None,
            success=False,
            error_status=400,
            error_message="no provider serves [gpt-4o-mini]",
            cost_msats=None,
            input_tokens=None,
            output_tokens=None,
            timestamp=ts(now - timedelta(minutes=1)),
        ),
        record(  # outside the default 7 days
            model="old-model",
            cost_msats=99000,
            timestamp=ts(now - timedelta(days=9)),
        ),
    ]


def run(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_stats_json_matches_reference(runner: CliRunner, tmp_path: Path) -> None:
    recs = sample()
    fill(tmp_path / "log.db", recs)
    out = json.loads(run(runner, "stats", "--db", "log.db", "--json").stdout)
    assert_stats_match(out, expected_stats(recs, where(out["since"], out["until"])))
    assert out["counts"] == {"total": 4, "success": 3, "error": 1, "streaming": 1, "escalated": 0}
    assert out["costs"]["total_cost_sats"] == 3.584

    out = json.loads(
        run(
            runner, "stats", "--db", "log.db", "--json", "--range", "last_30d", "-g", "model"
        ).stdout
    )
    assert set(out["groups"]) == {"gpt-4o", "gpt-4o-mini", "old-model"}
    assert out["groups"]["old-model"]["costs"]["total_cost_sats"] == 99.0
    assert_stats_match(
        out, expected_stats(recs, where(out["since"], out["until"]), group_by="model")
    )

    out = json.loads(run(runner, "stats", "--db", "log.db", "--json", "--provider", "alpha").stdout)
    assert out["counts"]["total"] == 2
    assert out["performance"]["p50_latency_ms"] == 100


def test_stats_table(runner: CliRunner, tmp_path: Path) -> None:
    fill(tmp_path / "log.db", sample())
    text = run(runner, "stats", "--db", "log.db", "--group-by", "provider").stdout
    for word in ("provider", "alpha", "beta", "(none)", "total", "1.583", "2.001", "3.584"):
        assert word in text
    assert "old-model" not in text
    lines = text.splitlines()
    assert lines.index(next(ln for ln in lines if " beta " in ln)) < lines.index(
        next(ln for ln in lines if " alpha " in ln)
    )  # dearest first
    text = run(
        runner, "stats", "--db", "log.db", "--since", "2000-01-01", "--policy", "cheap"
    ).stdout
    assert "0.333" in text and "2000-01-01T00:00:00.000Z" in text
    assert "possibly billed" not in text  # nothing to say: no line


def test_stats_shows_what_was_possibly_billed(runner: CliRunner, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    timed_out = {
        "success": False,
        "error_status": 504,
        "cost_msats": None,
        "input_tokens": None,
        "output_tokens": None,
    }
    recs = [
        record(cost_msats=1000, timestamp=ts(now - timedelta(minutes=3))),
        record(**timed_out, possibly_billed_msats=1250, timestamp=ts(now - timedelta(minutes=2))),
        record(**timed_out, possibly_billed_msats=2, timestamp=ts(now - timedelta(minutes=1))),
    ]
    fill(tmp_path / "log.db", recs)
    data = json.loads(run(runner, "stats", "--db", "log.db", "--json").stdout)
    assert data["costs"]["total_cost_sats"] == 1.0
    assert data["costs"]["possibly_billed_sats"] == 1.252
    assert data["costs"]["possibly_billed_requests"] == 2
    out = runner.invoke(app, ["stats", "--db", "log.db"], env={"COLUMNS": "80"}).output
    assert max(len(line) for line in out.splitlines()) <= 80
    text = " ".join(out.split())
    assert "possibly billed, not in the sats column: 2 request(s), about 1.252 sats" in text
    page = json.loads(run(runner, "requests", "--db", "log.db", "--json").stdout)
    assert [d["cost"]["possibly_billed_sats"] for d in page["data"]] == [0.002, 1.25, None]


def test_requests_json_and_filters(runner: CliRunner, tmp_path: Path) -> None:
    recs = sample()
    fill(tmp_path / "log.db", recs)
    out = json.loads(run(runner, "requests", "--db", "log.db", "--json").stdout)
    assert out["total"] == 5 and out["page"] == 1 and out["per_page"] == 20
    assert [d["request_id"] for d in out["data"]] == [
        r.request_id for r in sorted(recs, key=lambda r: r.timestamp, reverse=True)
    ]
    out = json.loads(
        run(
            runner,
            "requests",
            "--db",
            "log.db",
            "--json",
            "--success",
            "--sort",
            "cost_sats",
            "--order",
            "asc",
            "--per-page",
            "2",
            "--page",
            "2",
        ).stdout
    )
    assert out["total"] == 4 and out["total_pages"] == 2
    assert [d["cost"]["sats"] for d in out["data"]] == [2.001, 99.0]
    out = json.loads(run(runner, "requests", "--db", "log.db", "--json", "--failed").stdout)
    assert [d["error"] for d in out["data"]] == [
        {"status": 400, "message": "no provider serves [gpt-4o-mini]"}
    ]
    out = json.loads(
        run(
            runner, "requests", "--db", "log.db", "--json", "--streaming", "--range", "last_1h"
        ).stdout
    )
    assert [d["provider"] for d in out["data"]] == ["beta"]
    out = json.loads(
        run(
            runner, "requests", "--db", "log.db", "--json", "--non-streaming", "--model", "gpt-4o"
        ).stdout
    )
    assert [d["provider"] for d in out["data"]] == ["alpha"]


def test_requests_table(runner: CliRunner, tmp_path: Path) -> None:
    recs = sample()
    fill(tmp_path / "log.db", recs)
    text = run(runner, "requests", "--db", "log.db").stdout
    assert "page 1 of 1" in text and "5 request(s)" in text
    assert recs[0].request_id in text  # full ids on a wide terminal
    assert "no provider serves [gpt-4o-mini]" in text  # markup-looking text is shown as is
    assert "1.250" in text and "old-model" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["requests", "--per-page", "0"], "--per-page: expected an integer from 1 to 100"),
        (["requests", "--page", "0"], "--page:"),
        (["requests", "--sort", "model"], "--sort: expected one of timestamp, cost_sats"),
        (["requests", "--order", "up"], "--order:"),
        (["stats", "--group-by", "month"], "--group-by: expected one of model, provider, policy"),
        (["stats", "--range", "last_2d"], "--range:"),
        (["stats", "--range", "last_1h", "--since", "2024-01-01"], "--range:"),
        (["stats", "--since", "yesterday"], "--since: expected an ISO 8601"),
    ],
)
def test_bad_options_exit_1_naming_the_option(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    fill(tmp_path / "log.db", sample())
    result = runner.invoke(app, [*args, "--db", "log.db"])
    assert result.exit_code == 1
    assert message in result.output.replace("\n", " ")


def test_missing_or_newer_database(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", "--db", "nope.db"])
    assert result.exit_code == 1
    assert "no request log at nope.db" in result.output
    assert not (tmp_path / "nope.db").exists()  # reading never creates it
    fill(tmp_path / "new.db", [])
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute(f"PRAGMA user_version = {schema.latest_version() + 1}")
    conn.close()
    result = runner.invoke(app, ["requests", "--db", "new.db"])
    assert result.exit_code == 1
    assert "newer than this arbstr" in result.output.replace("\n", " ")


def test_db_path_resolution(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--db, else $ARBSTR_DB, else [database].path of the config file, else ./arbstr.db."""
    fill(tmp_path / "arbstr.db", [record(model="from-default")])
    fill(tmp_path / "cfg.db", [record(model="from-config")])
    fill(tmp_path / "env.db", [record(model="from-env")])
    fill(tmp_path / "cli.db", [record(model="from-cli")])

    def model(*args: str) -> str:
        out = json.loads(run(runner, "requests", "--json", *args).stdout)
        return str(out["data"][0]["model"])

    assert model() == "from-default"
    # a config whose provider key variable is unset: only [database] is read here
    (tmp_path / "config.toml").write_text(
        '[database]\npath = "cfg.db"\n\n[[providers]]\nname = "a"\nurl = "http://x"\n'
        'api_key = "${UNSET_VARIABLE_FOR_TEST}"\n'
    )
    assert model() == "from-config"
    (tmp_path / "other.toml").write_text('[database]\npath = "cli.db"\n')
    assert model("-c", "other.toml") == "from-cli"
    monkeypatch.setenv("ARBSTR_CONFIG", "missing.toml")
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 1 and "missing.toml" in result.output
    monkeypatch.setenv("ARBSTR_DB", "env.db")
    assert model() == "from-env"
    assert model("--db", "cli.db") == "from-cli"


def test_stats_shows_provider_charged_vs_computed(runner: CliRunner, tmp_path: Path) -> None:
    now = datetime.now(UTC)

    def charged(provider: str, computed: int | None, reported: int | None, age: int) -> Any:
        return record(
            provider=provider,
            cost_msats=computed if reported is None else reported,
            computed_cost_msats=computed,
            provider_cost_msats=reported,
            timestamp=ts(now - timedelta(minutes=age)),
        )

    recs = [
        charged("alpha", 1250, 1250, 5),  # reports exactly what arbstr computed
        # beta charged 2.072 sats where its advertised prices imply 0.837 (its upstream's
        # own USD figure), on one of two requests
        charged("beta", 837, 2072, 4),
        charged("beta", 1000, None, 3),
        charged("gamma", 2000, 1500, 2),  # charged less
        charged("gamma", None, 400, 1),  # a cut stream: charged, nothing to compare
    ]
    db = tmp_path / "log.db"
    fill(db, recs)
    data = json.loads(
        run(runner, "stats", "--db", str(db), "--group-by", "provider", "--json").stdout
    )
    beta = data["groups"]["beta"]["costs"]
    assert beta["total_cost_sats"] == 3.072  # what the user paid
    assert beta["computed_cost_sats"] == 1.837
    assert beta["provider_reported_requests"] == 1
    assert beta["total_provider_cost_sats"] == 2.072
    assert beta["provider_cost_diff_sats"] == 1.235
    assert beta["charged_vs_computed"] == {
        "requests": 1,
        "charged_sats": 2.072,
        "computed_sats": 0.837,
        "diff_sats": 1.235,
    }
    gamma = data["groups"]["gamma"]["costs"]
    assert gamma["provider_reported_requests"] == 2 and gamma["total_provider_cost_sats"] == 1.9
    assert gamma["charged_vs_computed"]["requests"] == 1
    assert gamma["provider_cost_diff_sats"] == -0.5
    assert data["groups"]["alpha"]["costs"]["provider_cost_diff_sats"] == 0.0
    assert data["costs"]["total_cost_sats"] == 6.222
    assert data["costs"]["computed_cost_sats"] == 5.087

    result = runner.invoke(app, ["stats", "--db", str(db)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    start = next(i for i, ln in enumerate(lines) if "charged by the provider" in ln)
    table = [
        ln.split() for ln in lines[start:] if ln.split()[:1] in (["alpha"], ["beta"], ["gamma"])
    ]
    # the overcharging node first, marked; then the others, by how much more they charged
    assert table == [
        ["beta", "1", "2.072", "0.837", "+1.235", "+147.6%", "!"],
        ["alpha", "1", "1.250", "1.250", "+0.000", "+0.0%"],
        ["gamma", "1", "1.500", "2.000", "-0.500", "-25.0%"],
    ]


def test_stats_group_by_tier_and_tier_filter(runner: CliRunner, tmp_path: Path) -> None:
    fill(
        tmp_path / "log.db",
        [
            record(tier="economy", complexity=0.1),
            record(tier="economy"),
            record(tier="frontier", complexity=0.9),
            record(),
        ],
    )
    out = json.loads(run(runner, "stats", "--db", "log.db", "--json", "-g", "tier").stdout)
    totals = {k: v["counts"]["total"] for k, v in out["groups"].items()}
    assert totals == {"economy": 2, "frontier": 1, "(none)": 1}
    out = json.loads(
        run(runner, "requests", "--db", "log.db", "--json", "--tier", "frontier").stdout
    )
    assert [(r["tier"], r["complexity"]) for r in out["data"]] == [("frontier", 0.9)]
    table = run(runner, "stats", "--db", "log.db", "--group-by", "tier").stdout
    assert "economy" in table and "frontier" in table


def test_stats_shows_escalations(runner: CliRunner, tmp_path: Path) -> None:
    first = record(tier="economy", error_message="escalated: invalid_json")
    fill(
        tmp_path / "log.db",
        [
            first,
            record(tier="standard", escalated_from=first.request_id, escalation="invalid_json"),
            record(tier="economy"),
        ],
    )
    out = json.loads(run(runner, "stats", "--db", "log.db", "--json").stdout)
    assert out["counts"]["escalated"] == 1
    assert out["escalations"] == {"economy->standard": {"invalid_json": 1}}
    table = run(runner, "stats", "--db", "log.db").stdout
    assert "escalations" in table and "economy->standard" in table and "invalid_json" in table
    fill(tmp_path / "none.db", [record(tier="economy")])
    assert "escalations" not in run(runner, "stats", "--db", "none.db").stdout


def test_request_ids_are_shown_by_their_distinguishing_suffix() -> None:
    """Time-ordered ids of one minute share their first 8 characters: the ends tell them apart."""
    same_minute = [
        "01a231bc-0000-7000-8000-0000000a1b2c",
        "01a231bc-0001-7000-8000-0000000c3d4e",
        "01a231bc-0002-7000-8000-00000005f607",
    ]
    assert id_suffixes(same_minute) == ["000a1b2c", "000c3d4e", "0005f607"]
    # endings that agree for 8 characters: as many more as it takes, the same for all
    close = ["x-aaaa-12345678", "x-bbbb-12345678", "x-cccc-99999999"]
    assert id_suffixes(close) == ["a-12345678", "b-12345678", "c-99999999"]
    assert id_suffixes([]) == [] and id_suffixes(["short"]) == ["short"]


@given(st.lists(st.uuids().map(str), max_size=30))
def test_id_suffixes_stay_distinct(ids: list[str]) -> None:
    shown = id_suffixes(ids)
    assert len(set(shown)) == len(set(ids))
    assert all(full.endswith(part) for full, part in zip(ids, shown, strict=True))
