"""Request ids and timestamps for the request path."""

from __future__ import annotations

import random
import time

from arbstr.timefmt import IsoStamper

_getrandbits = random.Random().getrandbits  # seeded from os.urandom at import
_stamp = IsoStamper()  # the event loop's

_HIGH = ((1 << 48) - 1) << 80  # unix_ts_ms
_V7 = 0x7 << 76
_MID = ((1 << 12) - 1) << 62  # rand_a, moved to bits 64-75
_VARIANT = 0b10 << 62
_LOW = (1 << 62) - 1  # rand_b


def iso_now() -> str:
    """Now, UTC, ISO 8601 to the millisecond (``2025-01-02T03:04:05.678Z``)."""
    return _stamp(time.time())


def new_request_id() -> str:
    """A version-7 UUID (RFC 9562) as text: the first 48 bits are the Unix time in ms, so ids
    sort by time and the request log's unique index grows at its end. Ids correlate requests,
    they are not secrets: a fast non-cryptographic generator fills the 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | _getrandbits(74)
    # version 7 in bits 76-79, variant 0b10 in bits 62-63; the random bits slide around them
    value = (value & _HIGH) | _V7 | (value & _MID) << 2 | _VARIANT | (value & _LOW)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
