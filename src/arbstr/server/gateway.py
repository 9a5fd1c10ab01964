"""The proxy's long-lived state: config, upstream client, health and funds boards, record
sink."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from arbstr.config import Config
from arbstr.errors import DatabaseUnavailable
from arbstr.logs import set_redactor
from arbstr.records import MemorySink, RatioBook, RecordSink
from arbstr.redact import Redactor
from arbstr.routing import FundsBoard, HealthBoard
from arbstr.routing.budgets import BudgetBook
from arbstr.routing.sticky import Conversations
from arbstr.routstr.balance_poll import BalancePoller
from arbstr.routstr.prices import PriceBook, discovery_timeout_s
from arbstr.storage import Store
from arbstr.storage.location import is_postgres, password
from arbstr.storage.spend import read_spent
from arbstr.upstream import UpstreamClient

if TYPE_CHECKING:
    from arbstr.storage.postgres.budgets import SharedBudgets

if TYPE_CHECKING:
    from arbstr.server.metrics import Metrics

log = logging.getLogger("arbstr.budgets")


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        sink: RecordSink | None = None,
        ratios: RatioBook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        s = config.server
        self.upstream = UpstreamClient(
            connect_timeout_s=s.connect_timeout_s,
            stream_idle_timeout_s=s.stream_idle_timeout_s,
            max_connections_per_provider=s.max_connections_per_provider,
            keepalive_expiry_s=s.keepalive_expiry_s,
        )
        self.health = HealthBoard(
            (p.name for p in config.providers),
            failure_threshold=config.retry.breaker_failures,
            cooldown_s=config.retry.breaker_cooldown_s,
            max_cooldown_s=config.retry.max_cooldown_s,
        )
        # what each provider's key can pay, from 402s, successes and polled balances
        self.funds = FundsBoard(p.name for p in config.providers)
        self.balances = BalancePoller(config.providers, self.funds)
        # conversation -> where it was last answered (follow-ups stick to it)
        self.sticky = Conversations(s.sticky_conversations, s.sticky_idle_s)
        self.sink: RecordSink = sink if sink is not None else MemorySink()
        # a Store sink is the request log: /health, /v1/stats, /v1/requests and the
        # persisted learned ratios use it; close() flushes it
        self.store: Store | None = sink if isinstance(sink, Store) else None
        if ratios is None:
            ratios = self.store.ratios if self.store is not None else RatioBook()
        self.ratios = ratios
        self.rng = rng or random.Random()
        # [[budgets]]: use in the current windows (from the request log at start) and holds
        self.budgets = BudgetBook(config.budgets)
        # on PostgreSQL, budgets are shared by every instance on the database
        self.shared_budgets: SharedBudgets | None = None
        if self.budgets.enabled and self.store is not None and is_postgres(self.store.path):
            from arbstr.storage.postgres.budgets import SharedBudgets

            self.shared_budgets = SharedBudgets(self.store.path, self.budgets)
        # providers as routing sees them: with discovered prices, refreshed in the background
        self.prices = PriceBook(config.providers, rng=self.rng)
        self.auth_token: bytes | None = s.auth_token.encode() if s.auth_token is not None else None
        # the secrets no answer, row or log line may carry, even when an upstream echoes one
        db_password = password(self.store.path) if self.store is not None else None
        self.redactor = Redactor(
            [*(p.api_key for p in config.providers), s.auth_token, db_password]
        )
        # GET /metrics: None (and nothing counted, nothing imported) unless enabled
        self.metrics: Metrics | None = None
        if config.metrics.enabled:
            from arbstr.server.metrics import Metrics

            self.metrics = Metrics(config, self.prices, self.health)

    @property
    def discovery_timeout_s(self) -> float:
        return discovery_timeout_s(self.config.server.connect_timeout_s)

    async def start(self) -> None:
        set_redactor(self.redactor)
        await self.load_budgets()
        if self.prices.enabled:
            # first prices before serving (bounded; a failure only leaves that provider out)
            session = await self.upstream.get_session()
            await self.prices.refresh_all(session, self.discovery_timeout_s)
            self.prices.start(session, self.discovery_timeout_s)
        if self.balances.enabled:  # in the background: serving does not wait for balances
            self.balances.start(self.upstream.get_session, self.discovery_timeout_s)

    async def load_budgets(self) -> None:
        """Each budget's use so far in its window, from the request log (before serving);
        shared budgets then take what the database holds."""
        book = self.budgets
        if not book.enabled or self.store is None:
            return
        try:
            spent = await asyncio.to_thread(read_spent, self.store.path, book.earliest_start())
        except DatabaseUnavailable as exc:
            log.warning("budgets start from zero: %s", exc)
        else:
            book.load(spent)
        if self.shared_budgets is not None:
            await self.shared_budgets.start()

    async def close(self) -> None:
        try:
            await self.balances.stop()
            await self.prices.stop()
            await self.upstream.close()
            if self.shared_budgets is not None:
                await self.shared_budgets.close()
        finally:
            if self.store is not None:
                await asyncio.to_thread(self.store.close)  # writes every queued row
