"""The proxy's long-lived state: config, upstream client, health board, record sink."""

from __future__ import annotations

import random

from arbstr.config import Config
from arbstr.health import HealthBoard
from arbstr.records import MemorySink, RatioBook, RecordSink
from arbstr.upstream import UpstreamClient


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
            request_timeout_s=s.request_timeout_s,
            stream_idle_timeout_s=s.stream_idle_timeout_s,
        )
        self.health = HealthBoard(
            (p.name for p in config.providers),
            failure_threshold=config.retry.breaker_failures,
            cooldown_s=config.retry.breaker_cooldown_s,
        )
        self.sink: RecordSink = sink if sink is not None else MemorySink()
        self.ratios = ratios if ratios is not None else RatioBook()
        self.rng = rng or random.Random()
        self.auth_token: bytes | None = s.auth_token.encode() if s.auth_token is not None else None

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()
