"""https upstreams on loopback: a scripted fake upstream serving a certificate from a test CA
(trustme), reached through the transport, the upstream client and the real proxy."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trustme
from aiohttp import ClientSession

from arbstr.config import Provider
from arbstr.upstream.client import AttemptFailed, UpstreamClient
from arbstr.upstream.protocol import ConnectFailed, Target
from arbstr.upstream.transport import Transport
from fake_upstream import Completion, FakeUpstream
from harness import ProxyThread, make_config, provider

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost", "::1"))).configure_cert(ctx)
    return ctx


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
async def https_upstream(ca: trustme.CA) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(ssl_context=server_context(ca)) as up:
        yield up


def alpha(url: str) -> Provider:
    return make_config({"providers": [provider("alpha", url)]}).providers[0]


def chat_target(up: FakeUpstream) -> Target:
    return Target.for_url(f"{up.url}/chat/completions", {"Content-Type": "application/json"})


async def test_transport_with_an_ssl_context_reads_json_and_streams(
    ca: trustme.CA, https_upstream: FakeUpstream
) -> None:
    assert https_upstream.url.startswith("https://127.0.0.1:")
    t = Transport(ssl_context=client_context(ca))
    r = await t.post(chat_target(https_upstream), msgspec.json.encode(BODY), b"", 5, 5)
    assert r.status == 200
    assert msgspec.json.decode(await r.read())["choices"][0]["message"]["content"] == (
        "Hello world"
    )
    stream = msgspec.json.encode({**BODY, "stream": True})
    r = await t.post(chat_target(https_upstream), stream, b"", 5, 5)
    r.stream_timeouts(5)
    got = b""
    while (chunk := await r.next_chunk()) is not None:
        got += chunk
    r.close()
    assert got.endswith(b"data: [DONE]\n\n") and b'"content":"world"' in got
    assert https_upstream.connection_count == 1  # kept alive over TLS
    t.close()


async def test_upstream_client_takes_an_ssl_context(
    ca: trustme.CA, https_upstream: FakeUpstream
) -> None:
    client = UpstreamClient(
        connect_timeout_s=5, stream_idle_timeout_s=5, ssl_context=client_context(ca)
    )
    try:
        reply = await client.complete(alpha(https_upstream.url), msgspec.json.encode(BODY), "r", 5)
        assert reply.status == 200 and reply.usage is not None
        # the aiohttp session (balances, prices) trusts the same CA
        session = await client.get_session()
        async with session.get(f"{https_upstream.url}/models") as resp:
            assert resp.status == 200
    finally:
        await client.close()


async def test_a_certificate_from_an_untrusted_ca_is_a_connect_failure(ca: trustme.CA) -> None:
    other = trustme.CA()
    async with FakeUpstream(ssl_context=server_context(other)) as up:
        t = Transport(ssl_context=client_context(ca))
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await t.post(chat_target(up), b"{}", b"", 5, 5)
        assert t.pool(chat_target(up)).open_connections == 0
        t.close()
        client = UpstreamClient(
            connect_timeout_s=5, stream_idle_timeout_s=5, ssl_context=client_context(ca)
        )
        with pytest.raises(AttemptFailed) as info:
            await client.complete(alpha(up.url), msgspec.json.encode(BODY), "r", 5)
        assert info.value.kind == "connect"
        await client.close()
        assert up.chat_requests == []  # never sent


async def test_a_certificate_for_another_name_is_a_connect_failure(ca: trustme.CA) -> None:
    async with FakeUpstream(ssl_context=server_context(ca, "other.example")) as up:
        t = Transport(ssl_context=client_context(ca))
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await t.post(chat_target(up), b"{}", b"", 5, 5)
        t.close()


async def test_the_default_context_honours_ssl_cert_file(
    ca: trustme.CA, https_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Transport()
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await t.post(chat_target(https_upstream), b"{}", b"", 5, 5)  # the system CAs
    t.close()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    t = Transport()
    r = await t.post(chat_target(https_upstream), msgspec.json.encode(BODY), b"", 5, 5)
    assert r.status == 200
    await r.read()
    t.close()


async def test_the_proxy_relays_an_https_upstream(
    ca: trustme.CA, https_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))  # how a user trusts a private CA
    https_upstream.push(Completion("over tls"), Completion("streamed over tls"))
    config = make_config({"providers": [provider("alpha", https_upstream.url)]})
    with ProxyThread(config) as proxy:
        async with ClientSession() as s:
            url = f"{proxy.url}/v1/chat/completions"
            async with s.post(url, json=BODY) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            async with s.post(url, json={**BODY, "stream": True}) as r:
                assert r.status == 200
                events = (await r.read()).split(b"\n\n")
    assert answer["choices"][0]["message"]["content"] == "over tls"
    datas = [e.removeprefix(b"data: ") for e in events if e.startswith(b"data: ")]
    assert datas[-1] == b"[DONE]"
    words = [
        c["choices"][0]["delta"].get("content", "")
        for c in map(msgspec.json.decode, datas[:-1])
        if c.get("choices")
    ]
    assert "".join(words) == "streamed over tls"
    assert [r.stream for r in https_upstream.chat_requests] == [False, True]
