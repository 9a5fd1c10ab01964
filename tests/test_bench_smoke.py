"""Smoke test of the benchmark's own parts (no wrk, no proxy process, < 1 s): the fast mock
upstream answers OpenAI JSON and SSE correctly, the clients measure it, and the generated
config is one arbstr accepts."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bench.clients import http_request, latency_pairs, run_streams
from bench.run import PROVIDERS, choose_pinning, config_toml, pct, request_body
from bench.upstream import FINGERPRINT, Settings, start_server

from arbstr.config import load_config

SETTINGS = Settings(first_byte_s=0.01, chunk_interval_s=0.002, chunks=3)


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    server = await start_server(SETTINGS)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[bytes, bytes]:
    writer.write(http_request("/v1/chat/completions", body))
    head = await reader.readuntil(b"\r\n\r\n")
    if b"content-length:" in head:
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return head, b"".join(chunks)
        chunks.append(data[:-2])


async def test_upstream_answers_json_and_sse_on_one_connection(upstream: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream)
    try:
        head, body = await _exchange(reader, writer, request_body(False))
        assert head.startswith(b"HTTP/1.1 200 ")
        reply = json.loads(body)
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["prompt_tokens"] > 0

        asked = json.loads(request_body(True))
        asked["stream_options"] = {"include_usage": True}
        sent_at = time.monotonic_ns()
        head, stream = await _exchange(reader, writer, json.dumps(asked).encode())
        assert b"content-type: text/event-stream" in head
        events = [e for e in stream.split(b"\n\n") if e]
        assert all(e.startswith(b"data: ") for e in events)
        assert events[-1] == b"data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        content = [c for c in chunks if c["choices"]]
        assert len(content) == SETTINGS.chunks
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        stamps = [int(c["system_fingerprint"][1:]) for c in content]
        assert sent_at + SETTINGS.first_byte_s * 0.5e9 <= stamps[0] <= time.monotonic_ns()
        assert stamps == sorted(stamps)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    finally:
        writer.close()


async def test_clients_measure_the_upstream(upstream: int) -> None:
    addr = ("127.0.0.1", upstream)
    streams = await run_streams(
        addr, "/x", request_body(True), streams=4, concurrency=2, expected_chunks=3
    )
    assert (streams.ok, streams.errors, streams.batched_http_chunks) == (4, 0, 0)
    assert streams.chunks == 12 and len(streams.chunk_delay_ms) == 12
    assert min(streams.ttfb_ms) >= SETTINGS.first_byte_s * 500.0  # (timers may round)
    assert FINGERPRINT not in request_body(True)

    lat = await asyncio.to_thread(
        latency_pairs, addr, "/x", addr, request_body(False), pairs=20, warmup=2
    )
    assert (lat.errors_direct, lat.errors_proxy) == (0, 0)
    assert len(lat.direct_us) == len(lat.proxy_us) == 20
    assert 0 < pct(lat.direct_us, 50) <= pct(lat.direct_us, 100) == max(lat.direct_us)


def test_generated_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(9))
    path.chmod(0o600)
    env = {f"ARBSTR_{name.upper()}_API_KEY": f"sk-test-{name}-0123456789" for name, *_ in PROVIDERS}
    cfg = load_config(path, env=env)
    assert [p.name for p in cfg.providers] == [name for name, *_ in PROVIDERS]
    assert [r.name for r in cfg.policies.rules] == ["cheap", "fast", "code_generation"]
    assert not cfg.warnings


def test_many_streams_row_at_a_small_scale() -> None:
    """The many-streams row end to end (real upstream and `arbstr serve` processes), small:
    every stream relayed whole, the proxy's fds back to where they started."""
    from bench.many import ManyPlan, many_table_rows, measure_many

    plan = ManyPlan(streams=50, chunks=5, ramp_s=0.3, keepalive_expiry_s=0.5, pin=False)
    res = measure_many(plan)
    for side in ("direct", "proxy"):
        assert (res[side]["ok"], res[side]["errors"], res[side]["chunks"]) == (50, 0, 250)
    assert res["proxy_log"]["error_lines"] == 0
    assert res["fds"]["after_keepalive_expiry"] <= res["fds"]["start"] < res["fds"]["peak"]
    assert res["rss_mb"]["peak"] > 0
    assert set(res["budget"]) == {
        "many_chunk_delay_p99",
        "many_no_errors",
        "many_rss",
        "many_no_fd_growth",
    }
    assert len(many_table_rows(res)) == 5


async def test_the_metrics_scrape_counts_the_requests_served(upstream: int, tmp_path: Path) -> None:
    """The bench's proxy config has metrics on; its scrape at the end counts every request;
    the cost of one observe is measured."""
    from bench.metrics import observe_us
    from bench.run import scrape_metrics

    from harness import ProxyThread

    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(config_toml(upstream))
    cfg_path.chmod(0o600)
    env = {
        f"ARBSTR_{name.upper()}_API_KEY": f"sk-bench-{name}-0123456789abcdef"
        for name, *_ in PROVIDERS
    }
    cfg = load_config(cfg_path, env=env)
    assert cfg.metrics.enabled
    with ProxyThread(cfg) as proxy:
        body = request_body(False)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for _ in range(3):
            await _exchange(reader, writer, body)
        writer.close()
        scraped = await asyncio.to_thread(scrape_metrics, proxy.port)
    assert scraped["requests_counted"] == 3 and scraped["scrape_ms"] > 0
    assert 0 < observe_us(number=200) < 1000


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pinning_survives_an_earlier_phase_pinning_this_process() -> None:
    """The main phase pins the bench process to its load CPU; the many-streams row that
    follows must still put the proxy on a CPU of its own (it ran on the load's core)."""
    first = choose_pinning()
    assert first.proxy is not None and first.load is not None
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {int(first.load)})
        assert choose_pinning() == first
    finally:
        os.sched_setaffinity(0, before)


def test_many_streams_row_warns_when_the_direct_run_itself_misses_the_budget() -> None:
    from bench.many import busy_machine_warning

    quiet = {"direct": {"chunk_delay_ms": {"p99": 1.2}}}
    busy = {"direct": {"chunk_delay_ms": {"p99": 17.85}}}
    assert busy_machine_warning(quiet) == ""
    assert "17.9 ms" in busy_machine_warning(busy)
