"""The fake Routstr node itself (tests/fake_routstr.py): what it lists, reserves, bills and
reports, checked over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.routing.pricing import cost_msats
from arbstr.routstr.models import parse_sats_pricing
from fake_routstr import FakeRoutstr, NodeModel, Plan, SatsPricing, usd_msats

KEY = "sk-test-node-key-0001"
SONNET = NodeModel("claude-3.5-sonnet", 3e-6, 15e-6, request_usd=5.178e-3, vendor="anthropic")
MINI = NodeModel("gpt-4o-mini", 1.5e-7, 6e-7, upstream_cost_usd=2.072e-3)
MSG = {"messages": [{"role": "user", "content": "x" * 80}]}  # 20 prompt tokens

StartNode = Callable[..., FakeRoutstr]


@pytest.fixture
def node(routstr_node: StartNode) -> FakeRoutstr:
    return routstr_node([SONNET, MINI], keys={KEY: 10_000_000})


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Http:
    """The node's routes over one aiohttp session (with the test key unless told otherwise)."""

    session: aiohttp.ClientSession
    base: str

    async def get(self, path: str, key: str | None = KEY) -> Answer:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.session.get(self.base + path, headers=headers) as r:
            return Answer(r.status, dict(r.headers), await r.text())

    async def chat(self, model: str = "claude-3.5-sonnet", key: str = KEY, **kw: Any) -> Answer:
        body = {"model": model, **MSG, **kw}
        headers = {"Authorization": f"Bearer {key}"}
        url = self.base + "/chat/completions"
        async with self.session.post(url, json=body, headers=headers) as r:
            return Answer(r.status, dict(r.headers), await r.text())


@pytest.fixture
async def http(node: FakeRoutstr) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield Http(s, node.url)


async def test_models_lists_sats_prices_per_token_at_the_btc_rate(
    node: FakeRoutstr, http: Http
) -> None:
    doc = (await http.get("/models", key=None)).json()
    assert set(doc) == {"data"}  # no "object" key, as routstr-core answers
    sonnet = doc["data"][0]
    assert sonnet["id"] == "claude-3.5-sonnet"
    assert sonnet["canonical_slug"] == "anthropic/claude-3.5-sonnet"
    assert sonnet["architecture"]["input_modalities"] == ["text"]
    assert sonnet["top_provider"] == {"context_length": 128_000, "max_completion_tokens": 16_384}
    # 100k USD/BTC: 1 USD = 1000 sats
    assert sonnet["sats_pricing"] == {
        "prompt": 0.003,
        "completion": 0.015,
        "request": 5.178,
        "input_cache_read": 0.0003,
        "input_cache_write": 0.00375,
        "max_cost": 634.938,
        "max_completion_cost": 245.76,
    }
    node.set_btc_usd(200_000.0)
    repriced = (await http.get("/models")).json()["data"][0]["sats_pricing"]
    assert repriced["prompt"] == 0.0015 and repriced["request"] == 2.589
    assert node.models_calls == 2


async def test_routes_live_under_the_root(routstr_node: StartNode) -> None:
    node = routstr_node([MINI], root="/api/")
    assert node.url == f"http://127.0.0.1:{node.port}/api/v1"
    async with aiohttp.ClientSession() as s, s.get(node.url + "/models") as r:
        assert r.status == 200
        assert [m["id"] for m in (await r.json())["data"]] == ["gpt-4o-mini"]


async def test_unknown_key_is_401_and_balance_info_in_msats(node: FakeRoutstr, http: Http) -> None:
    bad = await http.chat(key="sk-nobody")
    assert bad.status == 401
    assert node.requests[0].status == 401 and node.requests[0].charged_msats == 0
    assert (await http.get("/balance/info", key=None)).status == 401
    info = (await http.get("/balance/info")).json()
    assert info == {"api_key": KEY, "balance": 10_000_000, "reserved": 0}


async def test_bills_the_token_formula_never_the_request_price(
    node: FakeRoutstr, http: Http
) -> None:
    r = await http.chat()
    assert r.status == 200
    usage = r.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (20, 12)
    charge = 20 * 3 + 12 * 15  # msats: 0.003 and 0.015 sats per token
    assert usage["cost"]["total_msats"] == charge
    assert usage["cost_sats"] == charge // 1000
    assert r.headers["X-Routstr-Cost-Msats"] == str(charge)
    (rec,) = node.requests
    assert (rec.charged_msats, rec.formula_msats) == (charge, charge)
    assert rec.balance_before - rec.balance_after == charge
    assert node.balance(KEY) == 10_000_000 - charge


async def test_cached_tokens_bill_at_input_cache_read(node: FakeRoutstr, http: Http) -> None:
    node.push(Plan(prompt_tokens=69, cached_tokens=60, completion_tokens=12))
    usage = (await http.chat()).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 60}
    # 9 x 0.003 + 60 x 0.0003 + 12 x 0.015 sats
    assert usage["cost"]["total_msats"] == 27 + 18 + 180


async def test_upstream_usd_cost_is_billed_at_the_current_rate(
    node: FakeRoutstr, http: Http
) -> None:
    first = (await http.chat("gpt-4o-mini")).json()["usage"]["cost"]["total_msats"]
    assert first == 2072  # the model's switch: 2.072e-3 USD at 100k USD/BTC
    node.set_btc_usd(107_700.0)
    second = (await http.chat("gpt-4o-mini")).json()["usage"]["cost"]["total_msats"]
    assert second == usd_msats(2.072e-3, 107_700.0) == 1924
    node.push(Plan(upstream_cost_usd=1e-3))  # per request
    assert (await http.chat()).json()["usage"]["cost"]["total_msats"] == 929
    assert node.requests[0].formula_msats == 10  # what the token prices imply: 3 + 7.2


async def test_reservation_and_402_when_the_balance_cannot_cover_it(
    node: FakeRoutstr, http: Http
) -> None:
    p = node.pricing("claude-3.5-sonnet")
    # max_cost = 128k x 0.003 + 16384 x 0.015 + 5.178 sats
    assert p.reservation_msats(None) == 634_938
    # less the unused completion allowance: max_completion_cost - 100 x 0.015 sats
    bounded = p.reservation_msats(100)
    assert bounded == 634_938 - 245_760 + 1_500
    node.set_balance(KEY, bounded)
    r = await http.chat()
    assert r.status == 402
    assert r.json()["error"]["code"] == "insufficient_balance"
    assert r.json()["error"]["type"] == "insufficient_balance"
    assert node.balance(KEY) == bounded and node.requests[0].charged_msats == 0
    assert (await http.chat(max_tokens=100)).status == 200
    assert node.requests[1].reserved_msats == bounded
    assert node.balance(KEY) == bounded - node.requests[1].charged_msats


async def test_vendor_prefixed_id_is_served_and_unknown_model_is_400(
    node: FakeRoutstr, http: Http
) -> None:
    assert (await http.chat("anthropic/claude-3.5-sonnet")).status == 200
    assert node.requests[0].served_model == "claude-3.5-sonnet"
    bad = await http.chat("no-such-model")
    assert bad.status == 400 and bad.json()["error"]["code"] == "model_not_found"
    assert node.requests[1].charged_msats == 0


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_failed_answers_are_free(node: FakeRoutstr, http: Http, status: int) -> None:
    node.push(Plan(status=status))
    assert (await http.chat()).status == status
    assert node.balance(KEY) == 10_000_000 and node.charged_msats() == 0


def sse_events(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


async def test_stream_has_n_chunks_and_the_cost_in_the_usage_chunk(
    node: FakeRoutstr, http: Http
) -> None:
    node.push(Plan(completion_tokens=30))
    r = await http.chat(stream=True, stream_options={"include_usage": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 30
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == 30
    assert usage["cost"]["total_msats"] == node.requests[0].charged_msats == 20 * 3 + 30 * 15
    plain = sse_events((await http.chat(stream=True)).text)
    assert all("usage" not in json.loads(e) for e in plain[:-1])


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 2.0) -> None:
    """Poll a condition the node's thread makes true (no event of this loop to wait on)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting: {what}")


async def test_client_leaving_mid_stream_or_timing_out_is_billed_in_full(
    node: FakeRoutstr, http: Http
) -> None:
    node.push(Plan(completion_tokens=300, chunk_delay_s=0.002))
    body = {"model": "claude-3.5-sonnet", **MSG, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http.session.post(http.base + "/chat/completions", json=body, headers=headers) as r:
        for _ in range(10):
            await r.content.readline()
        r.close()
    assert node.requests[0].charged_msats == 20 * 3 + 300 * 15
    node.push(Plan(delay_s=1.0))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await http.chat()
    assert node.requests[1].charged_msats == 20 * 3 + 12 * 15
    assert node.balance(KEY) == 10_000_000 - node.charged_msats()
    await wait_for(lambda: all(r.disconnected for r in node.requests), "clients seen leaving")
    assert not any(r.finished for r in node.requests)


async def test_repricing_bills_later_requests_at_the_new_rate(
    node: FakeRoutstr, http: Http
) -> None:
    await http.chat()
    node.set_btc_usd(107_700.0)
    await http.chat()
    before, after = (r.charged_msats for r in node.requests)
    assert before == 240 and after == node.pricing("claude-3.5-sonnet").tokens_msats(20, 0, 12)
    assert after < before


@settings(max_examples=60, deadline=None)
@given(
    prompt_usd=st.floats(1e-9, 1e-3),
    completion_usd=st.floats(1e-9, 1e-3),
    btc_usd=st.floats(1_000, 1_000_000),
    prompt_tokens=st.integers(0, 200_000),
    completion_tokens=st.integers(0, 50_000),
)
def test_token_formula_is_arbstrs_exact_cost_of_the_published_prices(
    prompt_usd: float,
    completion_usd: float,
    btc_usd: float,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    """Uncached and without a request price, what the node bills is what arbstr computes from
    the prices the node publishes, to the millisat."""
    model = NodeModel("m", prompt_usd, completion_usd)
    pricing = SatsPricing.of(model, btc_usd)
    body = json.dumps({"data": [{"id": "m", "sats_pricing": pricing.as_json()}]})
    rates = parse_sats_pricing(body.encode())["m"]
    node = pricing.tokens_msats(prompt_tokens, 0, completion_tokens)
    assert node == cost_msats(rates, prompt_tokens, completion_tokens)
