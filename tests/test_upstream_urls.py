"""Provider URLs on the way to the transport: the same parser as config validation, IPv6
literal hosts, paths with a query."""

from __future__ import annotations

import re
import socket

import pytest
from aiohttp import ClientSession

from arbstr.upstream.protocol import Target
from arbstr.urls import parse_http_url
from fake_upstream import FakeUpstream
from harness import ProxyThread, make_config, provider

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def host_line(url: str) -> bytes:
    head = Target.for_url(url, {}).head_prefix
    return next(line for line in head.split(b"\r\n") if line.startswith(b"Host: "))


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[::1]/v1/chat/completions", b"[::1]"),
        ("https://[2001:db8::1]/v1", b"[2001:db8::1]"),
        ("http://[::1]:8080/v1", b"[::1]:8080"),
        ("https://Example.COM/v1", b"example.com"),
        ("https://example.com:443/v1", b"example.com"),
        ("http://127.0.0.1:8443/", b"127.0.0.1:8443"),
    ],
)
def test_host_header(url: str, host: bytes) -> None:
    assert host_line(url) == b"Host: " + host


def test_target_fields_come_from_the_config_parser() -> None:
    t = Target.for_url("https://[2001:db8::1]:8443/v1/chat/completions?x=1", {"X-A": "b"})
    assert (t.scheme, t.host, t.port, t.path) == (
        "https",
        "2001:db8::1",
        8443,
        b"/v1/chat/completions?x=1",
    )
    assert t.head_prefix == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\nX-A: b\r\n"
    )
    assert Target.for_url(parse_http_url("http://h/v1").join("/chat/completions"), {}).path == (
        b"/v1/chat/completions"
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http://user:secret@example.com/v1",
        "http://example.com:0/v1",
        "http://example.com/v1#part",
        "http://exa mple.com/v1",
        "http:///v1",
        "http://[::1/v1",
    ],
)
def test_target_rejects_what_config_validation_rejects(url: str) -> None:
    try:
        parse_http_url(url)
    except ValueError as exc:
        message = str(exc)
    else:
        pytest.fail(f"config validation accepts {url!r}")
    with pytest.raises(ValueError, match=re.escape(message)):
        Target.for_url(url, {})


async def test_a_provider_url_with_a_query_keeps_it_after_the_chat_path() -> None:
    async with FakeUpstream() as up:
        config = make_config({"providers": [provider("alpha", f"{up.url}?api-version=2")]})
        with ProxyThread(config) as proxy:
            async with (
                ClientSession() as s,
                s.post(f"{proxy.url}/v1/chat/completions", json=BODY) as r,
            ):
                assert r.status == 200, await r.text()
        assert up.last_request.path == "/v1/chat/completions"
        assert up.last_request.query == {"api-version": "2"}


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_the_proxy_reaches_an_upstream_on_ipv6_loopback() -> None:
    async with FakeUpstream(host="::1") as up:
        assert up.url == f"http://[::1]:{up.port}/v1"
        config = make_config({"providers": [provider("alpha", up.url)]})
        with ProxyThread(config) as proxy:
            async with ClientSession() as s:
                for stream in (False, True):
                    url = f"{proxy.url}/v1/chat/completions"
                    async with s.post(url, json={**BODY, "stream": stream}) as r:
                        assert r.status == 200, await r.text()
                        assert (await r.read()).strip()
        assert len(up.chat_requests) == 2
        assert {r.headers["host"] for r in up.chat_requests} == {f"[::1]:{up.port}"}
        assert up.connection_count == 1
