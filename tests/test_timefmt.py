"""IsoStamper (arbstr.timefmt): the cached seconds never change the text."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from arbstr.timefmt import IsoStamper


def reference(t: float) -> str:
    d = datetime.fromtimestamp(int(t), UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{int((t - int(t)) * 1000):03d}Z"


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=20))
def test_matches_a_fresh_format_whatever_came_before(times: list[float]) -> None:
    stamp = IsoStamper()
    for t in sorted(times) + times:  # same second again, later seconds, and back
        assert stamp(t) == reference(t)


def test_example() -> None:
    assert IsoStamper()(1735787045.625) == "2025-01-02T03:04:05.625Z"
