"""Light load clients for what wrk does not measure well.

* :func:`latency_pairs` — concurrency 1, non-streaming: two keep-alive blocking sockets, one to
  the upstream and one to the proxy, requests strictly alternated (direct, proxied, direct…)
  so that drift on the machine hits both sides equally. Nanosecond timestamps around
  ``sendall`` … last byte; a few microseconds of Python per request, the same on both sides.
* :func:`run_streams` — streaming at a given concurrency on asyncio (uvloop): time from
  sending the request to the first SSE chunk, and for every chunk the delay between the
  upstream writing it (timestamp in the chunk, ``CLOCK_MONOTONIC``) and the client reading
  it. Each SSE event of the mock upstream is one HTTP chunk; a relayed HTTP chunk that holds
  more than one content event means chunks were batched.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

from bench import aio
from bench.upstream import FINGERPRINT

_TS_DIGITS = 20
_FP_LEN = len(FINGERPRINT)


def http_request(path: str, body: bytes, extra_headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra_headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(slots=True)
class LatencySample:
    direct_us: list[float] = field(default_factory=list)
    proxy_us: list[float] = field(default_factory=list)
    proxy_overhead_header_ms: list[float] = field(default_factory=list)  # x-arbstr-overhead-ms
    errors_direct: int = 0
    errors_proxy: int = 0


def _header(head: bytes, name: bytes) -> bytes | None:
    i = head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    j = head.find(b"\r\n", i + 2)
    return head[i + len(name) + 3 : j if j >= 0 else len(head)].strip()


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes, int]:
    """Send one request and read one Content-Length response: (status, head, ns)."""
    t0 = time.perf_counter_ns()
    sock.sendall(request)
    data = b""
    need = -1
    end = -1
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
        if need < 0:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                continue
            length = _header(data[:end].lower(), b"content-length")
            if length is None:
                raise ConnectionError("response without content-length")
            need = end + 4 + int(length)
        if len(data) >= need:
            break
    ns = time.perf_counter_ns() - t0
    return int(data[9:12]), data[:end].lower(), ns


def _connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def latency_pairs(
    direct: tuple[str, int],
    direct_path: str,
    proxy: tuple[str, int],
    body: bytes,
    *,
    pairs: int,
    warmup: int,
) -> LatencySample:
    """Alternate ``pairs`` direct and proxied requests (after ``warmup`` unmeasured pairs)."""
    out = LatencySample()
    d_req = http_request(direct_path, body)
    p_req = http_request("/v1/chat/completions", body)
    ds, ps = _connect(direct), _connect(proxy)
    try:
        for i in range(warmup + pairs):
            status, _, ns = _exchange(ds, d_req)
            if i >= warmup:
                if status == 200:
                    out.direct_us.append(ns / 1000.0)
                else:
                    out.errors_direct += 1
            status, head, ns = _exchange(ps, p_req)
            if i >= warmup:
                if status == 200:
                    out.proxy_us.append(ns / 1000.0)
                    ov = _header(head, b"x-arbstr-overhead-ms")
                    if ov is not None:
                        out.proxy_overhead_header_ms.append(float(ov))
                else:
                    out.errors_proxy += 1
    finally:
        ds.close()
        ps.close()
    return out


@dataclass(slots=True)
class StreamSample:
    streams: int = 0
    ok: int = 0
    errors: int = 0
    chunks: int = 0
    batched_http_chunks: int = 0  # HTTP chunks carrying more than one content event
    ttfb_ms: list[float] = field(default_factory=list)  # request sent -> first SSE chunk
    chunk_delay_ms: list[float] = field(default_factory=list)  # upstream write -> client read
    error_messages: list[str] = field(default_factory=list)


async def _one_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    expected_chunks: int,
    out: StreamSample,
) -> None:
    now_ns = time.monotonic_ns
    t0 = now_ns()
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if head[9:12] != b"200":
        length = _header(head, b"content-length")
        if length is not None:
            await reader.readexactly(int(length))
        raise RuntimeError(f"HTTP {head[9:12].decode()}")
    if _header(head, b"transfer-encoding") != b"chunked":
        raise RuntimeError("stream not in chunked transfer encoding")
    first = True
    chunks = 0
    done = False
    delays = out.chunk_delay_ms
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            await reader.readexactly(2)
            break
        payload = await reader.readexactly(size + 2)
        now = now_ns()
        events = 0
        i = payload.find(FINGERPRINT)
        while i >= 0:
            ts = int(payload[i + _FP_LEN : i + _FP_LEN + _TS_DIGITS])
            delays.append((now - ts) / 1e6)
            if first:
                out.ttfb_ms.append((now - t0) / 1e6)
                first = False
            events += 1
            i = payload.find(FINGERPRINT, i + _FP_LEN)
        chunks += events
        if events > 1:
            out.batched_http_chunks += 1
        if b"data: [DONE]" in payload:
            done = True
    out.chunks += chunks
    if chunks != expected_chunks or not done:
        raise RuntimeError(
            f"{chunks}/{expected_chunks} chunks, [DONE] {'seen' if done else 'missing'}"
        )


async def _stream_worker(
    addr: tuple[str, int],
    request: bytes,
    expected_chunks: int,
    todo: list[int],
    out: StreamSample,
    start_after_s: float,
) -> None:
    reader, writer = await asyncio.open_connection(*addr)
    await asyncio.sleep(start_after_s)
    try:
        while todo:
            todo.pop()
            out.streams += 1
            try:
                await _one_stream(reader, writer, request, expected_chunks, out)
                out.ok += 1
            except (RuntimeError, ValueError, OSError, asyncio.IncompleteReadError) as exc:
                out.errors += 1
                if len(out.error_messages) < 5:
                    out.error_messages.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(*addr)
    finally:
        writer.close()


async def run_streams(
    addr: tuple[str, int],
    path: str,
    body: bytes,
    *,
    streams: int,
    concurrency: int,
    expected_chunks: int,
    stagger_s: float = 0.0,
) -> StreamSample:
    """``concurrency`` clients, each running streams back to back until ``streams`` are done.
    Client ``i`` starts after ``i * stagger_s``: with the stream's duration over the
    concurrency, arrivals are spread evenly, as from independent users; with 0 every client
    starts at once and, the mock's timing being exact, they stay in lockstep (a burst of
    ``concurrency`` requests, then of first chunks, then of every later chunk)."""
    out = StreamSample()
    request = http_request(path, body)
    todo = list(range(streams))
    await asyncio.gather(
        *(
            _stream_worker(addr, request, expected_chunks, todo, out, i * stagger_s)
            for i in range(concurrency)
        )
    )
    return out


def run_streams_sync(
    addr: tuple[str, int],
    path: str,
    body: bytes,
    *,
    streams: int,
    concurrency: int,
    expected_chunks: int,
    stagger_s: float = 0.0,
) -> StreamSample:
    coro = run_streams(
        addr,
        path,
        body,
        streams=streams,
        concurrency=concurrency,
        expected_chunks=expected_chunks,
        stagger_s=stagger_s,
    )
    return aio.run(coro)
