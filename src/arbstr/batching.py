"""Draining a queue in batches, for the background threads (log writer, SQLite writer)."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")
_NEVER = object()


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
