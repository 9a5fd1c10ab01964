"""Tiers and fit through the real proxy: pseudo-models, the X-Arbstr-Tier header, context and
modality checks before any upstream call, fallback inside a tier, rows and stats by tier."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from arbstr.storage import Store
from fake_upstream import Completion, FakeUpstream, Reply
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"


def config(alpha: str, beta: str) -> dict[str, Any]:
    return {
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
        ],
        "tiers": [
            {"name": "economy", "models": ["tiny", "small"]},
            {"name": "standard", "models": ["mid"]},
            {"name": "frontier", "models": ["big"]},
        ],
        "retry": {"max_attempts_per_provider": 1, "backoff_base_ms": 0, "backoff_max_ms": 0},
    }


async def post(
    proxy: ProxyThread, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=body, headers=headers or {}) as r,
    ):
        return r.status, r.headers.copy(), json.loads(await r.read())


def chat(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def records(proxy: ProxyThread, n: int) -> list[Any]:
    for _ in range(200):
        if len(proxy.records) >= n:
            return proxy.records
        await asyncio.sleep(0.01)
    raise AssertionError("no request record")


@pytest.fixture
async def beta() -> Any:
    async with FakeUpstream() as up:
        yield up


def start(
    proxies: list[ProxyThread], fake: FakeUpstream, beta: FakeUpstream, **kw: Any
) -> ProxyThread:
    proxy = ProxyThread(make_config(config(fake.url, beta.url)), **kw).start()
    proxies.append(proxy)
    return proxy


async def test_economy_picks_the_cheap_model_and_the_header_overrides(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    status, headers, _ = await post(proxy, chat("arbstr/economy"))
    assert status == 200
    assert headers["x-arbstr-model"] == "tiny" and headers["x-arbstr-tier"] == "economy"
    assert json.loads(fake_upstream.last_request.body)["model"] == "tiny"
    status, headers, _ = await post(proxy, chat("arbstr/economy"), {"X-Arbstr-Tier": "frontier"})
    assert status == 200
    assert headers["x-arbstr-model"] == "big" and headers["x-arbstr-tier"] == "frontier"
    status, headers, _ = await post(proxy, chat("gpt-x"), {"X-Arbstr-Tier": "frontier"})
    assert status == 400  # a concrete model is never replaced (and no provider has it)
    status, _, body = await post(proxy, chat("auto"), {"X-Arbstr-Tier": "premium"})
    assert status == 400 and "premium" in body["error"]["message"]
    status, headers, _ = await post(proxy, chat("tiny"))
    assert status == 200 and "x-arbstr-tier" not in headers
    rows = await records(proxy, 5)
    assert [r.tier for r in rows] == ["economy", "frontier", None, None, None]


async def test_a_long_prompt_skips_the_small_context_and_a_concrete_model_gets_400(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    long = "word " * 80_000  # ≈ 100k tokens
    status, headers, _ = await post(proxy, chat("arbstr/economy", long))
    assert status == 200
    assert headers["x-arbstr-model"] == "small" and headers["x-arbstr-provider"] == "beta"
    assert fake_upstream.requests == []
    status, _, body = await post(proxy, chat("tiny", long))
    assert status == 400
    err = body["error"]
    assert err["code"] == "context_length_exceeded" and err["type"] == "invalid_request_error"
    assert "'tiny'" in err["message"] and "8192" in err["message"]
    assert fake_upstream.requests == []  # no upstream request was made


async def test_an_image_to_a_text_only_model_is_unsupported_input(
    fake_upstream: FakeUpstream,
    beta: FakeUpstream,
    proxies: list[ProxyThread],
) -> None:
    proxy = start(proxies, fake_upstream, beta)
    image = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    }
    status, _, body = await post(proxy, image)
    assert status == 400 and body["error"]["code"] == "unsupported_input"
    assert "'tiny'" in body["error"]["message"]
    assert fake_upstream.requests == []
    status, headers, _ = await post(proxy, {**image, "model": "arbstr/economy"})
    assert status == 200 and headers["x-arbstr-model"] == "small"  # (small takes images)


async def test_fallback_inside_the_tier_names_the_answering_model(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread], tmp_path: Path
) -> None:
    path = str(tmp_path / "log.db")
    store = Store.open(path)
    proxy = start(proxies, fake_upstream, beta, sink=store)
    fake_upstream.push(Reply(503, json={"error": {"message": "busy"}}))
    status, headers, body = await post(proxy, chat("arbstr/economy"))
    assert status == 200
    assert headers["x-arbstr-provider"] == "beta" and headers["x-arbstr-model"] == "small"
    assert headers["x-arbstr-tier"] == "economy" and "x-arbstr-retries" in headers
    assert json.loads(beta.last_request.body)["model"] == "small"
    assert body["model"] == "small"
    beta.push(Completion())
    status, _, _ = await post(proxy, chat("arbstr/standard"))
    assert status == 200
    assert store.flush()
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/v1/stats", params={"group_by": "tier"}) as r,
    ):
        stats = await r.json()
    assert {k: v["counts"]["total"] for k, v in stats["groups"].items()} == {
        "economy": 1,
        "standard": 1,
    }
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/v1/requests", params={"tier": "economy"}) as r,
    ):
        page = await r.json()
    assert [(i["tier"], i["model"]) for i in page["data"]] == [("economy", "small")]


async def test_tier_pseudo_models_work_out_of_the_box_with_the_mocks(
    proxies: list[ProxyThread],
) -> None:
    proxy = ProxyThread(make_config({}), with_mocks=True).start()
    proxies.append(proxy)
    models = set()
    for tier in ("economy", "standard", "frontier"):
        status, headers, _ = await post(proxy, chat(f"arbstr/{tier}"))
        assert status == 200 and headers["x-arbstr-tier"] == tier
        models.add(headers["x-arbstr-model"])
    assert len(models) == 3  # terciles of the listed models: one each
