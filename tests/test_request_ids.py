"""Request ids (arbstr.server.ids.new_request_id): UUIDv7, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from arbstr.server.ids import new_request_id as _request_id


def test_ids_are_version_7_uuids_carrying_the_time_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    rid = _request_id()
    after = time.time_ns() // 1_000_000
    u = uuid.UUID(rid)
    assert str(u) == rid  # canonical lower-case text
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    earlier = [_request_id() for _ in range(1000)]
    time.sleep(0.002)
    later = [_request_id() for _ in range(1000)]
    assert max(earlier) < min(later)
    assert len(set(earlier + later)) == 2000
    # the 74 random bits really vary (not a counter, not constant)
    assert len({uuid.UUID(r).int & ((1 << 62) - 1) for r in earlier}) == 1000
