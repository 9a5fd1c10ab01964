"""Odd but billed upstream answers, end to end through the real proxy: hostile or mistyped
``usage`` and cost fields, error events mid-stream, line endings split across reads."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from fake_upstream import DONE, FakeUpstream, Reply, Stream, chunk, completion_json, sse
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
ESTIMATED_INPUT = 1  # "hi": 2 characters / 4, at least 1


def start(proxies: list[ProxyThread], url: str) -> ProxyThread:
    data = {"providers": [provider("alpha", url, input_rate=10, output_rate=30)]}
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def post(proxy: ProxyThread, payload: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(proxy.url + CHAT, json=payload) as r:
        return r.status, dict(r.headers), await r.read()


async def record(proxy: ProxyThread) -> Any:
    for _ in range(200):
        if proxy.records:
            return proxy.records[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no request record")


async def health(proxy: ProxyThread) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        return await r.json()  # type: ignore[no-any-return]


def completion_with_usage(usage_json: bytes) -> bytes:
    """A completion body whose ``usage`` is the given JSON text (which may be odd JSON)."""
    obj = completion_json("fine answer")
    del obj["usage"]
    return json.dumps(obj, separators=(",", ":")).encode()[:-1] + b',"usage":' + usage_json + b"}"


# --- non-streaming: cost fields -------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "headers"),
    [
        (b'{"prompt_tokens":10,"completion_tokens":5,"cost_sats":1e30}', {}),
        (b'{"prompt_tokens":10,"completion_tokens":5,"cost":{"total_msats":1e400}}', {}),
        (b'{"prompt_tokens":10,"completion_tokens":5,"cost":-3}', {}),
        (b'{"prompt_tokens":10,"completion_tokens":5}', {"X-Routstr-Cost-Msats": "NaN"}),
        (b'{"prompt_tokens":10,"completion_tokens":5}', {"X-Routstr-Cost-Msats": "Infinity"}),
        (b'{"prompt_tokens":10,"completion_tokens":5}', {"X-Routstr-Cost-Msats": "-1000"}),
    ],
    ids=["cost_sats-1e30", "total_msats-1e400", "cost-negative", "nan", "inf", "neg-header"],
)
async def test_hostile_provider_cost_is_ignored_and_the_row_is_written(
    fake_upstream: FakeUpstream,
    proxies: list[ProxyThread],
    usage: bytes,
    headers: dict[str, str],
) -> None:
    proxy = start(proxies, fake_upstream.url)
    body = completion_with_usage(usage)
    fake_upstream.push(Reply(body=body, headers={"Content-Type": "application/json", **headers}))
    status, got_headers, got = await post(proxy, HI)
    assert status == 200 and got == body
    assert got_headers["x-arbstr-cost-sats"] == "0.250"  # (10 * 10 + 5 * 30) / 1000
    rec = await record(proxy)
    assert rec.success and rec.provider_cost_msats is None
    assert rec.cost_msats == 250


async def test_cost_precedence_total_msats_then_header_then_cost_sats(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    header = {"Content-Type": "application/json", "X-Routstr-Cost-Msats": "2000"}
    usage = (
        b'{"prompt_tokens":1,"completion_tokens":1,"cost_sats":3.0,"cost":{"total_msats":1234.5}}'
    )
    fake_upstream.push(
        Reply(body=completion_with_usage(usage), headers=header),
        Reply(body=completion_with_usage(b'{"cost_sats":3.0009}'), headers=header),
        Reply(body=completion_with_usage(b'{"cost_sats":3.0009,"cost":4}')),
    )
    for expected in (1235, 2000, 3000):
        n = len(proxy.records)
        status, _, _ = await post(proxy, HI)
        assert status == 200
        for _ in range(200):
            if len(proxy.records) > n:
                break
            await asyncio.sleep(0.01)
        assert proxy.records[-1].provider_cost_msats == expected


# --- non-streaming: mistyped usage ----------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        (b'{"prompt_tokens":12,"completion_tokens":7,"cost_sats":"abc"}', (12, 7)),
        (b'{"prompt_tokens":12,"completion_tokens":7,"cost":"free"}', (12, 7)),
        (b'{"prompt_tokens":"12","completion_tokens":7}', (ESTIMATED_INPUT, 7)),
        (b'{"prompt_tokens":12,"completion_tokens":9223372036854775808}', (12, 0)),
        (b'{"prompt_tokens":12.0,"completion_tokens":true}', (ESTIMATED_INPUT, 0)),
        (b"[]", (ESTIMATED_INPUT, 0)),
        (b'"lots"', (ESTIMATED_INPUT, 0)),
    ],
)
async def test_mistyped_usage_never_costs_the_client_its_answer(
    fake_upstream: FakeUpstream,
    proxies: list[ProxyThread],
    usage: bytes,
    tokens: tuple[int, int],
) -> None:
    proxy = start(proxies, fake_upstream.url)
    body = completion_with_usage(usage)
    fake_upstream.push(Reply(body=body, headers={"Content-Type": "application/json"}))
    status, _, got = await post(proxy, HI)
    assert status == 200 and got == body
    rec = await record(proxy)
    assert rec.success
    assert (rec.input_tokens, rec.output_tokens) == tokens
    assert rec.provider_cost_msats is None
    assert len(fake_upstream.chat_requests) == 1


async def test_a_body_that_is_not_an_object_is_still_invalid(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Reply(body=b'[{"usage": {}}]', headers={"Content-Type": "application/json"}))
    status, _, got = await post(proxy, HI)
    assert status == 502
    assert json.loads(got)["error"]["code"] == "upstream_invalid_response"


# --- streaming ------------------------------------------------------------------------------


async def test_stream_usage_chunk_with_mistyped_field_is_read_and_hidden(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    usage = {"prompt_tokens": "12", "completion_tokens": 9, "cost_sats": "abc"}
    events = [sse(chunk("a")), sse(chunk("b")), sse(chunk(usage=usage)), DONE]
    fake_upstream.push(Stream(events=events))
    status, _, got = await post(proxy, {**HI, "stream": True})
    assert status == 200
    assert b'"usage"' not in got  # the client did not ask for it
    trailer = json.loads(got.split(b"\n\n")[-3].removeprefix(b"data: "))["arbstr"]
    assert (trailer["input_tokens"], trailer["output_tokens"]) == (ESTIMATED_INPUT, 9)
    rec = await record(proxy)
    assert rec.success and rec.output_tokens == 9


ERROR_EVENT = sse({"error": {"message": "model overloaded\nplease retry", "type": "server_error"}})


@pytest.mark.parametrize("then_done", [True, False], ids=["then-done", "then-end"])
async def test_stream_error_event_is_forwarded_and_recorded_as_failure(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], then_done: bool
) -> None:
    proxy = start(proxies, fake_upstream.url)
    events = [sse(chunk("partial")), ERROR_EVENT] + ([DONE] if then_done else [])
    fake_upstream.push(Stream(events=events))
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="model overloaded"):
            async for _ in stream:
                pass
    rec = await record(proxy)
    assert not rec.success and rec.error_status == 502
    assert "model overloaded please retry" in rec.error_message
    assert (await health(proxy))["providers"]["alpha"]["consecutive_failures"] == 1


async def test_stream_error_event_bytes_reach_the_client_unchanged(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    fake_upstream.push(Stream(events=[sse(chunk("partial")), ERROR_EVENT, DONE]))
    status, _, got = await post(proxy, {**HI, "stream": True})
    assert status == 200
    assert got.startswith(sse(chunk("partial")) + ERROR_EVENT)
    assert got.endswith(DONE) and got.count(b'"error"') == 1


async def test_stream_is_byte_exact_when_crlf_is_split_across_reads(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, fake_upstream.url)
    content = sse(chunk("hi")).replace(b"\n\n", b"\r\n\r\n")
    usage = sse(chunk(usage={"prompt_tokens": 3, "completion_tokens": 1})).replace(
        b"\n\n", b"\r\n\r\n"
    )
    done = b"data: [DONE]\r\n\r\n"
    upstream = content + usage + done
    # every blank line's CR and LF arrive in different reads
    pieces = [content[:-1], b"\n" + usage[:-1], b"\n" + done[:-1], b"\n"]
    assert b"".join(pieces) == upstream
    fake_upstream.push(Stream(events=pieces, chunk_delay_s=0.02))
    status, _, got = await post(proxy, {**HI, "stream": True})
    assert status == 200
    assert got.startswith(content) and got.endswith(done)
    trailer = got[len(content) : -len(done)]
    assert trailer.startswith(b"data: {") and trailer.endswith(b"}\n\n")
    assert trailer.count(b"\n") == 2 and b'"arbstr"' in trailer
    assert json.loads(trailer[6:])["arbstr"]["output_tokens"] == 1
