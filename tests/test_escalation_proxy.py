"""Escalation through the real proxy: a tiered answer with a failure signal is re-asked one
tier up under an ``escalate = true`` rule; both attempts have rows and costs; stats count it."""

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
MESSAGES = "/v1/messages"


def config(alpha: str, beta: str, **rule: Any) -> dict[str, Any]:
    return {
        "providers": [
            provider("alpha", alpha, models=["tiny"], model_rates={"tiny": {"output_rate": 1}}),
            provider(
                "beta",
                beta,
                models=["mid", "big"],
                model_rates={"mid": {"output_rate": 10}, "big": {"output_rate": 50}},
            ),
        ],
        "tiers": [
            {"name": "economy", "models": ["tiny"]},
            {"name": "standard", "models": ["mid"]},
            {"name": "frontier", "models": ["big"]},
        ],
        "policies": {"rules": [{"name": "careful", "keywords": ["careful"], **rule}]},
        "retry": {"max_attempts_per_provider": 1, "backoff_base_ms": 0, "backoff_max_ms": 0},
    }


@pytest.fixture
async def beta() -> Any:
    async with FakeUpstream() as up:
        yield up


def start(
    proxies: list[ProxyThread], alpha: FakeUpstream, beta: FakeUpstream, **rule: Any
) -> ProxyThread:
    sink = rule.pop("sink", None)
    kw = {} if sink is None else {"sink": sink}
    proxy = ProxyThread(make_config(config(alpha.url, beta.url, **rule)), **kw).start()
    proxies.append(proxy)
    return proxy


def chat(model: str = "arbstr/economy", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "be careful"}], **extra}


async def post(
    proxy: ProxyThread, body: dict[str, Any], path: str = CHAT
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + path, json=body) as r:
        return r.status, r.headers.copy(), await r.read()


async def records(proxy: ProxyThread, n: int) -> list[Any]:
    for _ in range(300):
        if len(proxy.records) >= n:
            await asyncio.sleep(0.05)  # (no more than n)
            return proxy.records
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} records: {proxy.records}")


async def test_a_truncated_economy_answer_is_re_asked_at_standard(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread], tmp_path: Path
) -> None:
    store = Store.open(str(tmp_path / "log.db"))
    proxy = start(proxies, fake_upstream, beta, escalate=True, sink=store)
    fake_upstream.push(Completion("half an ans", finish_reason="length", completion_tokens=7))
    beta.push(Completion("the whole answer", completion_tokens=9))
    status, headers, raw = await post(proxy, chat())
    assert status == 200
    body = json.loads(raw)
    assert body["choices"][0]["message"]["content"] == "the whole answer"
    assert headers["x-arbstr-escalated"] == "economy->standard (truncated)"
    assert headers["x-arbstr-tier"] == "standard" and headers["x-arbstr-model"] == "mid"
    assert json.loads(beta.last_request.body)["model"] == "mid"
    assert store.flush()
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/requests") as r:
        second, first = (await r.json())["data"]  # newest first
    assert (first["tier"], first["model"], first["success"]) == ("economy", "tiny", True)
    assert first["escalation"] is None and first["escalated_from"] is None
    assert first["cost"]["sats"] > 0
    assert second["escalated_from"] == first["request_id"]
    assert second["escalation"] == "truncated"
    assert second["request_id"] == headers["x-arbstr-request-id"] != first["request_id"]
    assert (second["tier"], second["model"], second["success"]) == ("standard", "mid", True)
    assert second["cost"]["sats"] > first["cost"]["sats"]
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/stats") as r:
        stats = await r.json()
    assert stats["counts"]["total"] == 2 and stats["counts"]["escalated"] == 1
    assert stats["escalations"] == {"economy->standard": {"truncated": 1}}
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/v1/stats", params={"group_by": "tier"}) as r,
    ):
        groups = (await r.json())["groups"]
    assert {k: v["counts"]["escalated"] for k, v in groups.items()} == {
        "economy": 0,
        "standard": 1,
    }


async def test_the_first_row_keeps_its_outcome_and_says_why(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, escalate=True)
    fake_upstream.push(Completion("half", finish_reason="length", completion_tokens=7))
    status, headers, _ = await post(proxy, chat())
    assert status == 200 and headers["x-arbstr-escalated"] == "economy->standard (truncated)"
    first, second = await records(proxy, 2)
    assert (first.tier, first.success, first.output_tokens) == ("economy", True, 7)
    assert first.error_message == "escalated: truncated" and first.escalated_from is None
    assert first.cost_msats is not None and first.cost_msats > 0
    assert second.escalated_from == first.request_id and second.escalation == "truncated"
    assert second.cost_msats is not None and second.success


async def test_invalid_json_climbs_to_frontier_and_the_client_gets_the_last_answer(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, escalate=True)
    fake_upstream.push(Completion("not json"))
    beta.push(Completion("still { not"), Completion('{"ok": true}'))
    status, headers, raw = await post(proxy, chat(response_format={"type": "json_object"}))
    assert status == 200
    assert json.loads(json.loads(raw)["choices"][0]["message"]["content"]) == {"ok": True}
    assert headers["x-arbstr-escalated"] == (
        "economy->standard (invalid_json), standard->frontier (invalid_json)"
    )
    rows = await records(proxy, 3)
    assert [r.tier for r in rows] == ["economy", "standard", "frontier"]
    assert rows[2].escalated_from == rows[1].request_id
    assert rows[1].escalated_from == rows[0].request_id


async def test_no_escalation_without_the_rule_nor_at_frontier_nor_when_fine(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    off = start(proxies, fake_upstream, beta)
    fake_upstream.push(Completion("cut", finish_reason="length"))
    status, headers, _ = await post(off, chat())
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert beta.requests == []
    on = start(proxies, fake_upstream, beta, escalate=True)
    beta.push(Completion("cut", finish_reason="length"))
    status, headers, _ = await post(on, chat("arbstr/frontier"))
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert len(beta.requests) == 1
    status, headers, _ = await post(on, chat())  # a good economy answer stays
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert len(beta.requests) == 1
    # the client's own max_tokens reached: not a failure
    fake_upstream.push(Completion("cut", finish_reason="length", completion_tokens=5))
    status, headers, _ = await post(on, chat(max_tokens=5))
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert len(beta.requests) == 1
    assert len(await records(on, 3)) == 3


async def test_a_failed_re_ask_leaves_the_first_answer(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, escalate=True)
    fake_upstream.push(Completion(""))
    beta.push(Reply(503, json={"error": {"message": "busy"}}))
    status, headers, raw = await post(proxy, chat())
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert headers["x-arbstr-tier"] == "economy"
    assert json.loads(raw)["choices"][0]["message"]["content"] == ""
    rows = await records(proxy, 2)
    first, second = rows
    assert first.error_message == "escalated: empty"
    assert not second.success and second.escalated_from == first.request_id


async def test_messages_refusal_escalates(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, escalate=True)
    refused = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "tiny",
        "content": [],
        "stop_reason": "refusal",
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    fine = {**refused, "content": [{"type": "text", "text": "sure"}], "stop_reason": "end_turn"}
    fake_upstream.push(Reply(json=refused))
    beta.push(Reply(json={**fine, "model": "mid"}))
    body = {
        "model": "arbstr/economy",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "careful now"}],
    }
    status, headers, raw = await post(proxy, body, MESSAGES)
    assert status == 200, raw
    assert headers["x-arbstr-escalated"] == "economy->standard (refusal)"
    assert json.loads(raw)["content"][0]["text"] == "sure"


async def test_a_stream_escalates_only_with_escalate_streams(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream, beta, escalate=True)
    fake_upstream.push(Completion("cut", finish_reason="length"))
    status, headers, raw = await post(proxy, chat(stream=True))
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert b"[DONE]" in raw and beta.requests == []
    assert len(await records(proxy, 1)) == 1


async def test_a_re_ask_is_held_and_counted_by_the_budgets_and_refused_past_them(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    data = config(fake_upstream.url, beta.url, escalate=True)
    data["budgets"] = [
        {"name": "all", "sats": 1000},
        {"name": "beta-cap", "sats": 0.5, "provider": "beta"},
    ]
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    # standard's estimate does not fit beta's cap: no re-ask, the economy answer stands
    fake_upstream.push(Completion("half", finish_reason="length", completion_tokens=7))
    status, headers, _ = await post(proxy, chat())
    assert status == 200 and "x-arbstr-escalated" not in headers
    assert headers["x-arbstr-model"] == "tiny" and beta.requests == []
    (row,) = await records(proxy, 1)
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/budgets") as r:
        used = {b["name"]: b for b in (await r.json())["data"]}
    assert used["all"]["used_sats"] * 1000 == row.cost_msats
    assert used["all"]["in_flight_sats"] == 0.0
    # with room on beta the re-ask goes, and both rows count
    proxy.stop()
    proxies.remove(proxy)
    data["budgets"][1]["sats"] = 100
    proxy = ProxyThread(make_config(data)).start()
    proxies.append(proxy)
    fake_upstream.push(Completion("half", finish_reason="length", completion_tokens=7))
    status, headers, _ = await post(proxy, chat())
    assert headers["x-arbstr-escalated"] == "economy->standard (truncated)"
    first, second = await records(proxy, 2)
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/budgets") as r:
        used = {b["name"]: b for b in (await r.json())["data"]}
    assert first.cost_msats and second.cost_msats
    assert round(used["all"]["used_sats"] * 1000) == first.cost_msats + second.cost_msats
    assert round(used["beta-cap"]["used_sats"] * 1000) == second.cost_msats
    assert used["all"]["in_flight_sats"] == used["beta-cap"]["in_flight_sats"] == 0.0
