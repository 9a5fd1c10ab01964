"""Cost of Prometheus metrics (``python -m bench.metrics``): microseconds per
``Metrics.observe`` (one request's row; a stream with a fallback, a plain answer) and
milliseconds per scrape with about 1,000 label sets. Prints the best of several rounds."""

from __future__ import annotations

import sys
import timeit

from arbstr.apinames import ApiName
from arbstr.config import config_from_data
from arbstr.records import RequestRecord
from arbstr.server.gateway import Gateway
from arbstr.server.metrics import Metrics, render

MODELS = [f"vendor/model-{i}" for i in range(50)]


def gateway() -> Gateway:
    providers = [
        {"name": f"p{i}", "url": f"http://127.0.0.1:{9000 + i}", "models": MODELS} for i in range(4)
    ]
    data = {"providers": providers, "metrics": {"enabled": True}}
    return Gateway(config_from_data(data, source="<bench>", env={}))


def row(
    provider: str, model: str, *, stream: bool = False, ok: bool = True, api: ApiName = "chat"
) -> RequestRecord:
    return RequestRecord(
        request_id="019ab3c4-0000-7000-8000-000000000000",
        timestamp="2026-12-01T00:00:00.000Z",
        model=model,
        provider=provider,
        policy="default",
        streaming=stream,
        input_tokens=1200,
        output_tokens=300,
        cost_msats=12_345,
        provider_cost_msats=None,
        latency_ms=850,
        ttft_ms=210 if stream else None,
        stream_duration_ms=640 if stream else None,
        success=ok,
        error_status=None if ok else 502,
        error_message=None,
        attempts=2 if stream else 1,
        tier="standard",
        api=api,
    )


def best_us(fn: object, number: int) -> float:
    assert callable(fn)
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def observe_us(number: int = 20_000) -> float:
    """Microseconds per ``observe`` of a plain answer's row (best of 5)."""
    m = gateway().metrics
    assert isinstance(m, Metrics)
    plain: RequestRecord = row("p0", MODELS[0])
    no_failures: dict[str, int] = {}
    return best_us(lambda: m.observe(plain, no_failures, 1), number)


def main() -> int:
    m = gateway().metrics
    assert isinstance(m, Metrics)
    plain, stream = row("p0", MODELS[0]), row("p1", MODELS[1], stream=True)
    no_failures: dict[str, int] = {}
    fallback = {"p0": 1}
    plain_us = best_us(lambda: m.observe(plain, no_failures, 1), 50_000)
    stream_us = best_us(lambda: m.observe(stream, fallback, 2), 50_000)
    print(f"observe, plain answer: {plain_us:.2f} µs")
    print(f"observe, stream after a fallback: {stream_us:.2f} µs")
    for p in ("p0", "p1", "p2", "p3"):
        for model in MODELS:
            for api in ("chat", "responses", "messages"):
                for ok in (True, False):
                    m.observe(row(p, model, ok=ok, api=api), no_failures, 1)
    print(f"series: {len(m.rows)} request label sets, {len(m.calls)} (provider, model, api)")
    body = render(m.snapshot())
    snapshot_ms = best_us(m.snapshot, 20) / 1000
    render_ms = best_us(lambda: render(m.snapshot()), 20) / 1000
    print(f"scrape: snapshot (event loop) {snapshot_ms:.2f} ms, with formatting {render_ms:.1f} ms")
    print(f"scrape body: {len(body) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
