"""Batching for the background threads (log writer, SQLite writer).

:class:`Poller` takes the queued items in batches; :class:`Pacer` then hands a batch out in
short slices with a pause between them. Both keep the writers out of the event loop's way
on the core they share with it (measurements: bench/README.md).

Why poll: a writer blocked on an empty queue is woken by the event loop's next ``put``, at
the end of a request, just when its client sends the next one, so the write lands on that
request. While traffic flows a poller wakes on its own timer instead and a ``put`` wakes no
one; after a quiet second it blocks, so an idle proxy does not wake at all.

Why pace: while a writer runs Python it holds the GIL, and a socket that wakes the event loop
meanwhile waits for the writer's time slice. Short slices let the event loop in after at most
one; the pauses stop once a batch has taken ``budget_s`` or a pause overran (the core is
busy), so under full load the writer still keeps up.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
_NEVER = object()
_OVERRUN = 4  # a pause that took this many times its length ends the pacing of a batch


class _Queue(Protocol[T_co]):
    def get(self) -> T_co: ...

    def get_nowait(self) -> T_co: ...


class Poller(Generic[T]):
    """Batches from ``q`` for one writer thread: every ``interval_s`` whatever is queued (up
    to ``max_items``); after ``idle_polls`` empty polls in a row it blocks until an item
    arrives and then waits ``interval_s`` for the rest of the burst. ``stop`` found first
    while blocked is returned at once."""

    def __init__(
        self,
        q: _Queue[T],
        interval_s: float,
        max_items: int | None = None,
        stop: object = _NEVER,
        *,
        idle_polls: int = 50,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._q = q
        self._interval_s = interval_s
        self._max_items = max_items
        self._stop = stop
        self._idle_polls = idle_polls
        self._empty = idle_polls  # start blocked: nothing has arrived yet
        self._sleep = sleep

    def next_batch(self) -> list[T]:
        while True:
            batch: list[T] = []
            if self._empty >= self._idle_polls:
                batch.append(self._q.get())  # idle: block; the next put wakes this thread
                if batch[0] is self._stop:
                    return batch
            self._sleep(self._interval_s)
            while self._max_items is None or len(batch) < self._max_items:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._empty = 0
                return batch
            self._empty += 1


class Pacer:
    """Hands out a batch in slices of ``slice_items``, sleeping ``pause_s`` between slices
    until the batch has taken ``budget_s`` or a pause took 4 times its length (the core is
    busy); after that, the rest goes without pauses."""

    def __init__(
        self,
        slice_items: int = 8,
        pause_s: float = 0.0005,
        budget_s: float = 0.01,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slice_items < 1:
            raise ValueError("slice_items must be at least 1")
        self.slice_items = slice_items
        self.pause_s = pause_s
        self.budget_s = budget_s
        self._sleep = sleep
        self._clock = clock

    def slices(self, items: Sequence[T]) -> Iterator[Sequence[T]]:
        """The slices of ``items`` in order; none for an empty batch."""
        n = self.slice_items
        if len(items) <= n:
            if items:
                yield items
            return
        clock = self._clock
        start = clock()
        pacing = True
        for i in range(0, len(items), n):
            if i and pacing:
                before = clock()
                self._sleep(self.pause_s)
                after = clock()
                # a pause that overran means the core (or the GIL) is busy: under full load
                # pauses only cost switches, and the writer must keep up
                pacing = after - start < self.budget_s and after - before <= _OVERRUN * self.pause_s
            yield items[i : i + n]
