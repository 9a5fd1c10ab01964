"""A scripted fake upstream provider for the proxy's tests.

``FakeUpstream`` is a real HTTP server on 127.0.0.1 (or ``host="::1"``; https with
``ssl_context``; ephemeral port). Each ``POST`` to an API path (chat, ``/embeddings``,
``/completions``, ...: tests/fake_apis.py) pops the next scripted action from its queue
(``push``), or uses ``default`` when the queue is empty;
every request is recorded. ``GET .../models`` lists ``models`` (or ``models_reply``);
``GET .../balance/info`` answers ``balance_reply`` (404 while it is None).

    async with FakeUpstream() as up:
        up.push(Reply(status=503, json={"error": {...}}), Completion("Hi there"))
        ...  # first chat request gets a 503, the second a normal completion
        assert up.chat_requests[1].json["model"] == "gpt-4o"

Actions:
- ``Reply``: a plain response (JSON or raw bytes), any status and headers.
- ``Completion``: a realistic OpenAI completion; SSE (one chunk per word, a usage chunk when
  ``stream_options.include_usage``, ``[DONE]``) when the request has ``"stream": true``.
- ``Stream``: raw byte chunks written exactly as given, then optionally a reset or a hang.
- ``Reset``: status line + headers + some bytes, then the TCP connection is aborted.
- ``Hang``: never answer, until the client goes away.

Disconnects: when the client goes away while a handler is still busy (streaming, sleeping,
hanging), the handler is cancelled at once; the moment (``time.monotonic()``) is stored in
the request's ``disconnected_at`` and in ``disconnect_times``, and ``disconnected`` is set.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec
from aiohttp import web

from fake_apis import api_of, embeddings_json, text_completion_chunks, text_completion_json

__all__ = [
    "DONE",
    "Action",
    "Completion",
    "FakeUpstream",
    "Hang",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Stream",
    "chunk",
    "closed_port_url",
    "completion_events",
    "completion_json",
    "sse",
]

DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A plain response: ``json`` (encoded) or ``body`` (raw bytes) or nothing."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before anything is sent


@dataclass(frozen=True)
class Completion:
    """A realistic OpenAI chat completion, JSON or SSE according to the request."""

    content: str = "Hello world"
    prompt_tokens: int = 10
    completion_tokens: int = 5
    delay_s: float = 0.0  # before anything is sent
    headers: Mapping[str, str] = field(default_factory=dict)
    usage_cost_msats: int | None = None  # adds usage.cost(_sats) and X-Routstr-Cost-Msats
    cached_tokens: int | None = None  # adds usage.prompt_tokens_details.cached_tokens
    model: str | None = None  # default: the request's model
    finish_reason: str = "stop"
    chunk_delay_s: float = 0.0  # streaming only: pause before each chunk after the first


@dataclass(frozen=True)
class Stream:
    """Writes ``events`` exactly as given (nothing is added, not even ``[DONE]``).

    The status line and headers go out at once; then ``first_byte_delay_s``, then the
    events with ``chunk_delay_s`` between them. Afterwards the connection is aborted
    (``then_reset``), or the handler hangs until the client leaves (``then_hang``), or the
    response ends normally. Use :func:`sse`, :func:`chunk`, :func:`completion_events` and
    :data:`DONE` to build events.
    """

    events: Sequence[bytes] = ()
    chunk_delay_s: float = 0.0
    first_byte_delay_s: float = 0.0
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    then_reset: bool = False
    then_hang: bool = False


@dataclass(frozen=True)
class Reset:
    """Sends the status line and headers and ``after_bytes``, then aborts the connection.

    ``content_length`` declares a fixed body length (default: chunked encoding).
    ``send_headers=False`` aborts before anything is sent ("server disconnected").
    """

    after_bytes: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content_length: int | None = None
    send_headers: bool = True
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Accepts the request and never answers (until the client disconnects)."""


Action: TypeAlias = Reply | Completion | Stream | Reset | Hang


# --- recorded requests --------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes
    json: Any  # parsed body, or None when it is not JSON
    received_at: float  # time.monotonic()
    peer: tuple[str, int] | None  # client address; equal peers = a reused connection
    action: Action | None = None  # what was done with it (None for non-chat routes)
    disconnected_at: float | None = None  # when the handler saw the client go away

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and self.json.get("stream") is True

    @property
    def include_usage(self) -> bool:
        if not isinstance(self.json, dict):
            return False
        options = self.json.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


# --- building blocks for responses ---------------------------------------------------------


def sse(data: Any) -> bytes:
    """One SSE event: ``data: <json>\\n\\n`` (bytes and str are used verbatim)."""
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = _encode(data)
    return b"data: " + payload + b"\n\n"


def _usage(
    prompt_tokens: int,
    completion_tokens: int,
    cost_msats: int | None,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
    if cost_msats is not None:
        usage["cost_sats"] = cost_msats / 1000
        usage["cost"] = {"total_msats": cost_msats}
    return usage


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    model: str = "gpt-4o",
    id: str = "chatcmpl-fake",
    created: int = 1700000000,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk``; with ``usage`` it is the usage-only chunk."""
    base: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    if usage is not None:
        base["choices"] = []
        base["usage"] = dict(usage)
        return base
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    base["choices"] = [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    ]
    return base


def _words(content: str) -> list[str]:
    """Split so that each word keeps its following space and the parts join to ``content``."""
    parts = content.split(" ")
    return [p + " " for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def completion_events(
    content: str = "Hello world",
    *,
    model: str = "gpt-4o",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    include_usage: bool = True,
    usage_cost_msats: int | None = None,
    finish_reason: str = "stop",
    done: bool = True,
    id: str = "chatcmpl-fake",
    cached_tokens: int | None = None,
) -> list[bytes]:
    """The SSE events of a complete streamed completion (role chunk, one per word, final)."""
    events = [sse(chunk("", role="assistant", model=model, id=id))]
    events += [sse(chunk(w, model=model, id=id)) for w in _words(content)]
    events.append(sse(chunk(finish_reason=finish_reason, model=model, id=id)))
    if include_usage:
        usage = _usage(prompt_tokens, completion_tokens, usage_cost_msats, cached_tokens)
        events.append(sse(chunk(model=model, id=id, usage=usage)))
    if done:
        events.append(DONE)
    return events


def completion_json(
    content: str = "Hello world",
    *,
    model: str = "gpt-4o",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    usage_cost_msats: int | None = None,
    finish_reason: str = "stop",
    id: str = "chatcmpl-fake",
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens, usage_cost_msats, cached_tokens),
        "system_fingerprint": "fp_fake",
    }


_reserved_sockets: list[socket.socket] = []


def closed_port_url() -> str:
    """A loopback base URL (``http://127.0.0.1:PORT/v1``) where connecting is refused.

    The port stays bound (never listening) for the life of the process, so nothing else
    can take it and the kernel will not hand it out as a client's source port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _reserved_sockets.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


# --- the server ----------------------------------------------------------------------------


class FakeUpstream:
    """A scripted OpenAI-compatible upstream on 127.0.0.1:<ephemeral>."""

    def __init__(
        self,
        *actions: Action,
        default: Action | None = None,
        models: Sequence[str] = ("gpt-4o", "gpt-4o-mini"),
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host  # "::1" listens on IPv6 loopback
        self.ssl_context = ssl_context  # serve https with it
        self.default: Action = default if default is not None else Completion()
        self.models: list[str] = list(models)
        self.models_reply: Reply | None = None  # overrides the GET /models answer
        self.balance_reply: Reply | None = None  # GET /balance/info answer (None: 404)
        self.requests: list[RecordedRequest] = []
        self.disconnect_times: list[float] = []
        self.disconnected = asyncio.Event()
        self.url = ""
        self.port = 0
        self._queue: deque[Action] = deque(actions)
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._in_flight = 0

    # --- scripting and inspection -------------------------------------------------------

    def push(self, *actions: Action) -> None:
        """Queue actions; each chat request pops one (``default`` once the queue is empty)."""
        self._queue.extend(actions)

    @property
    def pending(self) -> int:
        """Queued actions not yet used."""
        return len(self._queue)

    def api_requests(self, suffix: str) -> list[RecordedRequest]:
        """The requests to one API path (``"/embeddings"``, ``"/completions"``, ...)."""
        return [r for r in self.requests if api_of(r.path) == suffix]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def last_request(self) -> RecordedRequest:
        if not self.requests:
            raise AssertionError("the fake upstream has received no request")
        return self.requests[-1]

    @property
    def in_flight(self) -> int:
        """Requests whose handler is still running (streaming, sleeping, hanging)."""
        return self._in_flight

    @property
    def connection_count(self) -> int:
        """Distinct client connections seen (by peer address)."""
        return len({r.peer for r in self.requests})

    async def wait_for_requests(self, n: int = 1, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests (of any route) have arrived."""
        await self._wait_until(lambda: len(self.requests) >= n, timeout_s)
        return self.requests[:]

    async def wait_disconnect(self, n: int = 1, timeout_s: float = 5.0) -> float:
        """Wait for the ``n``-th client disconnect seen mid-response; its monotonic time."""
        await self._wait_until(lambda: len(self.disconnect_times) >= n, timeout_s)
        return self.disconnect_times[n - 1]

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Wait until no handler is running."""
        await self._wait_until(lambda: self._in_flight == 0, timeout_s)

    async def _wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        """Wake every waiter (they re-check their condition on a fresh event)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeUpstream already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(self._server, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{host}:{self.port}/v1"

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        if self._server is not None:
            for conn in self._server.connections:
                conn.force_close()
        await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- request handling ---------------------------------------------------------------

    def _note_disconnect(self, rec: RecordedRequest) -> None:
        if self._closing or rec.disconnected_at is not None:
            return
        rec.disconnected_at = time.monotonic()
        self.disconnect_times.append(rec.disconnected_at)
        self.disconnected.set()
        self._notify()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = msgspec.json.decode(body) if body else None
        except msgspec.DecodeError:
            parsed = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            received_at=time.monotonic(),
            peer=(str(peer[0]), int(peer[1])) if peer else None,
        )
        self.requests.append(rec)
        self._in_flight += 1
        self._notify()
        try:
            return await self._dispatch(request, rec)
        except asyncio.CancelledError:
            self._note_disconnect(rec)
            raise
        finally:
            self._in_flight -= 1
            self._notify()

    async def _dispatch(self, request: web.BaseRequest, rec: RecordedRequest) -> web.StreamResponse:
        if rec.path.endswith("/models") and rec.method == "GET":
            if self.models_reply is not None:
                return await self._reply(self.models_reply)
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return await self._reply(Reply(json={"object": "list", "data": data}))
        if rec.path.endswith("/balance/info") and self.balance_reply is not None:
            return await self._reply(self.balance_reply)
        if api_of(rec.path) is None:
            return await self._reply(
                Reply(
                    status=404,
                    json={
                        "error": {
                            "message": f"no route {rec.method} {rec.path}",
                            "type": "invalid_request_error",
                            "code": "not_found",
                        }
                    },
                )
            )
        action = self._queue.popleft() if self._queue else self.default
        rec.action = action
        try:
            if isinstance(action, Reply):
                return await self._reply(action)
            if isinstance(action, Completion):
                return await self._completion(request, rec, action)
            if isinstance(action, Stream):
                return await self._stream(request, action)
            if isinstance(action, Reset):
                return await self._reset(request, action)
            await asyncio.Event().wait()  # Hang: until cancelled by the client going away
            raise AssertionError("unreachable")
        except ConnectionError:
            # A write hit the closed connection before the cancellation arrived.
            self._note_disconnect(rec)
            return web.Response()

    async def _reply(self, action: Reply) -> web.Response:
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
        headers = dict(action.headers)
        if action.json is not None:
            headers.setdefault("Content-Type", "application/json")
            return web.Response(status=action.status, body=_encode(action.json), headers=headers)
        return web.Response(status=action.status, body=action.body or b"", headers=headers)

    async def _completion(
        self, request: web.BaseRequest, rec: RecordedRequest, action: Completion
    ) -> web.StreamResponse:
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
        requested = rec.json.get("model") if isinstance(rec.json, dict) else None
        model = action.model or (requested if isinstance(requested, str) else "gpt-4o")
        headers = dict(action.headers)
        if action.usage_cost_msats is not None:
            headers.setdefault("X-Routstr-Cost-Msats", str(action.usage_cost_msats))
        if "x-request-id" in rec.headers:
            headers.setdefault("X-Request-Id", rec.headers["x-request-id"])
        api = api_of(rec.path)
        if api == "/embeddings":
            inputs = rec.json.get("input") if isinstance(rec.json, dict) else None
            n = (
                len(inputs)
                if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
                else 1
            )
            body = embeddings_json(model, n, action.prompt_tokens, action.usage_cost_msats)
            headers.setdefault("Content-Type", "application/json")
            return web.Response(body=_encode(body), headers=headers)
        if api == "/completions":
            args = (action.content, model, action.prompt_tokens, action.completion_tokens)
            if not rec.stream:
                body = text_completion_json(*args, action.usage_cost_msats)
                headers.setdefault("Content-Type", "application/json")
                return web.Response(body=_encode(body), headers=headers)
            chunks = text_completion_chunks(*args, action.usage_cost_msats, rec.include_usage)
            events = [sse(c) for c in chunks] + [DONE]
            return await self._stream(
                request, Stream(events, chunk_delay_s=action.chunk_delay_s, headers=headers)
            )
        if not rec.stream:
            body = completion_json(
                action.content,
                model=model,
                prompt_tokens=action.prompt_tokens,
                completion_tokens=action.completion_tokens,
                usage_cost_msats=action.usage_cost_msats,
                finish_reason=action.finish_reason,
                cached_tokens=action.cached_tokens,
            )
            headers.setdefault("Content-Type", "application/json")
            return web.Response(body=_encode(body), headers=headers)
        events = completion_events(
            action.content,
            model=model,
            prompt_tokens=action.prompt_tokens,
            completion_tokens=action.completion_tokens,
            include_usage=rec.include_usage,
            usage_cost_msats=action.usage_cost_msats,
            finish_reason=action.finish_reason,
            cached_tokens=action.cached_tokens,
        )
        return await self._stream(
            request, Stream(events, chunk_delay_s=action.chunk_delay_s, headers=headers)
        )

    async def _stream(self, request: web.BaseRequest, action: Stream) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        headers.update(action.headers)
        resp = web.StreamResponse(status=action.status, headers=headers)
        await resp.prepare(request)
        await resp.write(b"")  # flush the status line and headers now
        if action.first_byte_delay_s > 0:
            await asyncio.sleep(action.first_byte_delay_s)
        for i, event in enumerate(action.events):
            if i and action.chunk_delay_s > 0:
                await asyncio.sleep(action.chunk_delay_s)
            await resp.write(event)
        if action.then_reset:
            _abort(request)
            return resp
        if action.then_hang:
            await asyncio.Event().wait()
        await resp.write_eof()
        return resp

    async def _reset(self, request: web.BaseRequest, action: Reset) -> web.StreamResponse:
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
        resp = web.StreamResponse(status=action.status, headers=dict(action.headers))
        if not action.send_headers:
            _abort(request)
            return resp
        if action.content_length is not None:
            resp.content_length = action.content_length
        await resp.prepare(request)
        await resp.write(action.after_bytes)
        _abort(request)
        return resp


def _abort(request: web.BaseRequest) -> None:
    """Reset the TCP connection: bytes already written stay readable, then ECONNRESET."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on with a zero timeout: close() sends a RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
