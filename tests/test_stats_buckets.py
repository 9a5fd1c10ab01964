"""/v1/stats grouped by hour, day and week: the pure bucket helpers, and the SQL bucketing
against a hand-computed fixture (a day boundary, a week boundary, empty buckets)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from arbstr.cli import app
from arbstr.cli.bars import BAR, bar_length
from arbstr.errors import InvalidParameter
from arbstr.storage import Store, buckets, encode, parse_stats_params, read_stats
from arbstr.storage.dialect import POSTGRES, to_pyformat
from logdata import record
from pg_server import PgServer

# 2026-11-27 is a Friday (ISO week 48); 2026-11-30 a Monday (week 49).
SINCE, UNTIL = "2026-11-27T22:30:00Z", "2026-12-01T01:10:00Z"
FIXTURE = [  # (timestamp, cost msats or None for a failure, latency ms)
    ("2026-11-27T22:29:59.999Z", 99999, 1),  # before since: in no bucket
    ("2026-11-28T22:45:00.000Z", 1001, 100),
    ("2026-11-29T23:59:59.999Z", 2002, 300),  # last ms of Sunday, week 48
    ("2026-11-30T00:00:00.000Z", 333, 50),  # first ms of Monday, week 49
    ("2026-11-30T00:30:00.000Z", None, 9),
    ("2026-12-01T01:05:00.000Z", 7, 10),
    ("2026-12-01T01:10:00.001Z", 88888, 1),  # after until
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def log(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        path = str(tmp_path_factory.mktemp("buckets") / "log.db")
    else:
        path = request.getfixturevalue("pg_server").create_database()
    s = Store.open(path)
    for stamp, cost, latency in FIXTURE:
        s.submit(
            record(
                timestamp=stamp,
                cost_msats=cost,
                latency_ms=latency,
                success=cost is not None,
                error_status=None if cost is not None else 502,
            )
        )
    s.close()
    return path


def stats(path: str, unit: str) -> Any:
    q = parse_stats_params({"since": SINCE, "until": UNTIL, "group_by": unit})
    return msgspec.json.decode(encode(read_stats(path, q)))


def summary(groups: dict[str, Any]) -> dict[str, tuple[int, int, float]]:
    """Non-empty buckets: (requests, successes, sats)."""
    return {
        k: (g["counts"]["total"], g["counts"]["success"], g["costs"]["total_cost_sats"])
        for k, g in groups.items()
        if g["counts"]["total"]
    }


def test_days_include_the_empty_one_and_split_at_midnight(log: str) -> None:
    groups = stats(log, "day")["groups"]
    assert list(groups) == ["2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"]
    assert summary(groups) == {
        "2026-11-28": (1, 1, 1.001),
        "2026-11-29": (1, 1, 2.002),
        "2026-11-30": (2, 1, 0.333),
        "2026-12-01": (1, 1, 0.007),
    }


def test_weeks_start_on_monday(log: str) -> None:
    got = stats(log, "week")
    assert list(got["groups"]) == ["2026-W48", "2026-W49"]
    assert summary(got["groups"]) == {"2026-W48": (2, 2, 3.003), "2026-W49": (3, 2, 0.34)}
    w48 = got["groups"]["2026-W48"]["performance"]
    assert (w48["p50_latency_ms"], w48["p95_latency_ms"], w48["avg_latency_ms"]) == (100, 300, 200)
    # the buckets add up to the ungrouped totals, exactly
    assert got["costs"]["total_cost_sats"] == 3.343
    assert sum(g["counts"]["total"] for g in got["groups"].values()) == got["counts"]["total"]


def test_hours_are_every_hour_of_the_range_and_empty_ones_read_as_an_empty_range(
    log: str,
) -> None:
    groups = stats(log, "hour")["groups"]
    keys = list(groups)
    assert len(keys) == 76  # 22:00 on the 27th to 01:00 on 1 December
    assert keys[0] == "2026-11-27T22:00:00Z" and keys[-1] == "2026-12-01T01:00:00Z"
    assert keys == sorted(keys)
    assert summary(groups) == {
        "2026-11-28T22:00:00Z": (1, 1, 1.001),
        "2026-11-29T23:00:00Z": (1, 1, 2.002),
        "2026-11-30T00:00:00Z": (2, 1, 0.333),
        "2026-12-01T01:00:00Z": (1, 1, 0.007),
    }
    nothing = msgspec.json.decode(
        encode(read_stats(log, parse_stats_params({"since": "2000-01-01", "until": "2000-01-02"})))
    )
    empty = {k: nothing[k] for k in ("counts", "costs", "performance")}
    assert groups[keys[0]] == empty
    assert empty["performance"] == {
        "avg_latency_ms": None,
        "p50_latency_ms": None,
        "p95_latency_ms": None,
    }


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"group_by": "hour", "since": "2026-01-01", "until": "2026-02-11T16:00:00Z"}, "1,001"),
        ({"group_by": "day", "since": "2020-01-01", "until": "2026-01-01"}, "at most 1,000"),
        ({"group_by": "week", "until": "2026-01-01"}, "need since"),
    ],
)
def test_too_many_buckets_or_no_start_is_an_error_naming_group_by(
    params: dict[str, str], needle: str
) -> None:
    with pytest.raises(InvalidParameter) as exc:
        parse_stats_params(params)
    assert exc.value.param == "group_by"
    assert needle in exc.value.reason


def test_exactly_the_limit_is_fine() -> None:
    q = parse_stats_params(
        {"group_by": "hour", "since": "2026-01-01", "until": "2026-02-11T15:59:59.999Z"}
    )
    assert q.group_by == "hour"


# --- pure helpers -------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)
)
units = st.sampled_from(buckets.UNITS)


@settings(max_examples=300)
@given(units, moments, st.integers(0, 3000 * 3600))
def test_keys_cover_the_range_in_order_one_per_bucket(
    unit: str, since: datetime, seconds: int
) -> None:
    until = since + timedelta(seconds=seconds)
    keys = buckets.keys(unit, since, until) if buckets.count(unit, since, until) <= 5000 else None
    if keys is None:
        return
    assert len(keys) == buckets.count(unit, since, until)
    assert keys[0] == buckets.key_of(unit, since) and keys[-1] == buckets.key_of(unit, until)
    assert keys == sorted(set(keys))  # strictly increasing as text: time order
    middle = since + (until - since) / 3
    assert buckets.key_of(unit, middle) in keys


@settings(max_examples=300)
@given(units, moments)
def test_sql_puts_a_stored_timestamp_in_the_bucket_python_names(unit: str, dt: datetime) -> None:
    stamp = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    with sqlite3.connect(":memory:") as conn:
        (got,) = conn.execute(f"SELECT {buckets.sql_key(unit, '?')}", [stamp]).fetchone()
    if unit == "week":
        got = buckets.week_key(datetime.fromisoformat(got).date())
    assert got == buckets.key_of(unit, dt.replace(microsecond=dt.microsecond // 1000 * 1000))


@pytest.fixture(scope="module")
def pg_conn(pg_server: PgServer) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        yield conn


def _pg_bucket_sql(unit: str) -> str:
    return to_pyformat(f"SELECT {POSTGRES.bucket(unit, 't')} FROM (SELECT ?::text AS t) AS x")  # noqa: S608


@settings(max_examples=200, deadline=None)  # a database round trip each
@given(units, moments)
def test_postgres_sql_puts_a_stored_timestamp_in_the_bucket_python_names(
    pg_conn: psycopg.Connection[tuple[Any, ...]], unit: str, dt: datetime
) -> None:
    stamp = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    row = pg_conn.execute(_pg_bucket_sql(unit), [stamp]).fetchone()
    assert row is not None
    got = row[0]
    if unit == "week":
        got = buckets.week_key(datetime.fromisoformat(got).date())
    assert got == buckets.key_of(unit, dt.replace(microsecond=dt.microsecond // 1000 * 1000))


def test_postgres_gives_no_bucket_to_a_timestamp_of_another_shape(
    pg_conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    for unit in buckets.UNITS:
        assert pg_conn.execute(_pg_bucket_sql(unit), ["yesterday"]).fetchone() == (None,)


@given(
    st.lists(st.text(min_size=1, max_size=3), unique=True),
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers()),
)
def test_fill_keeps_every_key_in_order_and_only_those(
    keys: list[str], found: dict[str, int]
) -> None:
    filled = buckets.fill(keys, found, lambda: -1)
    assert list(filled) == keys
    assert all(filled[k] == found.get(k, -1) for k in keys)


def test_week_keys_use_the_iso_week_year() -> None:
    assert buckets.key_of("week", datetime(2027, 1, 1, tzinfo=UTC)) == "2026-W53"
    assert buckets.key_of("week", datetime(2024, 12, 30, tzinfo=UTC)) == "2025-W01"


# --- arbstr stats --by --------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("ARBSTR_DB", "ARBSTR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # the chart still keeps to 80 columns
    return CliRunner()


def chart_lines(runner: CliRunner, log: str, unit: str) -> list[str]:
    args = ["stats", "--db", log, "--since", SINCE, "--until", UNTIL, "--by", unit]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_cli_draws_sats_per_day_within_80_columns(runner: CliRunner, log: str) -> None:
    lines = chart_lines(runner, log, "day")
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == (
        "arbstr sats per day (UTC), 2026-11-27T22:30:00.000Z to 2026-12-01T01:10:00.000Z"
    )
    assert lines[-1] == "total 3.343 sats, 5 requests, 5 days; longest bar 2.002 sats"
    body = lines[1:-1]
    assert [line.split()[0] for line in body] == [
        "2026-11-27",
        "2026-11-28",
        "2026-11-29",
        "2026-11-30",
        "2026-12-01",
    ]
    assert [line.split()[-1] for line in body] == ["0.000", "1.001", "2.002", "0.333", "0.007"]
    bars = [line.count(BAR) for line in body]
    room = 80 - len("2026-11-27") - len("0.000") - 2  # the longest bar fills the room
    assert bars == [0, round(1.001 / 2.002 * room), room, round(0.333 / 2.002 * room), 0]
    assert all(len(line) == 80 for line in body)  # numbers right-aligned at column 80


def test_cli_hours_fit_too_and_json_is_the_route_document(runner: CliRunner, log: str) -> None:
    lines = chart_lines(runner, log, "hour")
    assert len(lines) == 76 + 2 and all(len(line) <= 80 for line in lines)
    assert max(line.count(BAR) for line in lines) == 80 - 20 - 5 - 2
    args = ["stats", "--db", log, "--since", SINCE, "--until", UNTIL, "--by", "week", "--json"]
    got = json.loads(runner.invoke(app, args).stdout)
    assert got == stats(log, "week")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "month"], "--by: expected one of hour, day, week"),
        (["--by", "day", "--group-by", "model"], "--by: give either"),
        (["--by", "hour", "--since", "2020-01-01"], "--by:"),
    ],
)
def test_cli_bad_by(runner: CliRunner, log: str, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["stats", "--db", log, *args])
    assert result.exit_code == 1
    assert message in result.output


def test_bar_length_is_proportional() -> None:
    assert bar_length(0.0, 0.0, 50) == 0
    assert bar_length(5.0, 10.0, 50) == 25
    assert bar_length(10.0, 10.0, 50) == 50


def test_group_by_day_table_keeps_time_order(runner: CliRunner, log: str) -> None:
    args = ["stats", "--db", log, "--since", SINCE, "--until", UNTIL, "--group-by", "day"]
    out = runner.invoke(app, args).stdout
    days = [line.split()[0] for line in out.splitlines() if line.strip().startswith("2026-")]
    assert days == sorted(days) and len(days) == 5
