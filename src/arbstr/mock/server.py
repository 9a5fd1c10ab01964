"""A mock provider's HTTP side: a low-level aiohttp server (no router, no middlewares, no
access log) answering the five client APIs natively (``/v1/chat/completions``,
``/v1/responses``, ``/v1/messages`` and ``/v1/messages/count_tokens``, ``/v1/embeddings``,
``/v1/completions``), ``/v1/models`` and ``/v1/balance/info``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from arbstr import errors
from arbstr.mock import anthropic_replies
from arbstr.mock.anthropic_replies import answer_count_tokens, answer_messages
from arbstr.mock.common import JSON, SSE_HEADERS, Answer, Ctx, MockError, StreamFrames, encode
from arbstr.mock.openai_replies import answer_completions, answer_embeddings
from arbstr.mock.replies import answer_chat, models_body, opening_words
from arbstr.mock.responses_replies import answer_responses
from arbstr.mock.spec import DEFAULT_MOCKS, MockSpec


def _openai_error(exc: MockError) -> bytes:
    return errors.error_body(exc.message, exc.type, exc.code)


def _bearer(headers: Mapping[str, str]) -> bool:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _bearer_or_api_key(headers: Mapping[str, str]) -> bool:
    return bool(headers.get("x-api-key", "").strip()) or _bearer(headers)


_OPENAI_401 = MockError(
    401,
    "invalid_request_error",
    "invalid_api_key",
    "Missing or invalid API key: send 'Authorization: Bearer <key>'",
)
_ANTHROPIC_401 = MockError(
    401,
    "authentication_error",
    "invalid_api_key",
    "invalid x-api-key: send 'x-api-key: <key>' or 'Authorization: Bearer <key>'",
)


@dataclass(frozen=True, slots=True)
class _Route:
    answer: Callable[[Ctx, bytes], Answer]
    authorized: Callable[[Mapping[str, str]], bool]
    unauthorized: MockError
    error_body: Callable[[MockError], bytes]


_OPENAI = (_bearer, _OPENAI_401, _openai_error)
_ANTHROPIC = (_bearer_or_api_key, _ANTHROPIC_401, anthropic_replies.error_body)
_ROUTES = {
    "/v1/chat/completions": _Route(answer_chat, *_OPENAI),
    "/v1/responses": _Route(answer_responses, *_OPENAI),
    "/v1/embeddings": _Route(answer_embeddings, *_OPENAI),
    "/v1/completions": _Route(answer_completions, *_OPENAI),
    "/v1/messages": _Route(answer_messages, *_ANTHROPIC),
    "/v1/messages/count_tokens": _Route(answer_count_tokens, *_ANTHROPIC),
}


def _error(exc: MockError, shape: Callable[[MockError], bytes] = _openai_error) -> web.Response:
    return web.Response(status=exc.status, body=shape(exc), content_type=JSON)


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
        openings = {model: opening_words(spec, model) for model in spec.models}
        self._ctx = Ctx(spec, openings, itertools.count(1), os.urandom(5).hex(), time.time)
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
        route = _ROUTES.get(path)
        if route is not None:
            if method != "POST":
                exc = MockError(405, "invalid_request_error", "method_not_allowed", "Use POST")
                return _error(exc, route.error_body)
            return await self._answer(request, route)
        if path == "/v1/models":
            if method != "GET":
                exc = MockError(405, "invalid_request_error", "method_not_allowed", "Use GET")
                return _error(exc)
            return web.Response(body=self._models_body, content_type=JSON)
        if path == "/v1/balance/info":
            if not _bearer(request.headers):
                return _error(_OPENAI_401)
            return web.Response(body=self._balance_body, content_type=JSON)
        return _error(MockError(404, "invalid_request_error", "not_found", f"Unknown path {path}"))

    async def _answer(self, request: web.BaseRequest, route: _Route) -> web.StreamResponse:
        if not route.authorized(request.headers):
            return _error(route.unauthorized, route.error_body)
        try:
            answer = route.answer(self._ctx, await request.read())
        except MockError as exc:
            return _error(exc, route.error_body)
        headers: dict[str, str] = {}
        if answer.total_msats is not None:
            headers["X-Routstr-Cost-Msats"] = str(answer.total_msats)
        request_id = request.headers.get("X-Request-Id")
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        if answer.frames is not None:
            return await self._stream(request, headers, answer.frames)
        if self.first_byte_delay_s > 0:
            await asyncio.sleep(self.first_byte_delay_s)
        self.requests_served += 1
        return web.Response(body=answer.body, content_type=JSON, headers=headers)

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
