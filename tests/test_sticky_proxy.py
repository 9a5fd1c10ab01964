"""Conversation stickiness through the real proxy: fake upstreams (a cheap and a dear provider
of the same model) and the built-in mocks for ``auto`` tiers."""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest

from fake_upstream import FakeUpstream, Reply
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
UNAVAILABLE = Reply(status=503, json={"error": {"message": "busy", "type": "server_error"}})
SYSTEM = {"role": "system", "content": "You are a careful assistant."}
FIRST = {"role": "user", "content": "Tell me about prompt caches."}


@pytest.fixture
async def beta() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def start(proxies: list[ProxyThread], alpha: FakeUpstream, beta: FakeUpstream) -> ProxyThread:
    data = {
        "providers": [
            provider("alpha", alpha.url, input_rate=1, output_rate=1),
            provider("beta", beta.url, input_rate=5, output_rate=5),
        ],
        "retry": {"backoff_base_ms": 10, "backoff_max_ms": 40, "max_attempts_per_provider": 1},
    }
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


def turns(n: int) -> list[dict[str, str]]:
    """The conversation after ``n`` follow-ups."""
    msgs = [SYSTEM, FIRST]
    for i in range(n):
        msgs += [
            {"role": "assistant", "content": f"answer {i}"},
            {"role": "user", "content": f"follow-up {i}"},
        ]
    return msgs


async def post(
    proxy: ProxyThread, messages: list[dict[str, str]], **kw: Any
) -> tuple[int, dict[str, str]]:
    body = {"model": "gpt-4o", "messages": messages, **kw}
    headers = kw.pop("headers", None)
    body.pop("headers", None)
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=body, headers=headers) as r,
    ):
        await r.read()
        return r.status, {k.lower(): v for k, v in r.headers.items()}


def on_proxy(proxy: ProxyThread, fn: Callable[[], object]) -> None:
    """Run ``fn`` on the proxy's event loop (its boards are single-threaded)."""
    done: concurrent.futures.Future[object] = concurrent.futures.Future()
    loop = proxy._loop
    assert loop is not None
    loop.call_soon_threadsafe(lambda: done.set_result(fn()))
    done.result(5)


async def test_a_conversation_sticks_to_its_provider_while_healthy(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    fake_upstream.push(UNAVAILABLE)  # the cheap one fails: the conversation starts on beta
    status, h = await post(proxy, turns(0))
    assert status == 200 and h["x-arbstr-provider"] == "beta" and h["x-arbstr-sticky"] == "new"
    status, h = await post(proxy, turns(1))  # alpha is healthy again, and cheaper
    assert h["x-arbstr-provider"] == "beta" and h["x-arbstr-sticky"] == "hit"
    status, h = await post(proxy, turns(2), stream=True)
    assert status == 200 and h["x-arbstr-provider"] == "beta" and h["x-arbstr-sticky"] == "hit"
    assert len(fake_upstream.chat_requests) == 1 and len(beta.chat_requests) == 3
    # beta cools down: the conversation moves to alpha, and stays there
    gw = proxy.gateway
    assert gw is not None

    def cool_down_beta() -> None:
        for _ in range(3):
            gw.health.record_failure("beta")

    on_proxy(proxy, cool_down_beta)
    status, h = await post(proxy, turns(3))
    assert h["x-arbstr-provider"] == "alpha" and h["x-arbstr-sticky"] == "miss"
    assert "x-arbstr-retries" not in h  # beta was not even tried
    status, h = await post(proxy, turns(4))
    assert h["x-arbstr-provider"] == "alpha" and h["x-arbstr-sticky"] == "hit"
    # another conversation is not sticky to anything yet; a single turn is not keyed at all
    status, h = await post(proxy, [{"role": "user", "content": "hi"}])
    assert h["x-arbstr-provider"] == "alpha" and "x-arbstr-sticky" not in h
    status, h = await post(proxy, [{"role": "system", "content": "other"}, FIRST])
    assert h["x-arbstr-sticky"] == "new"


async def test_a_failed_sticky_provider_falls_back_and_the_conversation_moves(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    fake_upstream.push(UNAVAILABLE)
    await post(proxy, turns(0))
    beta.push(UNAVAILABLE)
    status, h = await post(proxy, turns(1))
    assert status == 200 and h["x-arbstr-provider"] == "alpha"
    assert h["x-arbstr-sticky"] == "miss"  # ranked first, but another one answered
    status, h = await post(proxy, turns(2))
    assert h["x-arbstr-provider"] == "alpha" and h["x-arbstr-sticky"] == "hit"


async def test_a_claude_code_session_id_keys_the_conversation(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    session = {"X-Claude-Code-Session-Id": "0b7e6f0c-2d1e-4c55-9a0b-7a1f1c7b5e21"}
    fake_upstream.push(UNAVAILABLE)
    _, h = await post(proxy, [{"role": "user", "content": "one"}], headers=session)
    assert h["x-arbstr-provider"] == "beta" and h["x-arbstr-sticky"] == "new"
    _, h = await post(proxy, [{"role": "user", "content": "two"}], headers=session)
    assert h["x-arbstr-provider"] == "beta" and h["x-arbstr-sticky"] == "hit"
    # X-Arbstr-Session wins over it: another conversation
    both = {**session, "X-Arbstr-Session": "mine"}
    _, h = await post(proxy, [{"role": "user", "content": "two"}], headers=both)
    assert h["x-arbstr-provider"] == "alpha" and h["x-arbstr-sticky"] == "new"
    gw = proxy.gateway
    assert gw is not None and len(gw.sticky) == 2


async def test_stickiness_can_be_turned_off(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = {
        "providers": [
            provider("alpha", fake_upstream.url, input_rate=1, output_rate=1),
            provider("beta", beta.url, input_rate=5, output_rate=5),
        ],
        "server": {"sticky_conversations": 0},
    }
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    status, h = await post(proxy, turns(1))
    assert status == 200 and "x-arbstr-sticky" not in h


HARD = (
    "Review this change for bugs and explain the trade-offs step by step:\n```python\n"
    + "def f(x):\n    return x * 2\n" * 400
    + "```\nIt touches src/arbstr/server/pipeline.py and tests/test_tiers.py."
)
TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
    for i in range(12)
]


def test_an_auto_conversation_moves_up_a_tier_and_never_down() -> None:
    with ProxyThread(make_config({}), with_mocks=True) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
        session = {"X-Arbstr-Session": "conv-1"}

        def ask(text: str, tools: Any = openai.omit) -> dict[str, str]:
            raw = client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": text}],
                tools=tools,
                extra_headers=session,
            )
            return dict(raw.headers)

        h = ask("say hi")
        assert h["x-arbstr-tier"] == "economy" and h["x-arbstr-sticky"] == "new"
        h = ask(HARD, TOOLS)
        assert h["x-arbstr-tier"] == "frontier" and h["x-arbstr-model"] == "claude-3.5-sonnet"
        assert h["x-arbstr-sticky"] == "miss"  # its economy model is not in the frontier tier
        frontier_provider = h["x-arbstr-provider"]
        h = ask("thanks")  # scored economy, but the conversation stays frontier
        assert float(h["x-arbstr-complexity"].split()[0]) < 0.35
        assert h["x-arbstr-tier"] == "frontier" and h["x-arbstr-model"] == "claude-3.5-sonnet"
        assert h["x-arbstr-provider"] == frontier_provider and h["x-arbstr-sticky"] == "hit"
        # the tier header is the client's own choice, and is not raised
        session["X-Arbstr-Tier"] = "economy"
        h = ask("thanks again")
        assert h["x-arbstr-tier"] == "economy" and h["x-arbstr-sticky"] == "miss"
        del session["X-Arbstr-Tier"]
        h = ask("and again")
        assert h["x-arbstr-tier"] == "frontier" and h["x-arbstr-sticky"] == "hit"
        rows = proxy.records
        assert [r.tier for r in rows] == ["economy", "frontier", "frontier", "economy", "frontier"]
