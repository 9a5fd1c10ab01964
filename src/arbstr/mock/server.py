"""A mock provider's HTTP side: a low-level aiohttp server (no router, no middlewares, no
access log) answering ``/v1/chat/completions``, ``/v1/models`` and ``/v1/balance/info``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Sequence

from aiohttp import web

from arbstr.errors import error_body
from arbstr.mock.replies import (
    JSON,
    SSE_HEADERS,
    BadRequest,
    StreamFrames,
    completion_body,
    encode,
    models_body,
    opening_words,
    parse_chat,
    plan_reply,
    stream_frames,
)
from arbstr.mock.spec import DEFAULT_MOCKS, MockSpec


def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    return web.Response(status=status, body=error_body(message, type_, code), content_type=JSON)


def _authorized(request: web.BaseRequest) -> bool:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _unauthorized() -> web.Response:
    return _error(
        401,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'",
        "invalid_request_error",
        "invalid_api_key",
    )


class MockProvider:
    """One fake provider on loopback. ``start()`` it, then point a client at ``url``."""

    url: str
    requests_served: int

    def __init__(
        self,
        spec: MockSpec,
        *,
        chunk_delay_s: float = 0.0,
        first_byte_delay_s: float = 0.0,
    ) -> None:
        self.spec = spec
        self.chunk_delay_s = chunk_delay_s
        self.first_byte_delay_s = first_byte_delay_s
        self.url = ""
        self.requests_served = 0
        self._runner: web.ServerRunner | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"chatcmpl-{os.urandom(5).hex()}"
        self._opening = {model: opening_words(spec, model) for model in spec.models}
        self._models_body = models_body(spec)
        self._balance_body = encode({"balance": 123456789, "reserved": 0})

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 = an ephemeral port) in the running event loop."""
        if self._runner is not None:
            raise RuntimeError(f"mock provider {self.spec.name} already started")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        bound_port: int = sock.getsockname()[1]
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        shown_host = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown_host}:{bound_port}/v1"

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MockProvider:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"MockProvider({self.spec.name!r}, url={self.url!r})"

    # --- request handling ---------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        method = request.method
        if path == "/v1/chat/completions":
            if method != "POST":
                return _error(405, "Use POST", "invalid_request_error", "method_not_allowed")
            return await self._chat(request)
        if path == "/v1/models":
            if method != "GET":
                return _error(405, "Use GET", "invalid_request_error", "method_not_allowed")
            return web.Response(body=self._models_body, content_type=JSON)
        if path == "/v1/balance/info":
            if not _authorized(request):
                return _unauthorized()
            return web.Response(body=self._balance_body, content_type=JSON)
        return _error(404, f"Unknown path {path}", "invalid_request_error", "not_found")

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        if not _authorized(request):
            return _unauthorized()
        try:
            req = parse_chat(await request.read())
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error", "invalid_request")
        model = req.model
        opening = self._opening.get(model)
        if opening is None:
            return _error(
                404,
                f"The model `{model}` does not exist or is not served by {self.spec.name}",
                "invalid_request_error",
                "model_not_found",
            )
        reply = plan_reply(self.spec, opening, req)
        headers = {"X-Routstr-Cost-Msats": str(reply.total_msats)}
        request_id = request.headers.get("X-Request-Id")
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        completion_id = f"{self._id_prefix}{next(self._ids):x}"
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            frames = stream_frames(completion_id, created, model, reply, include_usage)
            return await self._stream(request, headers, frames)
        if self.first_byte_delay_s > 0:
            await asyncio.sleep(self.first_byte_delay_s)
        body = completion_body(completion_id, created, model, reply)
        self.requests_served += 1
        return web.Response(body=body, content_type=JSON, headers=headers)

    async def _stream(
        self, request: web.BaseRequest, headers: dict[str, str], frames: StreamFrames
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        await resp.prepare(request)
        delay = self.chunk_delay_s
        try:
            await resp.write(b"")  # flush the status line and headers now
            if self.first_byte_delay_s > 0:
                await asyncio.sleep(self.first_byte_delay_s)
            await resp.write(frames.first)
            for frame in frames.paced:
                if delay > 0:
                    await asyncio.sleep(delay)
                await resp.write(frame)
            for frame in frames.rest:
                await resp.write(frame)
            await resp.write_eof()
        except ConnectionError:
            # The client went away mid-stream: stop generating.
            return resp
        self.requests_served += 1
        return resp


async def start_mock_providers(
    specs: Sequence[MockSpec] = DEFAULT_MOCKS,
    *,
    chunk_delay_s: float = 0.0,
    host: str = "127.0.0.1",
) -> list[MockProvider]:
    """Start one :class:`MockProvider` per spec on ephemeral ports; close them when done."""
    providers: list[MockProvider] = []
    try:
        for spec in specs:
            provider = MockProvider(spec, chunk_delay_s=chunk_delay_s)
            await provider.start(host)
            providers.append(provider)
    except BaseException:
        for provider in providers:
            with contextlib.suppress(Exception):
                await provider.close()
        raise
    return providers
