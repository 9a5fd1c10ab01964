"""Every answer of the chat route carries the request id and writes exactly one row, whatever
happens: method and auth failures, bad input, clients that leave, and arbstr's own crashes
(the error boundary). Real proxy on loopback, scripted fake upstream."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from arbstr.server import app as app_module
from arbstr.server import chat
from fake_upstream import Completion, FakeUpstream, Stream, completion_events
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def proxy(fake_upstream: FakeUpstream) -> Iterator[ProxyThread]:
    data = {"providers": [provider("alpha", fake_upstream.url)]}
    with ProxyThread(make_config(data)) as p:
        yield p


async def request(
    proxy: ProxyThread, method: str, path: str = CHAT, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, proxy.url + path, **kw) as r:
        return r.status, dict(r.headers), await r.read()


async def rows(proxy: ProxyThread, n: int) -> list[Any]:
    for _ in range(300):
        if len(proxy.records) >= n:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and no more than n
    return list(proxy.records)


def request_id(headers: dict[str, str]) -> str:
    rid = headers["x-arbstr-request-id"]
    assert uuid.UUID(rid).version == 7
    return rid


# --- the error boundary --------------------------------------------------------------------


def explode(*args: object, **kw: object) -> Any:
    raise RuntimeError("boom in arbstr")


async def test_a_crash_before_the_answer_is_an_openai_shaped_500_with_headers_and_a_row(
    proxy: ProxyThread, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_upstream.push(Completion())
    monkeypatch.setattr(chat, "cost_msats", explode)
    status, headers, body = await request(proxy, "POST", json=HI)
    assert status == 500
    err = json.loads(body)["error"]
    assert (err["type"], err["code"]) == ("server_error", "internal_error")
    rid = request_id(headers)
    assert rid in err["message"] and headers["x-arbstr-provider"] == "alpha"
    [row] = await rows(proxy, 1)
    assert (row.request_id, row.success, row.error_status) == (rid, False, 500)
    assert "RuntimeError" in row.error_message


@pytest.mark.parametrize("one_write", [False, True], ids=["chunk-by-chunk", "one-write"])
async def test_a_crash_mid_stream_ends_the_stream_with_an_error_event_the_sdk_raises_on(
    proxy: ProxyThread,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    one_write: bool,
) -> None:
    if one_write:  # every event, [DONE] included, in one read: the text still goes out first
        fake_upstream.push(Stream([b"".join(completion_events("one two three"))]))
    else:
        fake_upstream.push(Completion(content="one two three"))
    monkeypatch.setattr(chat, "trailer_event", explode)  # runs after the stream started
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    got: list[str] = []

    async def read() -> None:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for c in stream:
            if c.choices:
                got.append(c.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="internal error in arbstr"):
        await read()
    assert "".join(got).strip() == "one two three"  # what came before is intact
    [row] = await rows(proxy, 1)
    assert (row.success, row.error_status, row.streaming) == (False, 500, True)
    await client.close()


async def test_an_admin_route_crash_is_a_json_500(
    proxy: ProxyThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app_module._GET_ROUTES, "/health", explode)
    status, _, body = await request(proxy, "GET", "/health")
    assert status == 500
    assert json.loads(body)["error"]["code"] == "internal_error"


# --- every status has an id and a row -----------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_wrong_method_on_chat_is_a_405_with_an_id_and_a_row(
    proxy: ProxyThread, method: str
) -> None:
    status, headers, body = await request(proxy, method)
    assert status == 405
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    [row] = await rows(proxy, 1)
    assert (row.request_id, row.error_status) == (request_id(headers), 405)


async def test_an_auth_failure_is_recorded(fake_upstream: FakeUpstream) -> None:
    data = {
        "server": {"auth_token": "s3cret-token-for-tests"},
        "providers": [provider("alpha", fake_upstream.url)],
    }
    with ProxyThread(make_config(data)) as p:
        status, headers, _ = await request(p, "POST", json=HI)
        assert status == 401
        [row] = await rows(p, 1)
        assert (row.request_id, row.error_status, row.success) == (request_id(headers), 401, False)
    assert fake_upstream.chat_requests == []


@pytest.mark.parametrize("model", ["gpt-4o\r\nx-evil: 1", "gpt\n4o", "gpt-4o\x00"])
async def test_a_control_character_in_model_is_a_400_not_a_dropped_connection(
    proxy: ProxyThread, model: str
) -> None:
    status, headers, body = await request(proxy, "POST", json={**HI, "model": model})
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_model"
    assert "x-evil" not in headers and "x-arbstr-model" not in headers
    [row] = await rows(proxy, 1)
    assert (row.request_id, row.error_status) == (request_id(headers), 400)


def test_a_huge_model_is_a_400_the_openai_sdk_raises(proxy: ProxyThread) -> None:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m" * 300_000, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "invalid_model"
    assert len(info.value.response.headers.get("x-arbstr-model", "")) < 300
    client.close()


def test_a_client_gone_while_sending_its_body_is_recorded(proxy: ProxyThread) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + json.dumps(HI).encode()[:20]
        )
    for _ in range(300):
        if proxy.records:
            break
        asyncio.run(asyncio.sleep(0.01))
    [row] = proxy.records
    assert (row.error_status, row.success, row.provider) == (499, False, None)
