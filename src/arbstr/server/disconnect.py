"""Noticing a client that left, so its upstream request is cancelled at once."""

from __future__ import annotations

import asyncio
from typing import Any

from arbstr.server.http import Receive

WATCH_AFTER_S = 0.05  # a request older than this is watched for client disconnects


class DisconnectWatch:
    """Cancels the request's task when the client disconnects (uvicorn's ``send`` silently
    does nothing after the client left, so without this the upstream would keep going).

    Watching means a task blocked in ``receive()``, which costs a noticeable share of a fast
    request; so it starts only once the request has taken ``after_s``. A client that left
    before then is noticed at that moment (uvicorn remembers the disconnect)."""

    __slots__ = ("_fut", "_receive", "_task", "_timer", "gone")

    def __init__(
        self, receive: Receive, task: asyncio.Task[Any], after_s: float = WATCH_AFTER_S
    ) -> None:
        self._receive = receive
        self._task = task
        self.gone = False
        self._fut: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            after_s, self._arm
        )

    def _arm(self) -> None:
        self._timer = None
        self._fut = asyncio.ensure_future(self._receive())
        self._fut.add_done_callback(self._on_message)

    def _on_message(self, fut: asyncio.Future[Any]) -> None:
        if self._fut is None or fut.cancelled() or fut.exception() is not None:
            return
        if fut.result().get("type") == "http.disconnect":
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.cancel()
