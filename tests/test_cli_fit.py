"""Fitting the CLI's tables to the terminal: the pure choice of columns and widths
(arbstr.cli.fit), and the Rich tables built on it never wider than the terminal."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from arbstr.cli.fit import Need, Overhead, cut, fit, hidden_note
from arbstr.cli.follow import Tail
from arbstr.cli.tables import REQUEST_COLS, requests_table
from arbstr.storage.payloads import Cost, RequestRow, RequestsPage, RowError, Timing, Tokens


def test_least_important_columns_go_first() -> None:
    needs = [Need(0, 10, 10), Need(3, 10, 10), Need(1, 10, 10), Need(2, 10, 10)]
    assert fit(needs, 100) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert fit(needs, 47) == {0: 10, 2: 10, 3: 10}  # 3 columns: 30 + 2 * 3 of padding
    assert fit(needs, 35) == {0: 10, 2: 10}
    assert fit(needs, 5) == {0: 10}  # the most important stays, even when it cannot fit


def test_free_text_is_cut_before_a_column_is_dropped_and_widens_with_room() -> None:
    needs = [Need(0, 8, 8), Need(1, 50, 6)]  # an id, then an error message
    assert fit(needs, 30) == {0: 8, 1: 18}
    assert fit(needs, 18) == {0: 8, 1: 6}
    assert fit(needs, 17) == {0: 8}
    assert fit(needs, 200) == {0: 8, 1: 50}
    assert fit([], 80) == {}


def test_overhead_and_helpers() -> None:
    boxed = Overhead(per_column=3, fixed=1)
    assert boxed.of(0) == 0 and boxed.of(3) == 10
    assert fit([Need(0, 5, 5), Need(1, 5, 5)], 17, boxed) == {0: 5, 1: 5}
    assert fit([Need(0, 5, 5), Need(1, 5, 5)], 16, boxed) == {0: 5}
    assert cut("abcdef", 6) == "abcdef" and cut("abcdef", 4) == "abc…" and cut("ab", 0) == ""
    assert hidden_note([], 80) == ""
    assert hidden_note(["policy"], 80) == "1 column hidden (policy); --wide shows all"
    assert hidden_note(["a", "b"], 20) == "2 hidden; --wide sho"


needs_st = st.lists(
    st.tuples(st.integers(0, 20), st.integers(1, 60), st.integers(1, 60)).map(
        lambda t: Need(t[0], max(t[1], t[2]), min(t[1], t[2]))
    ),
    min_size=1,
    max_size=12,
)


@given(needs_st, st.integers(0, 250), st.integers(0, 3), st.integers(0, 2))
def test_fit_properties(needs: list[Need], width: int, per_column: int, fixed: int) -> None:
    overhead = Overhead(per_column, fixed)
    got = fit(needs, width, overhead)
    by_rank = sorted(range(len(needs)), key=lambda i: (needs[i].rank, i))
    kept = sorted(got, key=lambda i: (needs[i].rank, i))
    assert kept == by_rank[: len(kept)]  # what goes is always the least important
    assert by_rank[0] in got
    for i, w in got.items():
        assert needs[i].least <= w <= needs[i].natural
    total = sum(got.values()) + overhead.of(len(got))
    if needs[by_rank[0]].least + overhead.of(1) <= width:
        assert total <= width
        if len(kept) < len(needs):  # nothing more would have fitted
            nxt = needs[by_rank[len(kept)]]
            least = sum(needs[i].least for i in kept) + nxt.least
            assert least + overhead.of(len(kept) + 1) > width
    else:
        assert list(got) == [by_rank[0]]


text_st = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=70)


def _row(n: int, model: str, provider: str, message: str) -> RequestRow:
    return RequestRow(
        id=n,
        request_id=f"0190f00d-0000-7000-8000-{n:012x}",
        timestamp="2024-05-01T12:00:00.000Z",
        model=model,
        provider=provider or None,
        policy="default",
        api="chat",
        tier=None,
        complexity=None,
        escalated_from=None,
        escalation=None,
        streaming=bool(n % 2),
        success=not message,
        tokens=Tokens(123_456, 7),
        cost=Cost(12_345.678, None, None, "computed", None),
        timing=Timing(99_999, None),
        error=RowError(502, message) if message else None,
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(text_st, text_st, text_st), min_size=1, max_size=5),
    st.integers(40, 200),
)
def test_requests_table_never_exceeds_the_width(
    cells: list[tuple[str, str, str]], width: int
) -> None:
    page = RequestsPage([_row(i, *c) for i, c in enumerate(cells)], 1, 20, len(cells), 1)
    fitted = requests_table(page, short_ids=True, width=width)
    out = Console(width=width, file=io.StringIO(), color_system=None)
    out.print(fitted.table)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert max(len(line) for line in lines) <= width
    rule = next(i for i, line in enumerate(lines) if "─" in line)
    assert all(lines[rule + 1 + i].strip() for i in range(len(cells)))  # one line a row:
    assert not lines[rule + 1 + len(cells)].strip()  # no cell wrapped
    shown = [c.header for c in REQUEST_COLS if c.header not in fitted.hidden]
    assert "request" in shown and "time (UTC)" in shown


@given(st.integers(20, 200), text_st)
def test_follow_lines_fit(width: int, message: str) -> None:
    tail = Tail(width)
    row = _row(1, "gpt-4o-mini" * 3, "alpha", message)
    assert len(tail.header()) <= width
    assert len(tail.row(row, new=True)) <= width
    assert tail.shown == 1 and tail.total_msats == 12_345_678
