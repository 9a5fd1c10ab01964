"""ISO 8601 UTC timestamps to the millisecond, cheaply."""

from __future__ import annotations

import time


class IsoStamper:
    """``t`` (Unix seconds) as ``2025-01-02T03:04:05.678Z``. The part up to the seconds is
    formatted once per second (``strftime`` costs several µs), so keep one stamper per thread:
    the cache is not shared safely between threads."""

    __slots__ = ("_sec", "_text")

    def __init__(self) -> None:
        self._sec = -1
        self._text = ""

    def __call__(self, t: float) -> str:
        sec = int(t)
        if sec != self._sec:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._sec = sec
        return f"{self._text}.{int((t - sec) * 1000.0):03d}Z"
