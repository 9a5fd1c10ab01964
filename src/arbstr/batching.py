"""Batching for the background threads (log writer, SQLite writer).

:func:`next_batch` takes a burst of queued items in one wake-up; :class:`Pacer` then hands the
batch out in short slices with a pause between them.

Why pace: the writer threads share the proxy's core with the event loop. When a socket wakes
the event loop while a writer runs, the kernel lets the writer finish its time slice first
(and while the writer runs Python it holds the GIL). A 40-row batch written in one go kept
the core for ~1 to 1.5 ms, so a request whose answer arrived meanwhile waited for the whole
batch: that was most of the proxy's p99 at concurrency 1 (1.4 to 2.2 ms, against 0.5 ms with
the writers off; bench/README.md). Slices of 8 items with 0.5 ms pauses let the event loop in
after at most one slice. The pauses stop once a batch has taken ``budget_s`` or a pause
overran, so under full load, when pauses only add thread switches and waits for the core,
the writer still keeps up.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
_NEVER = object()
_OVERRUN = 4  # a pause that took this many times its length ends the pacing of a batch


def next_batch(
    q: queue.SimpleQueue[T],
    linger_s: float,
    max_items: int | None = None,
    stop: object = _NEVER,
) -> list[T]:
    """Block for one item; then, unless it is ``stop``, wait ``linger_s`` and take whatever
    else is queued (up to ``max_items`` in all). Under load one wake-up of the thread handles a
    burst, instead of waking (on the proxy's core) for every item."""
    batch = [q.get()]
    if batch[0] is not stop:
        time.sleep(linger_s)
    while max_items is None or len(batch) < max_items:
        try:
            batch.append(q.get_nowait())
        except queue.Empty:
            break
    return batch


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
        n = self.slice_items
        if len(items) <= n:
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
