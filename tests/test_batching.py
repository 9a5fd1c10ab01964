"""next_batch (arbstr.batching): one wake-up takes a burst."""

from __future__ import annotations

import queue
import threading
import time

from arbstr.batching import next_batch


def test_items_arriving_during_the_linger_join_the_batch() -> None:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    q.put(0)

    def put_three() -> None:
        for i in range(1, 4):
            q.put(i)

    later = threading.Timer(0.02, put_three)
    later.start()
    assert next_batch(q, 0.2) == [0, 1, 2, 3]
    later.join()


def test_max_items_leaves_the_rest_queued() -> None:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(5):
        q.put(i)
    assert next_batch(q, 0.0, max_items=3) == [0, 1, 2]
    assert next_batch(q, 0.0, max_items=3) == [3, 4]


def test_the_stop_item_first_is_returned_without_lingering() -> None:
    stop = object()
    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    q.put(stop)
    t0 = time.monotonic()
    assert next_batch(q, 5.0, stop=stop) == [stop]
    assert time.monotonic() - t0 < 1.0
