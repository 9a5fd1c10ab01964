"""Which figure is the request's cost, through the real proxy: the provider's reported charge
(body ``usage.cost.total_msats``, else the ``X-Routstr-Cost-Msats`` header, else
``usage.cost_sats``) when there is one, else arbstr's own; the same in the response header,
the stream trailer and the row, whatever way the stream's bytes arrive. And what a request
the node may have billed without saying so is estimated at."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from arbstr.money import format_msats
from arbstr.routing.pricing import cost_msats
from arbstr.server.charge import Charge
from fake_upstream import (
    DONE,
    FakeUpstream,
    Hang,
    Reply,
    Stream,
    chunk,
    completion_events,
    completion_json,
    sse,
)
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
# 12 chars: 3 input tokens estimated
ASK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there!"}]}
COMPUTED = 10 * 10 + 5 * 30  # the fake's usage (10 in, 5 out) at 10 / 30 sats per 1k


def start(proxies: list[ProxyThread], url: str, **retry: Any) -> ProxyThread:
    data = {
        "server": {"stream_idle_timeout_s": 5, "request_timeout_s": 0.5},
        "retry": {"backoff_base_ms": 1, "backoff_max_ms": 1, **retry},
        "providers": [provider("alpha", url, input_rate=10, output_rate=30)],
    }
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def one_row(proxy: ProxyThread) -> Any:
    for _ in range(300):
        if proxy.records:
            return proxy.records[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no row")


def usage(**cost: Any) -> dict[str, Any]:
    return {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, **cost}


# (usage cost fields, X-Routstr-Cost-Msats header, the charge that wins)
REPORTS = [
    pytest.param({"cost": {"total_msats": 2072}, "cost_sats": 9.0}, "3000", 2072, id="body"),
    pytest.param({"cost_sats": 9.0}, "3000", 3000, id="header-over-cost_sats"),
    pytest.param({"cost_sats": 1.5559}, None, 1555, id="cost_sats-floored"),
    pytest.param({"cost": 2.5}, None, 2500, id="bare-cost"),
    pytest.param({}, None, None, id="none"),
]


@pytest.mark.parametrize(("cost", "header", "charged"), REPORTS)
async def test_a_json_answer_costs_the_reported_charge_else_the_computed_cost(
    fake_upstream: FakeUpstream,
    proxies: list[ProxyThread],
    cost: dict[str, Any],
    header: str | None,
    charged: int | None,
) -> None:
    proxy = start(proxies, fake_upstream.url)
    body = completion_json()
    body["usage"] = usage(**cost)
    fake_upstream.push(Reply(json=body, headers={"X-Routstr-Cost-Msats": header} if header else {}))
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ASK) as r:
        assert r.status == 200
        got = (r.headers["x-arbstr-cost-sats"], r.headers["x-arbstr-cost-source"])
    want = Charge(COMPUTED, charged)
    assert want.msats is not None
    assert got == (format_msats(want.msats), want.source)
    row = await one_row(proxy)
    assert (row.cost_msats, row.computed_cost_msats, row.provider_cost_msats) == (
        want.msats,
        COMPUTED,
        charged,
    )


def split(event: bytes, parts: int) -> list[bytes]:
    step = -(-len(event) // parts)
    return [event[i : i + step] for i in range(0, len(event), step)]


def stream_events(cost: dict[str, Any], arrival: str) -> list[bytes]:
    """A streamed completion whose final usage chunk carries ``cost``, its bytes arriving
    as ``arrival`` says."""
    head = completion_events("Hi there", include_usage=False, done=False)
    last = sse(chunk(usage=usage(**cost)))
    if arrival == "whole":
        return [*head, last, DONE]
    if arrival == "split":  # the usage chunk in three pieces, [DONE] on its own
        return [*head, *split(last, 3), DONE]
    if arrival == "with-done":  # the usage chunk and [DONE] in one write
        return [*head, last + DONE]
    assert arrival == "done-split"  # [DONE] itself cut in two, glued to the usage chunk's end
    joined = last + DONE
    return [*head, joined[: len(last) - 4], joined[len(last) - 4 : -3], joined[-3:]]


async def stream_trailer(proxy: ProxyThread) -> dict[str, Any]:
    ask = {**ASK, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ask) as r:
        assert r.status == 200
        assert "x-arbstr-cost-sats" not in r.headers
        body = await r.read()
    assert body.endswith(DONE)
    events = [e for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    trailers = [json.loads(e[6:]) for e in events if b'"arbstr"' in e]
    assert len(trailers) == 1
    assert b'"usage"' not in body  # the client did not ask for usage: not forwarded
    info: dict[str, Any] = trailers[0]["arbstr"]
    return info


@pytest.mark.parametrize("arrival", ["whole", "split", "with-done", "done-split"])
@pytest.mark.parametrize(("cost", "header", "charged"), REPORTS)
async def test_a_stream_trailer_tells_the_reported_charge_however_the_bytes_arrive(
    fake_upstream: FakeUpstream,
    proxies: list[ProxyThread],
    cost: dict[str, Any],
    header: str | None,
    charged: int | None,
    arrival: str,
) -> None:
    proxy = start(proxies, fake_upstream.url)
    headers = {"X-Routstr-Cost-Msats": header} if header else {}
    events = stream_events(cost, arrival)
    fake_upstream.push(Stream(events=events, chunk_delay_s=0.005, headers=headers))
    info = await stream_trailer(proxy)
    want = Charge(COMPUTED, charged)
    assert {k: info[k] for k in want.trailer_fields()} == want.trailer_fields()
    assert info["cost_source"] == ("provider" if charged is not None else "computed")
    row = await one_row(proxy)
    assert row.success
    assert (row.cost_msats, row.computed_cost_msats, row.provider_cost_msats) == (
        want.msats,
        COMPUTED,
        charged,
    )


async def test_a_cut_stream_with_a_reported_charge_costs_that_charge(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    events = completion_events(usage_cost_msats=777, done=False)
    fake_upstream.push(Stream(events=events, then_reset=True))
    ask = {**ASK, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ask) as r:
        body = await r.read()
    assert b"stream_interrupted" in body
    row = await one_row(proxy)
    assert (row.success, row.cost_msats, row.computed_cost_msats) == (False, 777, COMPUTED)
    assert row.possibly_billed_msats is None


# --- what may have been billed although nothing says so ----------------------------------


def rates(proxy: ProxyThread) -> Any:
    assert proxy.gateway is not None
    return proxy.gateway.config.providers[0].rates_for("gpt-4o")


SIX_WORDS = [sse(chunk(w)) for w in ("a ", "b ", "c ", "d ", "e ", "f")]


async def test_a_cut_stream_is_billed_at_least_for_what_was_relayed(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream(events=SIX_WORDS, then_reset=True))
    ask = {**ASK, "stream": True, "max_tokens": 2}  # 6 chunks went out, more than 2 tokens
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ask) as r:
        await r.read()
    row = await one_row(proxy)
    assert row.cost_msats is None
    assert row.possibly_billed_msats == cost_msats(rates(proxy), 3, 6)


async def test_a_client_leaving_mid_stream_is_billed_the_whole_answer(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    """The node reads its upstream to the end and bills it all: at least the tokens already
    relayed, even past ``max_tokens``' estimate (the estimate was the figure before)."""
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream(events=SIX_WORDS, then_hang=True))
    ask = {**ASK, "stream": True, "max_tokens": 2}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ask) as r:
        got = b""
        while got.count(b"data: ") < 6:
            got += await r.content.readany()
    await fake_upstream.wait_disconnect()
    row = await one_row(proxy)
    assert (row.error_status, row.cost_msats) == (499, None)
    assert row.possibly_billed_msats == cost_msats(rates(proxy), 3, 6)


async def test_a_timed_out_attempt_retried_to_success_stays_possibly_billed(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    """With retry_on_timeout the first attempt may still have been billed: the row of the
    answer that followed says so, apart from its cost."""
    proxy = start(proxies, fake_upstream.url, retry_on_timeout=True)
    fake_upstream.push(Hang(), Reply(json=completion_json()))
    ask = {**ASK, "max_tokens": 40}
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=ask) as r:
        assert r.status == 200
        assert r.headers["x-arbstr-cost-source"] == "computed"
    row = await one_row(proxy)
    assert (row.success, row.cost_msats, row.attempts) == (True, COMPUTED, 2)
    assert row.possibly_billed_msats == cost_msats(rates(proxy), 3, 40)
