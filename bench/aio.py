"""Running a coroutine on uvloop when it is installed (as ``arbstr serve`` does), else on
asyncio: for the bench's clients, mock upstream and forwarders."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-posix
        return asyncio.run(coro)
    return uvloop.run(coro)
