"""A fast mock OpenAI upstream for the benchmark: it must never be the bottleneck.

A bare ``asyncio.Protocol`` HTTP/1.1 server (uvloop when available) with keep-alive and
pre-encoded answers:

* ``POST`` with ``"stream": true`` in the body: ``text/event-stream`` in chunked transfer
  encoding, the response head at once, then ``--chunks`` content chunks, the first after
  ``--first-byte-ms`` and the next ones every ``--chunk-ms`` (or a random gap up to
  ``--chunk-ms-max``, so that many streams do not tick in lockstep); a usage-only chunk when the
  body asks for ``include_usage``; then ``data: [DONE]``. Each SSE event is one HTTP chunk
  and carries the time it was sent (``CLOCK_MONOTONIC`` nanoseconds, shared by every
  process on the machine) in ``system_fingerprint`` as ``"t<20 digits>"``, so that a client
  can measure how long each chunk took to reach it.
* any other ``POST``: a ``chat.completion`` JSON body with ``usage``, after
  ``--json-delay-ms`` (0 by default: answered in the same event-loop turn).
* ``GET``: ``{"status":"ok"}`` (readiness probe).

Request paths are ignored, so several configured "providers" can point at one server
(``http://127.0.0.1:PORT/alpha/v1``, ``.../beta/v1``…). Run as
``python -m bench.upstream --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from bench import aio

__all__ = [
    "CHUNK_WORD",
    "FINGERPRINT",
    "Settings",
    "UpstreamProtocol",
    "json_body",
    "serve",
    "start_server",
]

FINGERPRINT = b'"system_fingerprint":"t'  # followed by 20 digits: send time, monotonic ns
CHUNK_WORD = "tok "  # the content of every streamed chunk (one token)
_TS_DIGITS = 20
_MAX_HEAD = 64 * 1024

_monotonic_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class Settings:
    first_byte_s: float = 0.02  # streams: delay before the first chunk
    chunk_interval_s: float = 0.01  # streams: delay between chunks
    chunk_interval_max_s: float = 0.0  # above chunk_interval_s: each gap uniform in between
    chunks: int = 20  # streams: content chunks per response
    json_delay_s: float = 0.0  # non-streaming: delay before the answer
    completion_tokens: int = 20  # non-streaming: words in the answer


def json_body(settings: Settings) -> bytes:
    """The non-streaming answer: a realistic ``chat.completion`` (about 600 bytes)."""
    words = settings.completion_tokens
    return json.dumps(
        {
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": (CHUNK_WORD * words).rstrip(),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 25,
                "completion_tokens": words,
                "total_tokens": 25 + words,
            },
        },
        separators=(",", ":"),
    ).encode()


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class _Answers:
    """Every byte the server sends, encoded once."""

    def __init__(self, settings: Settings) -> None:
        body = json_body(settings)
        self.json = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        ok = b'{"status":"ok"}'
        self.ok = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(ok), ok)
        )
        bad = b'{"error":{"message":"bad request","type":"invalid_request_error","code":null}}'
        self.bad = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(bad), bad)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        # One content chunk, split around its timestamp: prefix + 20 digits + suffix.
        event_head = (
            b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",'
            b'"created":1700000000,"model":"gpt-4o",' + FINGERPRINT
        )
        event_tail = (
            b'","choices":[{"index":0,"delta":{"content":"'
            + CHUNK_WORD.encode()
            + b'"},"finish_reason":null}]}\n\n'
        )
        size = len(event_head) + _TS_DIGITS + len(event_tail)
        self.chunk_prefix = b"%x\r\n%s" % (size, event_head)
        self.chunk_suffix = event_tail + b"\r\n"
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o",
            "choices": [],
            "usage": {
                "prompt_tokens": 25,
                "completion_tokens": settings.chunks,
                "total_tokens": 25 + settings.chunks,
            },
        }
        usage_event = b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
        done = _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.end_with_usage = _chunked(usage_event) + done
        self.end = done


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Requests are handled in order; while a stream is being sent,
    later requests on the connection wait in the buffer."""

    __slots__ = ("_answers", "_buf", "_loop", "_settings", "_stream", "_timer", "_transport")

    def __init__(self, settings: Settings, answers: _Answers) -> None:
        self._settings = settings
        self._answers = answers
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._stream: _Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses; both set TCP_NODELAY.)
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
        elif self._stream is None and self._timer is None:
            # Common case: one whole request in one read, nothing buffered.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                length = _content_length(data, end)
                if length >= 0 and len(data) == end + 4 + length:
                    self._dispatch(data, end, data[end + 4 :])
                    return
            buf += data
        else:
            buf += data
        self._drain()

    def _drain(self) -> None:
        buf = self._buf
        while buf and self._stream is None and self._timer is None and self._transport:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail()
                return
            length = _content_length(buf, end)
            if length < 0:
                self._fail()
                return
            total = end + 4 + length
            if len(buf) < total:
                return
            head = bytes(buf[: end + 4])
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            self._dispatch(head, end, body)

    def _dispatch(self, head: bytes, end: int, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        answers = self._answers
        if not head.startswith(b"POST "):
            transport.write(answers.ok)
            return
        if b'"stream":true' in body or b'"stream": true' in body:
            usage = b'"include_usage":true' in body or b'"include_usage": true' in body
            transport.write(answers.stream_head)
            self._stream = _Stream(
                self._settings.chunks, answers.end_with_usage if usage else answers.end
            )
            self._timer = self._loop.call_later(self._settings.first_byte_s, self._tick)
            return
        delay = self._settings.json_delay_s
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._send_json)
        else:
            transport.write(answers.json)

    def _send_json(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.write(self._answers.json)
            self._drain()

    def _tick(self) -> None:
        self._timer = None
        transport, stream = self._transport, self._stream
        if transport is None or stream is None:
            return
        a = self._answers
        ts = b"%020d" % _monotonic_ns()
        stream.left -= 1
        if stream.left > 0:
            transport.write(a.chunk_prefix + ts + a.chunk_suffix)
            s = self._settings
            gap = s.chunk_interval_s
            if s.chunk_interval_max_s > gap:
                gap += random.random() * (s.chunk_interval_max_s - gap)
            self._timer = self._loop.call_later(gap, self._tick)
            return
        transport.write(a.chunk_prefix + ts + a.chunk_suffix + stream.end)
        self._stream = None
        self._drain()

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.write(self._answers.bad)
            self._transport.close()
            self._transport = None
        self._buf.clear()


@dataclass(slots=True)
class _Stream:
    left: int
    end: bytes


def _content_length(buf: bytes | bytearray, end: int) -> int:
    """The request's Content-Length (0 when absent), -1 when unusable (e.g. chunked)."""
    head = bytes(buf[:end]).lower()
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return -1 if b"\r\ntransfer-encoding:" in head else 0
    j = head.find(b"\r\n", i + 2)
    try:
        return int(head[i + 17 : j if j >= 0 else len(head)])
    except ValueError:
        return -1


async def start_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Start the upstream on the running loop; ``server.sockets[0]`` has the bound port."""
    loop = asyncio.get_running_loop()
    answers = _Answers(settings)
    factory: Callable[[], asyncio.Protocol] = lambda: UpstreamProtocol(settings, answers)  # noqa: E731
    return await loop.create_server(factory, host, port, backlog=1024, reuse_address=True)


async def serve(settings: Settings, host: str, port: int) -> None:
    server = await start_server(settings, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"bench upstream listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--first-byte-ms", type=float, default=20.0, help="streams: first chunk delay")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="streams: delay between chunks")
    p.add_argument(
        "--chunk-ms-max",
        type=float,
        default=0.0,
        help="streams: when above --chunk-ms, each gap is uniform between the two",
    )
    p.add_argument("--chunks", type=int, default=20, help="streams: content chunks")
    p.add_argument("--json-delay-ms", type=float, default=0.0, help="non-streaming delay")
    a = p.parse_args(argv)
    if a.chunks < 1:
        p.error("--chunks must be at least 1")
    settings = Settings(
        first_byte_s=a.first_byte_ms / 1000.0,
        chunk_interval_s=a.chunk_ms / 1000.0,
        chunk_interval_max_s=a.chunk_ms_max / 1000.0,
        chunks=a.chunks,
        json_delay_s=a.json_delay_ms / 1000.0,
    )
    aio.run(serve(settings, a.host, a.port))


if __name__ == "__main__":
    main()
