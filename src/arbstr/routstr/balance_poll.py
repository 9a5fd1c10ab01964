"""Balances polled in the background: each provider with an API key and a
``balance_interval_s`` above 0 has ``GET {url}/balance/info`` asked at start and then every
``balance_interval_s``, and the answer goes to the :class:`~arbstr.routing.funds.FundsBoard`
that routing reads. Never on the request path; errors are kept per provider and logged once
each (a node without ``/balance/info`` answers 404: its funds just stay unknown)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from arbstr.config import Provider
from arbstr.routing.funds import FundsBoard
from arbstr.routstr.balances import fetch_balance

if TYPE_CHECKING:  # the caller brings aiohttp along with its session
    import aiohttp

log = logging.getLogger("arbstr.routstr")
SessionFactory = Callable[[], Awaitable["aiohttp.ClientSession"]]


class BalancePoller:
    def __init__(self, providers: Sequence[Provider], board: FundsBoard) -> None:
        self.providers = tuple(p for p in providers if p.api_key and p.balance_interval_s > 0)
        self.board = board
        self._logged: dict[str, str] = {}  # the error last logged per provider
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    async def poll(self, session: aiohttp.ClientSession, p: Provider, timeout_s: float) -> None:
        """One ``/balance/info`` look-up into the board; never raises (but cancellation)."""
        try:
            b = await fetch_balance(session, p, timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error, status = f"{type(exc).__name__}: {exc}".rstrip(": "), None
        else:
            msats = b.balance_msats
            if msats is not None:
                self.board.record_balance(p.name, msats)
                if self._logged.pop(p.name, None) is not None:
                    log.info("balance of %s readable again", p.name)
                return
            error, status = b.error or "no balance", b.http_status
        self.board.record_error(p.name, error)
        if self._logged.get(p.name) == error:
            return
        self._logged[p.name] = error
        if status == 404:
            log.info("%s has no /balance/info (HTTP 404): its funds stay unknown", p.name)
        else:
            log.warning("balance of %s not read: %s", p.name, error)

    def start(self, session: SessionFactory, timeout_s: float) -> None:
        """Poll each provider now and then every ``balance_interval_s``, in the background
        (``session`` is awaited there: the first one may import aiohttp)."""
        for p in self.providers:
            self._tasks.append(asyncio.create_task(self._loop(session, p, timeout_s)))

    async def _loop(self, session: SessionFactory, p: Provider, timeout_s: float) -> None:
        s = await session()
        while True:
            await self.poll(s, p, timeout_s)
            await asyncio.sleep(p.balance_interval_s)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
