"""The request log's storage: migrations, the writer thread, failure modes, read queries."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arbstr.batching import Pacer
from arbstr.errors import DatabaseUnavailable, InvalidParameter
from arbstr.records import RequestRecord
from arbstr.storage import Store, encode, schema
from arbstr.storage.params import (
    Filters,
    RequestsQuery,
    StatsQuery,
    format_ts,
    parse_requests_params,
    parse_stats_params,
    parse_time,
)
from arbstr.storage.payloads import Payload
from arbstr.storage.queries import (
    query_requests,
    query_stats,
    read_requests,
    read_stats,
)
from arbstr.storage.sqlite_reads import open_readonly
from arbstr.storage.store import StoredRatios
from logdata import assert_stats_match, expected_stats, make_records, record, sort_key, where
from logdb import sql_rows

REQUESTS_COLUMNS = [
    # name, type, notnull, pk
    ("id", "INTEGER", 0, 1),
    ("request_id", "TEXT", 1, 0),
    ("timestamp", "TEXT", 1, 0),
    ("model", "TEXT", 1, 0),
    ("provider", "TEXT", 0, 0),
    ("policy", "TEXT", 0, 0),
    ("streaming", "INTEGER", 1, 0),
    ("input_tokens", "INTEGER", 0, 0),
    ("output_tokens", "INTEGER", 0, 0),
    ("cost_sats", "REAL", 0, 0),
    ("provider_cost_sats", "REAL", 0, 0),
    ("latency_ms", "INTEGER", 1, 0),
    ("ttft_ms", "INTEGER", 0, 0),
    ("stream_duration_ms", "INTEGER", 0, 0),
    ("success", "INTEGER", 1, 0),
    ("error_status", "INTEGER", 0, 0),
    ("error_message", "TEXT", 0, 0),
    ("attempts", "INTEGER", 1, 0),
    ("possibly_billed_sats", "REAL", 0, 0),
    ("computed_cost_sats", "REAL", 0, 0),
    ("api", "TEXT", 1, 0),
    ("tier", "TEXT", 0, 0),
    ("complexity", "REAL", 0, 0),
    ("escalated_from", "TEXT", 0, 0),
    ("escalation", "TEXT", 0, 0),
]


def db(tmp_path: Path, name: str = "log.db") -> str:
    return str(tmp_path / name)


def rows(path: str, sql: str = "SELECT COUNT(*) FROM requests") -> list[tuple[object, ...]]:
    """``sql`` on a SQLite path or a PostgreSQL URL."""
    return sql_rows(path, sql)


def as_json(payload: Payload) -> Any:
    """A typed answer as its JSON document (what the server sends)."""
    return msgspec.json.decode(encode(payload))


@pytest.fixture
def store(log_location: str) -> Iterator[Store]:
    s = Store.open(log_location)
    yield s
    s.close()


# --- migrations ---------------------------------------------------------------------------


def test_packaged_migrations_are_numbered_from_one() -> None:
    migs = schema.migrations()
    assert [m.version for m in migs] == list(range(1, len(migs) + 1))
    assert migs[0].name == "0001_init.sql"
    assert schema.latest_version() == len(migs) >= 1


def test_schema_has_the_request_log_columns_indexes_and_wal(tmp_path: Path) -> None:
    path = db(tmp_path)
    Store.open(path).close()
    conn = sqlite3.connect(path)
    info = conn.execute("PRAGMA table_info(requests)").fetchall()
    assert [(c[1], c[2], c[3], c[5]) for c in info] == REQUESTS_COLUMNS
    assert [c[4] for c in info if c[1] == "attempts"] == ["1"]
    indexed = {
        conn.execute(f"PRAGMA index_info({name!r})").fetchone()[2]
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='requests'"
        )
    }
    assert {"timestamp", "model", "provider", "request_id", "api", "tier", "escalation"} <= indexed
    ratios = conn.execute("PRAGMA table_info(token_ratios)").fetchall()
    assert [(c[1], c[2], c[5]) for c in ratios] == [
        ("policy", "TEXT", 1),
        ("model", "TEXT", 2),
        ("avg_ratio", "REAL", 0),
        ("sample_count", "INTEGER", 0),
    ]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.latest_version()
    conn.close()


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = db(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema.migrate(conn, path) == schema.latest_version()
    before = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    assert schema.migrate(conn, path) == schema.latest_version()
    conn.close()
    for _ in range(2):
        s = Store.open(path)
        assert s.available
        s.submit(record())
        s.close()
    assert rows(path) == [(2,)]
    after = rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    assert after == before


def test_a_failing_migration_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = db(tmp_path)
    good = schema.migrations()
    bad = schema.Migration(
        len(good) + 1, "9999_bad.sql", "CREATE TABLE extra (x);\nINSERT INTO nope VALUES (1);\n"
    )
    monkeypatch.setattr(schema, "migrations", lambda: (*good, bad))
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="nope"):
        schema.migrate(conn, path)
    assert not conn.in_transaction
    assert schema.user_version(conn) == len(good)  # the good ones stay applied
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables and "requests" in tables
    conn.close()


def v1_database(path: str) -> None:
    """A request log as the first arbstr left it: schema 1, three requests (one whose
    provider charged 2.072 sats where arbstr computed 0.837, one without a reported charge),
    one ratio."""
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in schema.migrations()[0].statements():
        conn.execute(stmt)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO requests (request_id, timestamp, model, provider, policy, streaming,"
        " input_tokens, output_tokens, cost_sats, provider_cost_sats, latency_ms, success,"
        " attempts) VALUES ('old-1', ?, 'gpt-4o', 'alpha', 'default', 0, 10, 20, 1.5, 1.5,"
        " 42, 1, 1), ('old-2', ?, 'gpt-4o', 'beta', 'default', 0, 10, 20, 0.837, 2.072,"
        " 42, 1, 1), ('old-3', ?, 'gpt-4o', 'beta', 'default', 0, 10, 20, 0.25, NULL,"
        " 42, 1, 1)",
        (record().timestamp,) * 3,
    )
    conn.execute("INSERT INTO token_ratios VALUES ('default', 'gpt-4o', 0.5, 4)")
    conn.close()


def test_a_v1_database_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = db(tmp_path)
    v1_database(path)
    # read-only readers (arbstr stats) take a log not yet upgraded as it is, and leave it so
    before = as_json(read_stats(path, StatsQuery()))
    # cost_sats is what was charged (the provider's figure where it gave one)
    old_costs = {
        "total_cost_sats": 3.822,
        "computed_cost_sats": 2.587,
        "provider_reported_requests": 2,
        "total_provider_cost_sats": 3.572,
        "provider_cost_diff_sats": 1.235,
        "charged_vs_computed": {
            "requests": 2,
            "charged_sats": 3.572,
            "computed_sats": 2.337,
            "diff_sats": 1.235,
        },
    }
    assert before["costs"] | old_costs == before["costs"]
    assert before["costs"]["possibly_billed_requests"] == 0
    old = as_json(read_requests(path, RequestsQuery()))["data"]
    old_rows: list[dict[str, Any]] = [
        {
            "sats": 1.5,
            "computed_sats": 1.5,
            "provider_sats": 1.5,
            "source": "provider",
            "possibly_billed_sats": None,
        },
        {
            "sats": 2.072,
            "computed_sats": 0.837,
            "provider_sats": 2.072,
            "source": "provider",
            "possibly_billed_sats": None,
        },
        {
            "sats": 0.25,
            "computed_sats": 0.25,
            "provider_sats": None,
            "source": "computed",
            "possibly_billed_sats": None,
        },
    ]
    assert sorted((d["cost"] for d in old), key=lambda c: c["sats"]) == sorted(
        old_rows, key=lambda c: c["sats"]
    )
    assert rows(path, "PRAGMA user_version") == [(1,)]

    s = Store.open(path)
    assert s.available
    assert s.ratios.get("default", "gpt-4o") == 0.5
    s.submit(record(request_id="new-1", success=False, cost_msats=None, possibly_billed_msats=2500))
    s.close()
    assert rows(path, "PRAGMA user_version") == [(schema.latest_version(),)]
    conn = sqlite3.connect(path)
    info = conn.execute("PRAGMA table_info(requests)").fetchall()
    conn.close()
    assert [(c[1], c[2], c[3], c[5]) for c in info] == REQUESTS_COLUMNS
    assert rows(
        path,
        "SELECT request_id, cost_sats, computed_cost_sats, possibly_billed_sats FROM requests"
        " ORDER BY id",
    ) == [
        ("old-1", 1.5, 1.5, None),
        ("old-2", 2.072, 0.837, None),
        ("old-3", 0.25, 0.25, None),
        ("new-1", None, None, 2.5),
    ]
    after = as_json(read_stats(path, StatsQuery()))["costs"]
    assert after | old_costs == after  # the upgrade reads as the read-only view did
    assert after["total_cost_sats"] == 3.822  # never mixed with what was possibly billed
    assert (after["possibly_billed_sats"], after["possibly_billed_requests"]) == (2.5, 1)
    assert rows(path, "SELECT * FROM token_ratios") == [("default", "gpt-4o", 0.5, 4)]


def test_newer_database_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = db(tmp_path)
    newer = schema.latest_version() + 1
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(schema.SchemaTooNew, match=f"schema version {newer} is newer"):
        schema.migrate(conn, path)
    conn.close()

    with caplog.at_level(logging.ERROR, logger="arbstr.storage"):
        s = Store.open(path)
    assert not s.available
    assert s.error is not None and "newer than this arbstr" in s.error
    assert "newer than this arbstr" in caplog.text
    s.submit(record())
    s.close()
    assert s.dropped == 1
    assert rows(path, "PRAGMA user_version") == [(newer,)]  # left untouched
    with pytest.raises(DatabaseUnavailable, match="newer than this arbstr"):
        open_readonly(path)


# --- the writer ---------------------------------------------------------------------------


def test_records_are_written_with_every_column(store: Store) -> None:
    r1 = record(
        streaming=True,
        cost_msats=1200,
        computed_cost_msats=1234,
        provider_cost_msats=1200,
        ttft_ms=12,
        stream_duration_ms=300,
        attempts=3,
        tier="standard",
        complexity=0.5,
        escalated_from="first-id",
        escalation="truncated",
    )
    r2 = record(
        success=False,
        provider=None,
        policy=None,
        input_tokens=None,
        output_tokens=None,
        cost_msats=None,
        possibly_billed_msats=1234,
        error_status=502,
        error_message="x" * 5000,
    )
    store.submit(r1)
    store.submit(r2)
    assert store.flush()
    got = rows(store.path, "SELECT * FROM requests ORDER BY id")
    assert got[0] == (
        1,
        r1.request_id,
        r1.timestamp,
        "gpt-4o",
        "alpha",
        "default",
        1,
        10,
        20,
        1.2,
        1.2,
        42,
        12,
        300,
        1,
        None,
        None,
        3,
        None,
        1.234,
        "chat",
        "standard",
        0.5,
        "first-id",
        "truncated",
    )
    assert got[1][1] == r2.request_id
    assert got[1][21:] == (None, None, None, None)
    assert got[1][4:6] == (None, None)
    assert got[1][9] is None and got[1][14] == 0 and got[1][15] == 502
    assert isinstance(got[1][16], str) and 100 < len(got[1][16]) <= 2000  # capped
    assert got[1][18] == 1.234
    assert store.written == 2 and store.dropped == 0


def test_submit_is_cheap_and_batches_are_written(log_location: str) -> None:
    s = Store.open(log_location, queue_size=1_000_000)
    recs = [record() for _ in range(20_000)]
    t0 = time.perf_counter()
    for r in recs:
        s.submit(r)
    per_submit = (time.perf_counter() - t0) / len(recs)
    s.close()
    assert rows(s.path) == [(20_000,)]
    assert s.dropped == 0
    assert per_submit < 20e-6  # typically ~0.3 µs: a SimpleQueue put, nothing else


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    path = db(tmp_path)
    s = Store.open(path, queue_size=50, busy_timeout_s=5.0)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the writer now waits on its first batch
    try:
        s.submit(record())
        time.sleep(0.1)
        t0 = time.perf_counter()
        for _ in range(500):
            s.submit(record())
        assert time.perf_counter() - t0 < 0.5
        assert s.dropped >= 500 - 50
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert s.flush()
    s.close()
    (written,) = rows(path)[0]
    assert isinstance(written, int)
    assert written + s.dropped == 501
    assert written == s.written >= 50


def test_close_writes_every_queued_row(tmp_path: Path) -> None:
    path = db(tmp_path)
    s = Store.open(path, queue_size=100_000)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    for _ in range(5000):
        s.submit(record())
    closer = threading.Thread(target=s.close)
    closer.start()  # close() begins while the writer is stuck with 5000 rows queued
    time.sleep(0.2)
    assert closer.is_alive()
    locker.execute("ROLLBACK")
    locker.close()
    closer.join(10)
    assert not closer.is_alive()
    assert rows(path) == [(5000,)]
    assert s.dropped == 0
    s.submit(record())  # after close: dropped and counted, no error
    assert s.dropped == 1


@pytest.mark.parametrize("kind", ["missing_dir", "directory", "not_a_database"])
def test_unopenable_database_never_raises(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "missing_dir":
        path = str(tmp_path / "no" / "such" / "dir" / "log.db")
    elif kind == "directory":
        path = str(tmp_path)
    else:
        path = db(tmp_path)
        Path(path).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="arbstr.storage"):
        s = Store.open(path)
    assert not s.available
    assert "request log unavailable" in caplog.text
    for _ in range(3):
        s.submit(record())
    assert s.flush()
    assert s.dropped == 3
    s.ratios.observe("default", "gpt-4o", 100, 50)  # still learns in memory
    assert s.ratios.get("default", "gpt-4o") == 0.5
    s.close()
    assert not (tmp_path / "no").exists()


def test_locked_database_drops_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = db(tmp_path)
    s = Store.open(path, busy_timeout_s=0.05)
    assert s.available
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.WARNING, logger="arbstr.storage"):
        s.submit(record())
        assert s.flush()
        assert not s.available
        assert s.error is not None and "locked" in s.error
        assert s.dropped == 1
        locker.execute("ROLLBACK")
        s.submit(record())
        assert s.flush()
    assert s.available
    assert "writable again" in caplog.text
    s.close()
    locker.close()
    assert rows(path) == [(1,)]


def test_unopened_database_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "later" / "log.db"
    s = Store.open(str(path), reopen_interval_s=0.0)
    assert not s.available
    s.submit(record())
    assert s.flush()
    path.parent.mkdir()
    s.submit(record())
    assert s.flush()
    assert s.available
    s.close()
    assert rows(str(path)) == [(1,)]
    assert s.dropped == 1


# --- learned ratios -----------------------------------------------------------------------


def test_ratios_are_persisted_and_loaded(log_location: str) -> None:
    path = log_location
    s = Store.open(path)
    s.ratios.observe("default", "gpt-4o", 100, 50)
    s.ratios.observe("default", "gpt-4o", 100, 150)
    s.ratios.observe("code", "claude", 200, 20)
    s.ratios.observe("code", "claude", 0, 20)  # ignored: no input tokens
    s.close()
    assert sorted(rows(path, "SELECT * FROM token_ratios")) == [
        ("code", "claude", 0.1, 1),
        ("default", "gpt-4o", 1.0, 2),
    ]
    s2 = Store.open(path)
    assert s2.ratios.get("default", "gpt-4o") == 1.0
    assert s2.ratios.get("code", "claude") == 0.1
    s2.ratios.observe("default", "gpt-4o", 100, 400)  # the running mean continues: (2*1+4)/3
    s2.close()
    assert rows(
        path, "SELECT avg_ratio, sample_count FROM token_ratios WHERE policy='default'"
    ) == [(2.0, 3)]


# --- parameters ---------------------------------------------------------------------------

NOW = datetime(2024, 5, 10, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T12:00:00z", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T14:00:00 02:00", "2024-05-01T12:00:00.000Z"),  # '+' decoded to ' '
        ("2024-05-01T07:30:00-04:30", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00.000Z"),  # no offset: UTC
        ("2024-05-01 12:00:00.5", "2024-05-01T12:00:00.500Z"),
        ("2024-05-01", "2024-05-01T00:00:00.000Z"),
        ("2024-05-02T01:00:00+13:00", "2024-05-01T12:00:00.000Z"),
    ],
)
def test_time_parameters_are_normalised_to_utc(text: str, expected: str) -> None:
    assert format_ts(parse_time("since", text)) == expected


def test_range_and_bounds() -> None:
    q = parse_stats_params({}, now=NOW)
    assert q.filters.since == "2024-05-03T12:00:00.124Z"  # inclusive, rounded up to the ms
    assert q.filters.until == "2024-05-10T12:00:00.123Z"
    assert parse_stats_params({"range": "last_1h"}, now=NOW).filters.since == (
        "2024-05-10T11:00:00.124Z"
    )
    q = parse_stats_params({"since": "2024-05-01T00:00:00.0001Z"}, now=NOW)
    assert (q.filters.since, q.filters.until) == (
        "2024-05-01T00:00:00.001Z",
        "2024-05-10T12:00:00.123Z",
    )
    q = parse_stats_params({"until": "2024-05-01T00:00:00.0009Z"}, now=NOW)
    assert (q.filters.since, q.filters.until) == (None, "2024-05-01T00:00:00.000Z")
    r = parse_requests_params({}, now=NOW)  # /v1/requests: all time by default
    assert (r.filters.since, r.filters.until) == (None, None)
    assert (r.page, r.per_page, r.sort, r.order) == (1, 20, "timestamp", "desc")
    r = parse_requests_params({"range": "last_24h", "model": "", "success": "FALSE"}, now=NOW)
    assert r.filters.since == "2024-05-09T12:00:00.124Z"
    assert r.filters.model is None and r.filters.success is False


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"range": "last_2d"}, "range"),
        ({"range": "last_1h", "since": "2024-01-01"}, "range"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"since": "2024-05-02", "until": "2024-05-01"}, "since"),
        ({"group_by": "month"}, "group_by"),
        ({"success": "true"}, "success"),  # not a /v1/stats parameter
        ({"nope": "1"}, "nope"),
    ],
)
def test_bad_stats_parameters_name_the_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_stats_params(params, now=NOW)
    assert info.value.param == param
    assert f"'{param}'" in info.value.message
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "x"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"per_page": "0"}, "per_page"),
        ({"per_page": "101"}, "per_page"),
        ({"per_page": " 5"}, "per_page"),
        ({"sort": "model"}, "sort"),
        ({"sort": "timestamp; DROP TABLE requests"}, "sort"),
        ({"order": "up"}, "order"),
        ({"success": "maybe"}, "success"),
        ({"streaming": "2"}, "streaming"),
        ({"group_by": "model"}, "group_by"),  # not a /v1/requests parameter
    ],
)
def test_bad_requests_parameters_name_the_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_requests_params(params, now=NOW)
    assert info.value.param == param


# --- queries against a reference ---------------------------------------------------------


Dataset = tuple[str, list[RequestRecord], datetime]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dataset(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Dataset:
    now = datetime.now(UTC)
    recs = make_records(1500, now, seed=11)
    if request.param == "sqlite":
        path = str(tmp_path_factory.mktemp("q") / "log.db")
    else:
        path = request.getfixturevalue("pg_server").create_database()
    s = Store.open(path)
    for r in recs:
        s.submit(r)
    s.close()
    return path, recs, now


FILTERS = [
    {},
    {"range": "last_1h"},
    {"range": "last_24h"},
    {"range": "last_30d"},
    {"model": "gpt-4o"},
    {"provider": "beta", "range": "last_30d"},
    {"policy": "code_generation", "model": "claude-3.5-sonnet"},
    {"model": "no-such-model"},
]


@pytest.mark.parametrize("params", FILTERS)
@pytest.mark.parametrize("group_by", [None, "model", "provider", "policy"])
def test_stats_match_a_python_reference(
    dataset: Dataset,
    params: dict[str, str],
    group_by: str | None,
) -> None:
    path, recs, now = dataset
    p = dict(params)
    if group_by:
        p["group_by"] = group_by
    got = as_json(read_stats(path, parse_stats_params(p, now=now)))
    f = parse_stats_params(p, now=now).filters
    pred = where(f.since, f.until, f.model, f.provider, f.policy)
    assert_stats_match(got, expected_stats(recs, pred, group_by))
    assert (got["since"], got["until"]) == (f.since, f.until)


def test_stats_since_until_with_offsets(dataset: Dataset) -> None:
    path, recs, now = dataset
    a = (now - timedelta(days=3, hours=5)).replace(microsecond=250_000)
    b = (now - timedelta(hours=7)).replace(microsecond=0)
    utc = {"since": format_ts(a), "until": format_ts(b)}
    local = {
        "since": a.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        "until": b.astimezone(timezone(timedelta(hours=-8))).isoformat(),
    }
    assert local["since"].endswith("+05:30") and local["until"].endswith("-08:00")
    got_utc = as_json(read_stats(path, parse_stats_params(utc, now=now)))
    got_local = as_json(read_stats(path, parse_stats_params(local, now=now)))
    assert got_utc["since"] == got_local["since"] and got_utc["until"] == got_local["until"]
    assert got_utc == got_local
    expected = expected_stats(recs, where(got_utc["since"], got_utc["until"]))
    assert expected["counts"]["total"] > 10
    assert_stats_match(got_utc, expected)


def test_costs_are_exact_to_the_millisat(log_location: str) -> None:
    """0.1 + 0.2 style float drift must not show: 10,000 x 0.001 sats is 10 sats exactly."""
    path = log_location
    s = Store.open(path)
    for i in range(10_000):
        s.submit(record(cost_msats=1 if i % 2 else 100, latency_ms=i))
    s.close()
    got = as_json(read_stats(path, StatsQuery()))
    assert got["costs"]["total_cost_sats"] == 505.0
    assert got["counts"]["total"] == 10_000
    assert got["performance"]["p50_latency_ms"] == 4999  # rank ceil(0.5 * 10000) = 5000
    assert got["performance"]["p95_latency_ms"] == 9499


def test_percentiles_are_nearest_rank(log_location: str) -> None:
    path = log_location
    s = Store.open(path)
    for latency in (50, 10, 40, 20, 30):
        s.submit(record(latency_ms=latency))
    s.submit(record(latency_ms=1, success=False, error_status=400))  # errors don't count
    s.close()
    perf = as_json(read_stats(path, StatsQuery()))["performance"]
    assert perf == {"avg_latency_ms": 30.0, "p50_latency_ms": 30, "p95_latency_ms": 50}
    empty = as_json(read_stats(path, StatsQuery(Filters(model="nope"))))
    assert empty["performance"] == {
        "avg_latency_ms": None,
        "p50_latency_ms": None,
        "p95_latency_ms": None,
    }
    assert empty["counts"] == {"total": 0, "success": 0, "error": 0, "streaming": 0, "escalated": 0}


@pytest.mark.parametrize("sort", ["timestamp", "cost_sats", "latency_ms"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_requests_pages_cover_the_filtered_rows_in_order(
    dataset: Dataset,
    sort: str,
    order: str,
) -> None:
    path, recs, _ = dataset
    params = {"model": "gpt-4o", "success": "true", "sort": sort, "order": order}
    pred = where(model="gpt-4o", success=True)
    expected = sorted(
        ((i + 1, r) for i, r in enumerate(recs) if pred(r)),
        key=sort_key(sort),
        reverse=order == "desc",
    )
    seen: list[str] = []
    page = 1
    while True:
        got = as_json(
            read_requests(
                path, parse_requests_params({**params, "page": str(page), "per_page": "100"})
            )
        )
        assert got["total"] == len(expected)
        assert got["total_pages"] == -(-len(expected) // 100)
        if not got["data"]:
            break
        seen += [d["request_id"] for d in got["data"]]
        page += 1
    assert page == got["total_pages"] + 1
    assert seen == [r.request_id for _, r in expected]


def test_requests_row_shape(log_location: str) -> None:
    path = log_location
    s = Store.open(path)
    ok = record(
        streaming=True,
        cost_msats=1499,
        computed_cost_msats=1500,
        provider_cost_msats=1499,
        stream_duration_ms=900,
        latency_ms=1000,
    )
    bad = record(
        success=False,
        error_status=504,
        error_message="boom",
        cost_msats=None,
        possibly_billed_msats=250,
    )
    s.submit(ok)
    s.submit(bad)
    s.close()
    got = as_json(read_requests(path, RequestsQuery(sort="timestamp", order="asc")))
    assert got["page"] == 1 and got["per_page"] == 20 and got["total"] == 2
    assert got["total_pages"] == 1
    first, second = got["data"]
    assert first == {
        "id": 1,
        "request_id": ok.request_id,
        "timestamp": ok.timestamp,
        "model": "gpt-4o",
        "provider": "alpha",
        "policy": "default",
        "api": "chat",
        "tier": None,
        "complexity": None,
        "escalated_from": None,
        "escalation": None,
        "streaming": True,
        "success": True,
        "tokens": {"input": 10, "output": 20},
        "cost": {
            "sats": 1.499,
            "computed_sats": 1.5,
            "provider_sats": 1.499,
            "source": "provider",
            "possibly_billed_sats": None,
        },
        "timing": {"latency_ms": 1000, "stream_duration_ms": 900},
        "error": None,
    }
    assert second["error"] == {"status": 504, "message": "boom"}
    assert second["cost"] == {
        "sats": None,
        "computed_sats": None,
        "provider_sats": None,
        "source": None,
        "possibly_billed_sats": 0.25,
    }
    assert second["success"] is False and second["streaming"] is False
    assert as_json(read_requests(path, RequestsQuery(page=3)))["data"] == []


def test_the_queries_take_a_bare_sqlite_connection(tmp_path: Path) -> None:
    path = db(tmp_path)
    s = Store.open(path)
    s.submit(record())
    s.submit(record())
    s.close()
    conn = open_readonly(path)
    assert as_json(query_requests(conn, RequestsQuery(page=3)))["data"] == []
    assert as_json(query_stats(conn, StatsQuery()))["counts"]["total"] == 2
    conn.close()


def test_reading_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="no request log"):
        read_stats(str(tmp_path / "missing.db"), StatsQuery())
    other = str(tmp_path / "other.db")
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DatabaseUnavailable, match="not an arbstr request log"):
        read_requests(other, RequestsQuery())
    assert not Path(tmp_path / "missing.db").exists()


def test_changed_ratios_are_taken_once_with_their_latest_value() -> None:
    book = StoredRatios()
    book.load("default", "gpt-4o", 2.0, 10)  # loaded from the database: not a change
    assert book.take_changes() == []
    book.observe("default", "gpt-4o", 10, 30)
    book.observe("default", "gpt-4o", 10, 30)
    book.observe("code", "gpt-4o", 0, 5)  # no input tokens: nothing learned, nothing saved
    rows = book.take_changes()
    avg = book.get("default", "gpt-4o")
    assert rows == [("default", "gpt-4o", avg, 12)]
    assert avg is not None and 2.0 < avg < 3.0
    assert book.take_changes() == []


def test_a_batch_is_written_in_paced_slices_in_one_transaction(tmp_path: Path) -> None:
    """The writer inserts a batch a few rows at a time with pauses in between (so the event
    loop on the same core is never stuck behind a whole batch), yet commits it once: a reader
    never sees half a batch."""
    path = db(tmp_path)
    seen_during_pauses: list[object] = []

    def pause(seconds: float) -> None:
        seen_during_pauses.append(rows(path)[0][0])

    pacer = Pacer(4, pause_s=0.0, sleep=pause, clock=lambda: 0.0)  # pauses never overrun
    s = Store.open(path, pacer=pacer)
    try:
        for i in range(20):
            s.submit(record(request_id=f"paced-{i}"))
        assert s.flush()
    finally:
        s.close()
    assert rows(path) == [(20,)]
    assert seen_during_pauses == [0, 0, 0, 0]  # 5 slices of 4 rows, nothing visible before COMMIT
    assert s.dropped == 0
