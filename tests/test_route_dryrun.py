"""``POST /v1/route`` through the real proxy: the dry run's policy, tier, score and candidates
(ranked, then skipped with why), headers overriding, errors as the real route answers them,
and never an upstream request."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from arbstr.server.dryrun import guess_api
from fake_upstream import FakeUpstream
from harness import ProxyThread, make_config, provider


def config(alpha: str, beta: str, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "providers": [
            provider(
                "alpha",
                alpha,
                models=["tiny", "mid", "big"],
                model_rates={
                    "tiny": {"output_rate": 1},
                    "mid": {"output_rate": 10},
                    "big": {"output_rate": 50},
                },
                model_info={"tiny": {"context_length": 8192, "input_modalities": ["text"]}},
            ),
            provider("beta", beta, models=["small"], model_rates={"small": {"output_rate": 2}}),
            provider("gamma", beta, models=["tiny"], apis=["chat"], output_rate=3),
        ],
        "tiers": [
            {"name": "economy", "models": ["tiny", "small"]},
            {"name": "standard", "models": ["mid"]},
            {"name": "frontier", "models": ["big"]},
        ],
        "policies": {
            "rules": [{"name": "cheap", "keywords": ["cheaply"], "max_sats_per_1k_output": 1.5}]
        },
    }


@pytest.fixture
async def beta() -> Any:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
def proxy(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> ProxyThread:
    p = ProxyThread(make_config(config(fake_upstream.url, beta.url))).start()
    proxies.append(p)
    return p


async def dry(
    proxy: ProxyThread,
    body: Any,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + "/v1/route", json=body, headers=headers or {}, params=params or {}) as r,
    ):
        return r.status, json.loads(await r.read())


def chat(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def rows(answer: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(c["provider"], c["model"], c["skipped"]) for c in answer["candidates"]]


async def test_an_easy_chat_routes_to_economy_with_its_candidates(
    proxy: ProxyThread, fake_upstream: FakeUpstream, beta: FakeUpstream
) -> None:
    status, a = await dry(proxy, chat("auto", "hi there"))
    assert status == 200
    assert a["api"] == "chat" and a["policy"] == "default" and a["tier"] == "economy"
    assert a["model"] == "tiny" and 0 <= a["complexity"] < 0.35
    assert isinstance(a["reasons"], list)
    assert rows(a) == [("alpha", "tiny", None), ("beta", "small", None), ("gamma", "tiny", None)]
    assert all(c["est_cost_sats"] > 0 and c["funds"] is None for c in a["candidates"])
    assert fake_upstream.requests == [] and beta.requests == []
    assert proxy.records == []  # a dry run serves nothing: no row


async def test_a_long_body_lists_the_8k_model_as_skipped_for_context_length(
    proxy: ProxyThread, fake_upstream: FakeUpstream
) -> None:
    status, a = await dry(proxy, chat("arbstr/economy", "word " * 80_000))
    assert status == 200 and a["model"] == "small"
    assert rows(a) == [
        ("beta", "small", None),
        ("gamma", "tiny", None),  # (gamma says nothing of tiny's context: it fits)
        ("alpha", "tiny", "context_length"),
    ]
    assert fake_upstream.requests == []


async def test_a_messages_body_is_guessed_and_skips_chat_only_providers(
    proxy: ProxyThread,
) -> None:
    body = {
        "model": "arbstr/economy",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
    }
    status, a = await dry(proxy, body)
    assert status == 200 and a["api"] == "messages"
    # gamma lacks messages but has chat: served through the translation
    assert ("gamma", "tiny", None) in rows(a)
    status, a = await dry(proxy, {"model": "arbstr/economy", "input": "hello"})
    assert status == 200 and a["api"] == "responses"
    assert rows(a)[-1] == ("gamma", "tiny", "wrong_api")


async def test_headers_override_policy_and_tier(proxy: ProxyThread) -> None:
    status, a = await dry(proxy, chat("auto"), {"X-Arbstr-Tier": "frontier"})
    assert status == 200 and a["tier"] == "frontier" and a["model"] == "big"
    status, a = await dry(proxy, chat("arbstr/economy"), {"X-Arbstr-Policy": "cheap"})
    assert status == 200 and a["policy"] == "cheap"
    assert rows(a) == [
        ("alpha", "tiny", None),
        ("gamma", "tiny", "price_cap"),
        ("beta", "small", "price_cap"),
    ]


async def test_errors_answer_as_the_real_route(proxy: ProxyThread) -> None:
    cases: list[tuple[Any, dict[str, str], dict[str, str], int, str]] = [
        (chat("auto"), {"X-Arbstr-Policy": "nope"}, {}, 400, "unknown_policy"),
        (chat("auto"), {"X-Arbstr-Tier": "premium"}, {}, 400, "invalid_tier"),
        (chat("gpt-x"), {}, {}, 400, "no_provider"),
        (chat("tiny", "word " * 80_000), {}, {"api": "chat"}, 400, "context_length_exceeded"),
        ({"messages": "x"}, {}, {}, 400, "invalid_request"),
        (chat("auto"), {}, {"api": "speech"}, 400, "invalid_parameter"),
    ]
    for body, headers, params, want_status, code in cases:
        status, a = await dry(proxy, body, headers, params)
        # tiny through gamma fits (no limit known): only alpha's is skipped, so 200
        if body.get("model") == "tiny":
            assert status == 200 and rows(a)[-1] == ("alpha", "tiny", "context_length")
            continue
        assert status == want_status, (body, a)
        assert set(a) == {"error"} and a["error"]["type"] == "invalid_request_error", a
        assert a["error"]["code"] == code or code == "invalid_request", a
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/v1/route") as r,
    ):
        assert r.status == 405


async def test_auth_like_the_other_routes(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = config(fake_upstream.url, beta.url, auth_token="tok-0123456789abcdef")
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    status, a = await dry(proxy, chat("auto"))
    assert status == 401 and a["error"]["code"] == "invalid_api_key"
    status, a = await dry(proxy, chat("auto"), {"Authorization": "Bearer tok-0123456789abcdef"})
    assert status == 200 and a["model"] == "tiny"


def test_guess_api() -> None:
    assert guess_api(b'{"messages": []}') == "chat"
    assert guess_api(b'{"messages": [], "max_tokens": 5, "system": "s"}') == "messages"
    blocks = b'{"messages": [{"role": "user", "content": [{"type": "tool_result"}]}],'
    assert guess_api(blocks + b' "max_tokens": 5}') == "messages"
    assert guess_api(b'{"input": "x"}') == "responses"
    assert guess_api(b'{"prompt": "x"}') == "completions"
    assert guess_api(b"not json") == "chat"
