"""No row can break the request log: values are bounded before storage, a row SQLite refuses
costs only itself, and the stats cannot overflow on rows an older arbstr wrote."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.batching import Pacer
from arbstr.money import MAX_MSATS
from arbstr.records import MAX_TOKENS, RatioBook, RequestRecord
from arbstr.storage import (
    RequestsQuery,
    StatsQuery,
    Store,
    encode,
    read_requests,
    read_stats,
    writes,
)
from arbstr.storage import rows as bounds
from arbstr.storage.location import is_postgres
from arbstr.storage.postgres import writes as pg_writes
from arbstr.storage.schema import migrate
from logdata import expected_group, record
from logdb import sql_exec, sql_rows
from pg_server import PgServer

HUGE = 2**63  # one past SQLite's largest integer


def as_json(payload: Any) -> Any:
    return msgspec.json.decode(encode(payload))


@pytest.fixture
def path(log_location: str) -> str:
    """A request log of each backend."""
    return log_location


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "log.db")


_TEXT_COLUMNS = ("request_id", "timestamp", "model", "provider", "policy", "error_message")


def raw_insert(path: str, rows: list[dict[str, object]]) -> None:
    """Rows as another writer (an older arbstr, a hand edit) may have left them. PostgreSQL's
    typed columns cannot hold text in a number column: such a value is NULL there."""
    pg = is_postgres(path)
    for i, row in enumerate(rows):
        values = {
            "request_id": f"raw-{i}",
            "timestamp": record().timestamp,
            "model": "gpt-4o",
            "streaming": 0,
            "latency_ms": 5,
            "success": 0,
            **row,
        }
        if pg:
            values = {
                k: None if isinstance(v, str) and k not in _TEXT_COLUMNS else v
                for k, v in values.items()
            }
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        sql_exec(path, f"INSERT INTO requests ({cols}) VALUES ({marks})", tuple(values.values()))  # noqa: S608


def stored(path: str, sql: str) -> list[tuple[Any, ...]]:
    return sql_rows(path, sql)


# --- rows written by someone else --------------------------------------------------------


HOSTILE_ROWS: list[dict[str, object]] = [
    {"cost_sats": 1e27, "success": 1},  # two of these made every /v1/stats a 503
    {"cost_sats": 1e27, "possibly_billed_sats": 1e27, "computed_cost_sats": 1e27},
    {
        "cost_sats": float("inf"),
        "computed_cost_sats": -1.0,
        "provider_cost_sats": 1e30,
        "possibly_billed_sats": 1e27,
    },
    {"cost_sats": -5.0, "provider_cost_sats": -1.0},
    {"cost_sats": "a lot", "input_tokens": "many"},
    {"input_tokens": HUGE - 1, "output_tokens": HUGE - 1},
    {"input_tokens": HUGE - 1, "output_tokens": -3},
    {"latency_ms": HUGE - 1, "stream_duration_ms": -(2**63), "error_status": HUGE - 1},
    {"success": 2**62, "streaming": 2**62},
]


def test_stats_and_requests_survive_hostile_rows_and_stay_exact(path: str) -> None:
    innocent = [
        record(cost_msats=1001 + i, computed_cost_msats=990 + i, provider_cost_msats=1001 + i)
        for i in range(20)
    ]
    innocent[3].possibly_billed_msats = 777
    s = Store.open(path)
    for r in innocent:
        s.submit(r)
    s.close()
    raw_insert(path, HOSTILE_ROWS)

    got = as_json(read_stats(path, StatsQuery()))
    expected = expected_group(innocent)["costs"]
    assert got["costs"] == expected  # the out-of-bounds values count as unknown
    assert (got["costs"]["possibly_billed_sats"], got["costs"]["possibly_billed_requests"]) == (
        0.777,
        1,
    )
    assert got["costs"]["total_cost_sats"] == sum(1001 + i for i in range(20)) / 1000
    assert got["counts"]["total"] == 20 + len(HOSTILE_ROWS)
    assert got["counts"]["success"] == 21  # 20 innocent + the 1e27 one marked success = 1
    grouped = as_json(read_stats(path, StatsQuery(group_by="model")))
    assert grouped["groups"]["gpt-4o"]["costs"] == expected

    page = as_json(read_requests(path, RequestsQuery(per_page=100, sort="cost_sats")))
    assert page["total"] == 20 + len(HOSTILE_ROWS)
    raw = {d["request_id"]: d for d in page["data"] if d["request_id"].startswith("raw-")}
    unknown = {
        "sats": None,
        "computed_sats": None,
        "provider_sats": None,
        "source": None,
        "possibly_billed_sats": None,
    }
    assert raw["raw-1"]["cost"] == raw["raw-2"]["cost"] == raw["raw-3"]["cost"] == unknown
    assert raw["raw-4"]["tokens"] == {"input": None, "output": None}
    assert raw["raw-5"]["tokens"] == {"input": None, "output": None}
    assert raw["raw-7"]["timing"]["latency_ms"] == HUGE - 1


def test_stats_sum_beyond_int64_without_error(path: str) -> None:
    """Old rows at the largest bounded cost, summing past what a plain SQL SUM could hold
    when combined with the split: the answer is the exact integer sum."""
    Store.open(path).close()
    top = MAX_MSATS // 1000  # sats
    raw_insert(path, [{"cost_sats": float(top), "input_tokens": MAX_TOKENS}] * 50)
    got = read_stats(path, StatsQuery())
    assert got.costs.total_cost_sats == 50 * top
    assert got.costs.total_input_tokens == 50 * MAX_TOKENS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, MAX_MSATS), max_size=40))
def test_exact_sum_is_the_exact_integer_sum(values: list[int]) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    row = conn.execute(f"SELECT {bounds.exact_sum('v')} FROM t").fetchone()  # noqa: S608
    assert bounds.take_sum(iter(row)) == sum(values)


# --- records through Store.submit --------------------------------------------------------


def test_out_of_bounds_record_values_are_stored_bounded(path: str) -> None:
    """prompt_tokens = 2**63 used to raise OverflowError inside executemany: no ROLLBACK, the
    next batch failed "cannot start a transaction within a transaction", rows were lost."""
    s = Store.open(path)
    try:
        s.submit(record(request_id="before"))
        s.submit(
            record(
                request_id="wild",
                input_tokens=HUGE,
                output_tokens=-1,
                cost_msats=10**30,
                provider_cost_msats=-5,
                latency_ms=2**70,
                ttft_ms=-4,
                stream_duration_ms=HUGE,
                error_status=2**64,
                attempts=0,
                model="m\ud800del",  # a lone surrogate: not encodable as UTF-8
                error_message="bad \udcff byte",
            )
        )
        s.submit(record(request_id="after"))
        assert s.flush()
        s.submit(record(request_id="next batch"))
        assert s.flush()
        assert s.available and s.dropped == 0 and s.written == 4
    finally:
        s.close()
    (wild,) = stored(
        path,
        "SELECT input_tokens, output_tokens, cost_sats, provider_cost_sats, latency_ms,"
        " ttft_ms, stream_duration_ms, error_status, attempts, model, error_message"
        " FROM requests WHERE request_id = 'wild'",
    )
    top = bounds.INT64_MAX
    assert wild == (None, None, None, None, top, 0, top, top, 1, "m?del", "bad ? byte")
    assert stored(path, "SELECT COUNT(*) FROM requests") == [(4,)]


def test_unbounded_values_reaching_sqlite_cost_only_their_rows(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the bounds (as if a value slipped past them), the OverflowError from inside
    executemany is rolled back and the batch written row by row."""

    def unbounded(r: RequestRecord) -> tuple[object, ...]:
        row = list(bounds.record_row(r))
        row[6] = r.input_tokens
        return tuple(row)

    monkeypatch.setattr(writes, "record_row", unbounded)
    monkeypatch.setattr(pg_writes, "record_row", unbounded)
    s = Store.open(path)
    try:
        with caplog.at_level(logging.WARNING, logger="arbstr.storage"):
            for i in range(12):
                s.submit(record(request_id=f"r{i}", input_tokens=HUGE if i in (3, 9) else i))
            assert s.flush()
        assert s.available and (s.written, s.dropped) == (10, 2)
        assert "2 row(s) and 0 token ratio(s) could not be stored" in caplog.text
        # SQLite's driver refuses the value; PostgreSQL refuses it for the BIGINT column
        refused = "NumericValueOutOfRange" if is_postgres(path) else "OverflowError"
        assert "'r3'" in caplog.text and refused in caplog.text
        s.submit(record(request_id="next"))
        assert s.flush() and s.available and s.written == 11
    finally:
        s.close()
    ids = {r for (r,) in stored(path, "SELECT request_id FROM requests")}
    assert ids == {f"r{i}" for i in range(12) if i not in (3, 9)} | {"next"}


def test_a_database_fault_in_the_row_by_row_retry_drops_the_batch(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row faults are isolated; a database fault (here: locked during the retry) keeps the
    usual behaviour: the batch is dropped, the store unavailable, the next batch retried."""
    calls = {"n": 0}
    real = bounds.record_row

    def flaky(r: RequestRecord) -> tuple[object, ...]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OverflowError("first pass")
        if calls["n"] == 2:
            raise sqlite3.OperationalError("database is locked")
        return real(r)

    monkeypatch.setattr(writes, "record_row", flaky)
    path = sqlite_path
    s = Store.open(path)
    try:
        s.submit(record())
        assert s.flush()
        assert not s.available and s.dropped == 1
        assert s.error is not None and "locked" in s.error
        s.submit(record())
        assert s.flush()
        assert s.available and s.written == 1
    finally:
        s.close()


def test_writer_rolls_back_whatever_the_exception(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sqlite_path
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, path)

    def boom(r: RequestRecord) -> tuple[object, ...]:
        raise KeyboardInterrupt

    monkeypatch.setattr(writes, "record_row", boom)
    with pytest.raises(KeyboardInterrupt):
        writes.write_batch(conn, [record()], [], Pacer(1000, pause_s=0.0))
    assert not conn.in_transaction
    conn.close()


# --- the bounds themselves ---------------------------------------------------------------

_any_int = st.one_of(st.integers(), st.none())
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.tuples(_any_int, _any_int),
    costs=st.tuples(_any_int, _any_int, _any_int),
    durations=st.tuples(st.integers(), _any_int, _any_int, _any_int, st.integers()),
    texts=st.tuples(_any_text, _any_text, st.one_of(_any_text, st.none())),
)
def test_any_record_row_can_be_stored(
    tokens: tuple[int | None, int | None],
    costs: tuple[int | None, int | None, int | None],
    durations: tuple[int, int | None, int | None, int | None, int],
    texts: tuple[str, str, str | None],
) -> None:
    r = record(
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_msats=costs[0],
        provider_cost_msats=costs[1],
        possibly_billed_msats=costs[2],
        latency_ms=durations[0],
        ttft_ms=durations[1],
        stream_duration_ms=durations[2],
        error_status=durations[3],
        attempts=durations[4],
        model=texts[0],
        provider=texts[1],
        error_message=texts[2],
    )
    row = bounds.record_row(r)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, ":memory:")
    conn.execute(bounds.INSERT_REQUEST, row)  # never raises
    tin, tout = row[6], row[7]
    for given_value, kept in ((tokens[0], tin), (tokens[1], tout)):
        ok = given_value is not None and 0 <= given_value <= MAX_TOKENS
        assert kept == (given_value if ok else None)
    for cost, kept in ((costs[0], row[8]), (costs[1], row[9]), (costs[2], row[17])):
        if cost is not None and 0 <= cost <= MAX_MSATS:
            assert kept == cost / 1000
        else:
            assert kept is None
    stored_sats = conn.execute("SELECT cost_sats FROM requests").fetchone()[0]
    if costs[0] is not None and row[8] is not None:
        assert round(stored_sats * 1000) == costs[0]  # exact to the millisat
    conn.close()


def test_ratios_ignore_token_counts_out_of_bounds() -> None:
    book = RatioBook()
    book.observe("p", "m", 1, 10**400)  # used to raise OverflowError (int / int too large)
    book.observe("p", "m", HUGE, 5)
    assert book.get("p", "m") is None
    book.observe("p", "m", 10, 5)
    assert book.get("p", "m") == 0.5


@pytest.fixture(scope="module")
def pg_log(pg_server: PgServer) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    url = pg_server.create_database()
    Store.open(url).close()  # migrated
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@settings(max_examples=100, deadline=None)
@given(
    ints=st.tuples(_any_int, _any_int, _any_int, _any_int, st.integers()),
    texts=st.tuples(_any_text, _any_text, st.one_of(_any_text, st.none()), _any_text),
)
def test_any_record_row_can_be_stored_in_postgres(
    pg_log: psycopg.Connection[tuple[Any, ...]],
    ints: tuple[int | None, int | None, int | None, int | None, int],
    texts: tuple[str, str, str | None, str],
) -> None:
    """Bounded rows never make PostgreSQL refuse them either (NUL in text, BIGINT range)."""
    r = record(
        input_tokens=ints[0],
        cost_msats=ints[1],
        ttft_ms=ints[2],
        error_status=ints[3],
        latency_ms=ints[4],
        attempts=ints[4],
        model=texts[0],
        provider=texts[1],
        error_message=texts[2],
        tier=texts[3],
    )
    with pg_log.transaction(force_rollback=True):
        cur = pg_log.execute(pg_writes.INSERT_REQUEST, pg_writes.pg_row(r))  # never raises
        assert cur.rowcount == 1
