"""The money property, through the real proxy, its SQLite log and a scripted upstream: for any
mix of requests (streaming or not, a reported charge in the body, the header or
``usage.cost_sats`` or none, with a usage or without), each request's told cost
(``x-arbstr-cost-sats``, or the stream trailer's ``cost_sats``) is the provider's reported
charge where one was reported (body ``cost.total_msats`` over the header over ``cost_sats``),
else arbstr's computed cost; and ``/v1/stats`` totals them exactly."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbstr.money import Rates
from arbstr.routing.pricing import cost_msats
from arbstr.storage import Store
from fake_upstream import DONE, FakeUpstream, Reply, Stream, chunk, completion_events, sse
from fake_upstream import completion_json as completion_body
from harness import ProxyThread, make_config, provider

T = TypeVar("T")
CHAT = "/v1/chat/completions"
TEXT = "hello there!"  # 3 input tokens estimated
RATES_CONFIG = {"input_rate": 7, "output_rate": 23, "base_fee": 0.5}
RATES = Rates.of(7, 23, 0.5)
HEAD = completion_events("Hi there", include_usage=False, done=False)
HEAD_CHUNKS = 4  # role, two words, finish: the output tokens a stream without usage counts


@dataclass(frozen=True)
class Ask:
    stream: bool
    tokens: tuple[int, int] | None  # the usage's prompt / completion tokens
    body_msats: int | None  # usage.cost.total_msats
    header_msats: int | None  # X-Routstr-Cost-Msats
    cost_sats: float | None  # usage.cost_sats
    pieces: int  # a stream's usage chunk and [DONE] arrive in this many writes

    def usage(self) -> dict[str, Any] | None:
        u: dict[str, Any] = {}
        if self.tokens is not None:
            u["prompt_tokens"], u["completion_tokens"] = self.tokens
        if self.body_msats is not None:
            u["cost"] = {"total_msats": self.body_msats}
        if self.cost_sats is not None:
            u["cost_sats"] = self.cost_sats
        return u or None

    def action(self) -> Reply | Stream:
        headers = (
            {} if self.header_msats is None else {"X-Routstr-Cost-Msats": str(self.header_msats)}
        )
        usage = self.usage()
        if not self.stream:
            body = completion_body()
            del body["usage"]
            if usage is not None:
                body["usage"] = usage
            return Reply(json=body, headers=headers)
        tail = (b"" if usage is None else sse(chunk(usage=usage))) + DONE
        step = -(-len(tail) // self.pieces)
        parts = [tail[i : i + step] for i in range(0, len(tail), step)]
        return Stream(events=[*HEAD, *parts], headers=headers, chunk_delay_s=0.002)

    def expected(self) -> int:
        if self.body_msats is not None:
            return self.body_msats
        if self.header_msats is not None:
            return self.header_msats
        if self.cost_sats is not None:
            return int((Decimal(repr(self.cost_sats)) * 1000).to_integral_value(ROUND_FLOOR))
        tin, tout = self.tokens or (3, HEAD_CHUNKS if self.stream else 0)
        return cost_msats(RATES, tin, tout)


msats = st.none() | st.integers(0, 10**9)
asks = st.builds(
    Ask,
    stream=st.booleans(),
    tokens=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    body_msats=msats,
    header_msats=msats,
    cost_sats=st.none() | st.floats(0, 10**6, allow_nan=False, allow_infinity=False),
    pieces=st.integers(1, 4),
)


class Env:
    """A fake upstream on its own event loop thread, and the proxy with a request log."""

    def __init__(self, db: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.upstream = FakeUpstream()
        self.run(self.upstream.start())
        self.store = Store.open(str(db))
        data = {"providers": [provider("alpha", self.upstream.url, models=[], **RATES_CONFIG)]}
        self.proxy = ProxyThread(make_config(data), sink=self.store).start()
        self.models = (f"model-{n}" for n in itertools.count())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.proxy.stop()
        self.store.close()
        self.run(self.upstream.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("money") / "log.db")
    yield e
    e.close()


async def told_msats(session: aiohttp.ClientSession, url: str, model: str, ask: Ask) -> int:
    body = {"model": model, "stream": ask.stream, "messages": [{"role": "user", "content": TEXT}]}
    async with session.post(url + CHAT, json=body) as r:
        assert r.status == 200
        if not ask.stream:
            assert r.headers["x-arbstr-cost-source"] == (
                "provider" if _reported(ask) else "computed"
            )
            return int(Decimal(r.headers["x-arbstr-cost-sats"]) * 1000)
        raw = await r.read()
    events = [e[6:] for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    infos: list[dict[str, Any]] = [json.loads(e)["arbstr"] for e in events if b'"arbstr"' in e]
    (info,) = infos
    assert info["cost_source"] == ("provider" if _reported(ask) else "computed")
    assert info["computed_cost_sats"] * 1000 == pytest.approx(_computed(ask), abs=0.01)
    cost: float = info["cost_sats"]
    return round(cost * 1000)


def _reported(ask: Ask) -> bool:
    return (ask.body_msats, ask.header_msats, ask.cost_sats) != (None, None, None)


def _computed(ask: Ask) -> int:
    tin, tout = ask.tokens or (3, HEAD_CHUNKS if ask.stream else 0)
    return cost_msats(RATES, tin, tout)


async def stats_total(url: str, model: str, n: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        for _ in range(500):
            async with s.get(url + "/v1/stats", params={"model": model, "range": "last_1h"}) as r:
                got: dict[str, Any] = await r.json()
            if got["counts"]["total"] == n:
                return round(got["costs"]["total_cost_sats"] * 1000), got
            await asyncio.sleep(0.01)
    raise AssertionError(f"the log never held {n} rows for {model}")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mix=st.lists(asks, min_size=1, max_size=5))
def test_stats_total_is_the_exact_sum_of_the_told_costs(env: Env, mix: list[Ask]) -> None:
    model = next(env.models)

    async def drive() -> list[int]:
        env.upstream.push(*(a.action() for a in mix))
        async with aiohttp.ClientSession() as s:
            return [await told_msats(s, env.proxy.url, model, a) for a in mix]

    told = env.run(drive())
    assert told == [a.expected() for a in mix]
    env.store.flush()
    total, stats = env.run(stats_total(env.proxy.url, model, len(mix)))
    assert total == sum(told)
    reported = [a for a in mix if _reported(a)]
    assert stats["costs"]["provider_reported_requests"] == len(reported)
    assert round(stats["costs"]["computed_cost_sats"] * 1000) == sum(map(_computed, mix))
    assert stats["costs"]["possibly_billed_requests"] == 0
