"""arbstr.batching: Poller (batches on a timer, blocking only when idle) and Pacer (a batch
in slices)."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.batching import Pacer, Poller


class CountingQueue(queue.SimpleQueue[int | object]):
    """Counts blocking gets: each is a wake-up on ``put`` for the writer thread."""

    blocking_gets = 0

    def get(self, block: bool = True, timeout: float | None = None) -> int | object:
        if block:
            self.blocking_gets += 1
        return super().get(block, timeout)


def test_items_arriving_during_the_interval_join_the_batch() -> None:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    q.put(0)

    def put_three() -> None:
        for i in range(1, 4):
            q.put(i)

    later = threading.Timer(0.02, put_three)
    later.start()
    assert Poller(q, 0.2).next_batch() == [0, 1, 2, 3]
    later.join()


def test_max_items_leaves_the_rest_queued() -> None:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(5):
        q.put(i)
    poller = Poller(q, 0.0, max_items=3)
    assert poller.next_batch() == [0, 1, 2]
    assert poller.next_batch() == [3, 4]


def test_the_stop_item_first_is_returned_without_waiting() -> None:
    stop = object()
    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    q.put(stop)
    t0 = time.monotonic()
    assert Poller(q, 5.0, stop=stop).next_batch() == [stop]
    assert time.monotonic() - t0 < 1.0


def test_while_items_flow_it_polls_and_a_put_wakes_no_one() -> None:
    """Blocked only at the start and after ``idle_polls`` empty polls: a steady trickle of
    items is taken on the poller's own timer, never by a wake-up on ``put``."""
    q = CountingQueue()
    waits: list[float] = []
    arrivals = iter([[1], [], [2, 3], [], [], [4]])

    def sleep(seconds: float) -> None:  # each poll interval, the items that arrived in it
        waits.append(seconds)
        for item in next(arrivals, []):
            q.put(item)

    poller = Poller(q, 0.02, idle_polls=3, sleep=sleep)
    q.put(0)
    assert poller.next_batch() == [0, 1]  # blocked for the first item, then one interval
    assert poller.next_batch() == [2, 3]  # one empty poll, then a batch
    assert poller.next_batch() == [4]  # two empty polls: still polling
    assert q.blocking_gets == 1
    q.put(5)
    assert poller.next_batch() == [5]
    assert q.blocking_gets == 1
    assert waits == [0.02] * 7


def test_after_idle_polls_empty_polls_it_blocks() -> None:
    q = CountingQueue()
    polls: list[float] = []
    poller = Poller(q, 0.001, idle_polls=3, sleep=polls.append)
    q.put(1)
    assert poller.next_batch() == [1]
    later = threading.Timer(0.1, q.put, args=(2,))
    later.start()
    assert poller.next_batch() == [2]  # 3 empty polls, then blocked until the put
    later.join()
    assert q.blocking_gets == 2
    assert len(polls) == 1 + 3 + 1


class FakeTime:
    """A clock that only moves when the pacer sleeps (or when a test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@given(n=st.integers(0, 200), slice_items=st.integers(1, 20))
def test_slices_cover_the_batch_in_order(n: int, slice_items: int) -> None:
    fake = FakeTime()
    pacer = Pacer(slice_items, pause_s=0.0, sleep=fake.sleep, clock=fake.clock)
    parts = list(pacer.slices(list(range(n))))
    assert [x for part in parts for x in part] == list(range(n))
    assert all(1 <= len(part) <= slice_items for part in parts) or n == 0
    assert len(fake.pauses) == max(0, len(parts) - 1)  # between slices, never before or after


def test_pauses_stop_once_the_batch_has_used_its_budget() -> None:
    fake = FakeTime()
    pacer = Pacer(4, pause_s=0.002, budget_s=0.005, sleep=fake.sleep, clock=fake.clock)
    parts = list(pacer.slices(list(range(40))))
    assert len(parts) == 10
    assert fake.pauses == [0.002, 0.002, 0.002]  # at 6 ms the budget is spent: no more pauses


def test_a_batch_that_fits_one_slice_never_pauses() -> None:
    fake = FakeTime()
    pacer = Pacer(8, sleep=fake.sleep, clock=fake.clock)
    assert list(pacer.slices([1, 2, 3])) == [[1, 2, 3]]
    assert list(pacer.slices([])) == []  # nothing to write: no slice, no empty executemany
    assert fake.pauses == []


def test_slice_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slice_items"):
        Pacer(0)


def test_a_pause_that_overruns_ends_the_pacing_of_the_batch() -> None:
    """Under full load a pause comes back late (the core and the GIL are busy): pausing
    further would only slow the writer down, so the rest of the batch goes at once."""
    fake = FakeTime()

    def slow_sleep(seconds: float) -> None:
        fake.sleep(seconds * 5)

    pacer = Pacer(4, pause_s=0.001, budget_s=1.0, sleep=slow_sleep, clock=fake.clock)
    assert len(list(pacer.slices(list(range(40))))) == 10
    assert fake.pauses == [0.005]
