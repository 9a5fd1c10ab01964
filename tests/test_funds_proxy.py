"""Insufficient funds through the real proxy: a 402 falls back without a breaker strike, passes
through when nothing is left, shows in /health, and polled balances rank keys that cannot pay
last."""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from typer.testing import CliRunner

from arbstr.cli import app
from fake_upstream import FakeUpstream, Reply
from harness import ProxyThread, make_config, provider

CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
ALPHA_KEY = "sk-test-alpha-0123456789"
SHORT = Reply(
    status=402,
    json={
        "detail": {
            "error": {
                "message": f"Insufficient balance for key {ALPHA_KEY}: 5000 mSats required",
                "type": "insufficient_balance",
                "code": "payment_required",
            }
        }
    },
)
UNAVAILABLE = Reply(status=503, json={"error": {"message": "busy", "type": "server_error"}})


@pytest.fixture
async def beta() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def config(
    alpha_url: str,
    beta_url: str | None = None,
    *,
    retry: dict[str, Any] | None = None,
    alpha: dict[str, Any] | None = None,
) -> dict[str, Any]:
    providers = [provider("alpha", alpha_url, input_rate=1, output_rate=1, **(alpha or {}))]
    if beta_url is not None:
        providers.append(provider("beta", beta_url, input_rate=5, output_rate=5))
    return {
        "providers": providers,
        "retry": {"backoff_base_ms": 10, "backoff_max_ms": 40, **(retry or {})},
    }


def start(proxies: list[ProxyThread], data: dict[str, Any]) -> ProxyThread:
    p = ProxyThread(make_config(data)).start()
    proxies.append(p)
    return p


async def post(proxy: ProxyThread, payload: Any = None) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + CHAT, json=payload or HI) as r,
    ):
        return r.status, r.headers.copy(), await r.read()


async def health(proxy: ProxyThread) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/health") as r:
        return r.status, await r.json()


async def health_until(proxy: ProxyThread, ok: Callable[[Any], bool]) -> Any:
    """/health once ``ok(body)``, asked every 10 ms for up to 5 s."""
    for _ in range(500):
        _, body = await health(proxy)
        if ok(body):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"/health never got there: {body}")


async def test_a_402_falls_back_without_a_strike_and_a_later_success_clears_it(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config(fake_upstream.url, beta.url, retry={"breaker_failures": 1}))
    fake_upstream.push(SHORT)
    status, headers, _ = await post(proxy)
    assert status == 200
    assert headers["x-arbstr-provider"] == "beta"
    assert headers["x-arbstr-retries"] == "1/alpha"
    assert len(fake_upstream.chat_requests) == 1  # not retried on the same provider
    code, h = await health(proxy)
    alpha = h["providers"]["alpha"]
    # no breaker strike even with breaker_failures = 1: the key's balance, not the node
    assert alpha["state"] == "closed" and alpha["consecutive_failures"] == 0
    assert alpha["funds"] == "insufficient"
    assert h["providers"]["beta"]["funds"] == "unknown"
    assert (code, h["status"]) == (200, "degraded")
    record = proxy.records[-1]
    assert record.success and record.provider == "beta" and not record.possibly_billed_msats

    # alpha is now ranked after beta (still there: its key may have been topped up); when
    # beta fails, alpha serves, and that success clears its funds state
    beta.push(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"
    assert headers["x-arbstr-retries"].startswith("1/beta")  # beta first: alpha goes last
    _, h = await health(proxy)
    assert h["providers"]["alpha"]["funds"] == "unknown"


async def test_a_402_with_no_other_candidate_passes_through_redacted(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config(fake_upstream.url))
    fake_upstream.push(SHORT)
    status, headers, body = await post(proxy)
    assert status == 402
    assert ALPHA_KEY.encode() not in body and b"[REDACTED]" in body
    assert b"insufficient_balance" in body and b"5000 mSats required" in body
    assert headers["x-arbstr-provider"] == "alpha"
    assert headers["x-arbstr-retries"] == "1/alpha"
    assert "x-arbstr-request-id" in headers
    assert len(fake_upstream.chat_requests) == 1
    _, h = await health(proxy)
    assert h["providers"]["alpha"]["consecutive_failures"] == 0
    assert h["providers"]["alpha"]["funds"] == "insufficient"
    record = proxy.records[-1]
    assert not record.success and record.error_status == 402


async def test_the_last_402_passes_through_after_other_failures(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(
        proxies, config(fake_upstream.url, beta.url, retry={"max_attempts_per_provider": 1})
    )
    fake_upstream.push(UNAVAILABLE)
    beta.push(Reply(status=402, json={"error": {"code": "balance_limit_exceeded"}}))
    status, headers, body = await post(proxy)
    assert status == 402 and b"balance_limit_exceeded" in body
    assert headers["x-arbstr-retries"] == "1/alpha, 1/beta"


async def test_a_402_streaming_falls_back_too(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config(fake_upstream.url, beta.url))
    fake_upstream.push(SHORT)
    status, headers, body = await post(proxy, {**HI, "stream": True})
    assert status == 200 and headers["x-arbstr-provider"] == "beta"
    assert body.rstrip().endswith(b"data: [DONE]")


async def test_without_fallback_a_402_passes_through_and_nothing_else_is_tried(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    proxy = start(proxies, config(fake_upstream.url, beta.url, retry={"fallback": False}))
    fake_upstream.push(SHORT)
    status, headers, _ = await post(proxy)
    assert status == 402 and headers["x-arbstr-retries"] == "1/alpha"
    assert beta.chat_requests == []


async def test_a_polled_balance_too_low_ranks_the_provider_last_until_topped_up(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    fake_upstream.balance_reply = Reply(json={"api_key": ALPHA_KEY, "balance": 0, "reserved": 0})
    proxy = start(proxies, config(fake_upstream.url, beta.url, alpha={"balance_interval_s": 0.02}))
    h = await health_until(proxy, lambda h: h["providers"]["alpha"]["funds"] != "unknown")
    assert h["providers"]["alpha"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "latency_ms_avg": None,
        "funds": "insufficient",
        "balance_sats": 0.0,
    }
    assert h["status"] == "degraded"
    balance_gets = [r for r in fake_upstream.requests if r.path.endswith("/balance/info")]
    assert balance_gets[0].headers["authorization"] == f"Bearer {ALPHA_KEY}"
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "beta"  # alpha is cheaper
    assert fake_upstream.chat_requests == []

    fake_upstream.balance_reply = Reply(json={"balance": 123_456, "reserved": 1000})
    h = await health_until(proxy, lambda h: h["providers"]["alpha"]["funds"] == "ok")
    assert h["providers"]["alpha"]["balance_sats"] == 123.456
    assert h["status"] == "ok"
    status, headers, _ = await post(proxy)
    assert status == 200 and headers["x-arbstr-provider"] == "alpha"


async def test_a_402_is_cleared_by_a_polled_top_up(
    fake_upstream: FakeUpstream, beta: FakeUpstream, proxies: list[ProxyThread]
) -> None:
    fake_upstream.balance_reply = Reply(json={"balance": 900, "reserved": 0})
    proxy = start(proxies, config(fake_upstream.url, beta.url, alpha={"balance_interval_s": 0.02}))
    await health_until(proxy, lambda h: h["providers"]["alpha"]["funds"] == "ok")
    fake_upstream.push(SHORT)
    status, headers, _ = await post(proxy)
    assert headers["x-arbstr-provider"] == "beta"
    h = await health_until(proxy, lambda h: h["providers"]["alpha"]["funds"] == "insufficient")
    assert h["providers"]["alpha"]["balance_sats"] == 0.9
    await asyncio.sleep(0.1)  # polls that show the same balance do not clear it
    _, h = await health(proxy)
    assert h["providers"]["alpha"]["funds"] == "insufficient"
    fake_upstream.balance_reply = Reply(json={"balance": 50_000, "reserved": 0})
    await health_until(proxy, lambda h: h["providers"]["alpha"]["funds"] == "ok")
    status, headers, _ = await post(proxy)
    assert status == 200
    assert headers["x-arbstr-provider"] == "alpha"


async def test_a_node_without_balance_info_stays_unknown_and_is_logged_once(
    fake_upstream: FakeUpstream, proxies: list[ProxyThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arbstr.routstr")
    proxy = start(proxies, config(fake_upstream.url, alpha={"balance_interval_s": 0.01}))
    for _ in range(500):
        if len([r for r in fake_upstream.requests if r.path.endswith("/balance/info")]) >= 4:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("not polled")
    _, h = await health(proxy)
    assert h["providers"]["alpha"]["funds"] == "unknown" and h["status"] == "ok"
    lines = [r.getMessage() for r in caplog.records if "balance/info" in r.getMessage()]
    assert lines == ["alpha has no /balance/info (HTTP 404): its funds stay unknown"]
    status, _, _ = await post(proxy)
    assert status == 200


# --- arbstr providers ---------------------------------------------------------------------


class _Balances(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, bytes]] = {
        "/rich/v1/balance/info": b'{"balance": 21000, "reserved": 500}',
        "/empty/v1/balance/info": b'{"balance": 0, "reserved": 0}',
    }

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_arbstr_providers_shows_each_keys_funds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Balances)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "".join(
            f'[[providers]]\nname = "{n}"\nurl = "{base}/{n}/v1"\napi_key = "${{K}}"\n'
            for n in ("rich", "empty", "none")
        ),
        encoding="utf-8",
    )
    cfg.chmod(0o600)
    monkeypatch.setenv("K", "sk-test-0123456789")
    monkeypatch.setenv("COLUMNS", "300")
    try:
        res = CliRunner().invoke(app, ["providers", "-c", str(cfg)])
    finally:
        server.shutdown()
    assert res.exit_code == 0, res.output
    funds = {
        cells[0]: cells[-1]
        for line in res.output.splitlines()
        if line.startswith("│") and (cells := [c.strip() for c in line[1:-1].split("│")])
    }
    assert funds["rich"] == "ok (21.000 sats)"
    assert funds["empty"] == "insufficient (0.000 sats)"
    assert funds["none"] == "unknown: HTTP 404"
