"""The many-streams load client: ``n`` concurrent SSE streams, one connection each, on a bare
``asyncio.Protocol`` (uvloop), so that a thousand streams cost the client little CPU.

Each connection sends one streaming request and reads the answer without decoding it: it
finds every chunk's send time (``system_fingerprint`` = ``"t"`` + 20 digits of
``CLOCK_MONOTONIC`` ns, written by ``bench/upstream.py``) in the bytes as they arrive and
records *receive time - send time*, the chunk's relay delay; the stream is done at the
chunked body's terminator after ``data: [DONE]``. Starts are spread evenly over ``ramp_s``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

from bench import aio
from bench.clients import http_request
from bench.upstream import FINGERPRINT

_TS = 20
_FP = len(FINGERPRINT)
_DONE = b"data: [DONE]"
_END = b"\r\n0\r\n\r\n"
_now = time.monotonic_ns


@dataclass(slots=True)
class ManySample:
    streams: int = 0
    ok: int = 0
    errors: int = 0
    chunks: int = 0
    peak_open: int = 0  # streams open at the same time, at most
    ttfb_ms: list[float] = field(default_factory=list)  # connect -> first chunk read
    chunk_delay_ms: list[float] = field(default_factory=list)  # upstream write -> read
    chunk_read_ns: list[int] = field(default_factory=list)  # when each was read (monotonic)
    error_messages: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.errors += 1
        if len(self.error_messages) < 5:
            self.error_messages.append(msg)


class _Stream(asyncio.Protocol):
    """One connection, one streaming request; ``done`` resolves with an error text or None."""

    def __init__(self, request: bytes, expected: int, out: ManySample, open_now: list[int]):
        self._request = request
        self._expected = expected
        self._out = out
        self._open = open_now
        self._buf = bytearray()
        self._head = False
        self._chunks = 0
        self._t0 = 0
        self._transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._open[0] += 1
        self._out.peak_open = max(self._out.peak_open, self._open[0])
        self._t0 = _now()
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open[0] -= 1
        self._finish(f"connection lost after {self._chunks} chunks ({exc})")

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result(error)
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        now = _now()
        buf = self._buf
        buf += data
        if not self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            if head[9:12] != b"200":
                self._finish(f"HTTP {head[9:12].decode()}")
                return
            if b"transfer-encoding: chunked" not in head:
                self._finish("stream not in chunked transfer encoding")
                return
            self._head = True
            del buf[: end + 4]
        delays = self._out.chunk_delay_ms
        reads = self._out.chunk_read_ns
        pos = 0
        while True:
            i = buf.find(FINGERPRINT, pos)
            if i < 0 or i + _FP + _TS > len(buf):
                break
            ts = int(buf[i + _FP : i + _FP + _TS])
            delays.append((now - ts) / 1e6)
            reads.append(now)
            if self._chunks == 0:
                self._out.ttfb_ms.append((now - self._t0) / 1e6)
            self._chunks += 1
            pos = i + _FP + _TS
        if buf.find(_DONE, pos) >= 0 and buf.endswith(_END):
            self._out.chunks += self._chunks
            if self._chunks != self._expected:
                self._finish(f"{self._chunks}/{self._expected} chunks")
            else:
                self._finish(None)
            return
        # keep only what may hold a fingerprint still being received
        keep = max(pos, len(buf) - (_FP + _TS + len(_DONE) + len(_END)))
        del buf[:keep]


async def _one(
    addr: tuple[str, int],
    request: bytes,
    expected: int,
    out: ManySample,
    open_now: list[int],
    start_after_s: float,
    timeout_s: float,
) -> None:
    await asyncio.sleep(start_after_s)
    loop = asyncio.get_running_loop()
    out.streams += 1
    proto: _Stream | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(
                lambda: _Stream(request, expected, out, open_now), *addr
            )
            error = await proto.done
    except (OSError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if proto is not None and proto._transport is not None:
            proto._transport.abort()
    if error is None:
        out.ok += 1
    else:
        out.fail(error)


async def run_many(
    addr: tuple[str, int],
    path: str,
    body: bytes,
    *,
    streams: int,
    expected_chunks: int,
    ramp_s: float,
    timeout_s: float = 60.0,
) -> ManySample:
    """``streams`` streams at once, one connection each, started evenly over ``ramp_s``."""
    out = ManySample()
    request = http_request(path, body, "Connection: close\r\n")
    open_now = [0]
    step = ramp_s / max(1, streams)
    await asyncio.gather(
        *(
            _one(addr, request, expected_chunks, out, open_now, i * step, timeout_s)
            for i in range(streams)
        )
    )
    return out


def run_many_sync(
    addr: tuple[str, int],
    path: str,
    body: bytes,
    *,
    streams: int,
    expected_chunks: int,
    ramp_s: float,
) -> ManySample:
    coro = run_many(
        addr, path, body, streams=streams, expected_chunks=expected_chunks, ramp_s=ramp_s
    )
    return aio.run(coro)
