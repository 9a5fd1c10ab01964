"""Provider URLs (arbstr.urls): one parser for `arbstr check` and the transport."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import config_from_data
from arbstr.errors import ConfigError
from arbstr.urls import HttpUrl, parse_http_url


@pytest.mark.parametrize(
    ("url", "expected", "host_header"),
    [
        ("https://node.example/v1", HttpUrl("https", "node.example", 443, "/v1"), "node.example"),
        ("http://127.0.0.1:8000/v1", HttpUrl("http", "127.0.0.1", 8000, "/v1"), "127.0.0.1:8000"),
        ("http://[::1]:9000/v1", HttpUrl("http", "::1", 9000, "/v1"), "[::1]:9000"),
        ("https://[2001:db8::1]/v1", HttpUrl("https", "2001:db8::1", 443, "/v1"), "[2001:db8::1]"),
        ("HTTP://Example.COM", HttpUrl("http", "example.com", 80, "/"), "example.com"),
        ("http://h/v1?x=1", HttpUrl("http", "h", 80, "/v1?x=1"), "h"),
    ],
)  # fmt: skip
def test_valid_urls(url: str, expected: HttpUrl, host_header: str) -> None:
    parsed = parse_http_url(url)
    assert parsed == expected
    assert parsed.host_header == host_header


def test_join_appends_to_the_path_before_the_query() -> None:
    u = parse_http_url("http://h:1/v1/?k=v")
    assert u.join("/chat/completions").path == "/v1/chat/completions?k=v"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999/v1", "port out of range"),
        ("http://127.0.0.1:0/v1", "port 0"),
        ("http://h:abc/v1", "port"),
        ("ftp://h/v1", "http:// or https://"),
        ("h:80/v1", "http:// or https://"),
        ("http:///v1", "no host"),
        ("http://[::1/v1", "ipv6"),
        ("http://user:pw@h/v1", "credentials"),
        ("http://h/v1#frag", "fragment"),
        ("http://h /v1", "spaces or control"),
        ("http://h/v1\r\nX: y", "spaces or control"),
    ],
)
def test_invalid_urls_name_the_problem(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_http_url(url)


def test_config_check_uses_the_same_parser() -> None:
    data = {"providers": [{"name": "a", "url": "http://127.0.0.1:99999/v1"}]}
    with pytest.raises(ConfigError, match=r"providers\[0\]\.url: port out of range"):
        config_from_data(data, source="<test>", env={})


@given(port=st.integers(min_value=1, max_value=65535), v6=st.booleans())
def test_any_valid_port_round_trips(port: int, v6: bool) -> None:
    host = "::1" if v6 else "127.0.0.1"
    shown = f"[{host}]" if v6 else host
    u = parse_http_url(f"http://{shown}:{port}/v1")
    assert (u.host, u.port) == (host, port)
    assert u.host_header == (shown if port == 80 else f"{shown}:{port}")
