"""Built-in mock providers: fake, OpenAI-compatible LLM endpoints served on loopback.

Used by ``arbstr serve --mock``, by the test suite and as the upstream of the benchmarks,
so the request path is kept lean: a low-level aiohttp server (no router, no middlewares,
no access log), msgspec for decoding and encoding, and per-provider byte templates.

Each provider answers deterministically: the reply text names the provider and the model
and echoes the start of the last user message; one word (plus its following space) is one
token; ``usage`` carries realistic token counts and a Routstr-style cost in sats/msats.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from arbstr.apis.chat import Message, StreamOptions, text_of
from arbstr.errors import error_body

__all__ = [
    "DEFAULT_MOCKS",
    "MockProvider",
    "MockSpec",
    "mock_config_data",
    "start_mock_providers",
]


@dataclass(frozen=True)
class MockSpec:
    """One mock provider: its name, the models it serves and its advertised prices."""

    name: str
    models: tuple[str, ...]
    input_rate: float  # sats per 1000 input tokens
    output_rate: float  # sats per 1000 output tokens
    base_fee: float  # sats per request


_MOCK_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet")

# mock-alpha is cheaper than mock-beta on every rate, hence for every model and request.
DEFAULT_MOCKS: tuple[MockSpec, ...] = (
    MockSpec("mock-alpha", _MOCK_MODELS, input_rate=5.0, output_rate=15.0, base_fee=0.0),
    MockSpec("mock-beta", _MOCK_MODELS, input_rate=8.0, output_rate=24.0, base_fee=1.0),
)


# --- request decoding (only the fields the mock needs; unknown fields are ignored) ----------


class _ChatRequest(msgspec.Struct):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_decoder = msgspec.json.Decoder(_ChatRequest)
_encode = msgspec.json.Encoder().encode

_JSON = "application/json"
_SNIPPET_CHARS = 60
_FINGERPRINT = "fp_arbstr_mock"
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _prompt_tokens(messages: list[Message]) -> int:
    chars = sum(len(text_of(m.content)) for m in messages)
    return max(1, math.ceil(chars / 4)) + 3 * len(messages)


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return text_of(message.content)
    return text_of(messages[-1].content)


def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    return web.Response(status=status, body=error_body(message, type_, code), content_type=_JSON)


class _BadRequest(Exception):
    """Raised while parsing a chat request; becomes a 400 OpenAI-shaped error."""


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
        # Precomputed per-model data: the fixed opening words of every reply, and the
        # /models document.
        self._prefix_words = {
            model: ("Hello", "from", spec.name, f"({model})!", "You", "said:")
            for model in spec.models
        }
        self._models_body = _encode(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": spec.name,
                        "sats_pricing": {
                            "prompt": spec.input_rate / 1000,
                            "completion": spec.output_rate / 1000,
                            "request": spec.base_fee,
                        },
                    }
                    for model in spec.models
                ],
            }
        )
        self._balance_body = _encode({"balance": 123456789, "reserved": 0})

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
            return web.Response(body=self._models_body, content_type=_JSON)
        if path == "/v1/balance/info":
            if not _authorized(request):
                return _unauthorized()
            return web.Response(body=self._balance_body, content_type=_JSON)
        return _error(404, f"Unknown path {path}", "invalid_request_error", "not_found")

    def _parse(self, raw: bytes) -> _ChatRequest:
        try:
            req = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise _BadRequest(f"Invalid request body: {exc}") from None
        if not req.messages:
            raise _BadRequest("'messages' must be a non-empty array")
        for field, value in (
            ("max_tokens", req.max_tokens),
            ("max_completion_tokens", req.max_completion_tokens),
        ):
            if value is not None and value < 1:
                raise _BadRequest(f"'{field}' must be at least 1")
        return req

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        if not _authorized(request):
            return _unauthorized()
        try:
            req = self._parse(await request.read())
        except _BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error", "invalid_request")
        model = req.model
        prefix = self._prefix_words.get(model)
        if prefix is None:
            return _error(
                404,
                f"The model `{model}` does not exist or is not served by {self.spec.name}",
                "invalid_request_error",
                "model_not_found",
            )

        words = [*prefix, *_last_user_text(req.messages)[:_SNIPPET_CHARS].split()]
        tokens = [w + " " for w in words]
        tokens[-1] = words[-1]
        limit = req.max_completion_tokens or req.max_tokens
        finish_reason = "stop"
        if limit is not None and limit < len(tokens):
            del tokens[limit:]
            finish_reason = "length"

        spec = self.spec
        prompt_tokens = _prompt_tokens(req.messages)
        completion_tokens = len(tokens)
        cost_sats = (
            prompt_tokens * spec.input_rate + completion_tokens * spec.output_rate
        ) / 1000 + spec.base_fee
        total_msats = round(cost_sats * 1000)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost_sats": total_msats / 1000,
            "cost": {"total_msats": total_msats},
        }
        headers = {"X-Routstr-Cost-Msats": str(total_msats)}
        request_id = request.headers.get("X-Request-Id")
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        completion_id = f"{self._id_prefix}{next(self._ids):x}"
        created = int(time.time())

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await self._stream(
                request,
                headers,
                completion_id,
                created,
                model,
                tokens,
                finish_reason,
                usage if include_usage else None,
            )

        if self.first_byte_delay_s > 0:
            await asyncio.sleep(self.first_byte_delay_s)
        body = _encode(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(tokens),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "system_fingerprint": _FINGERPRINT,
            }
        )
        self.requests_served += 1
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def _stream(
        self,
        request: web.BaseRequest,
        headers: dict[str, str],
        completion_id: str,
        created: int,
        model: str,
        tokens: list[str],
        finish_reason: str,
        usage: dict[str, Any] | None,
    ) -> web.StreamResponse:
        head = b"".join(
            (
                b'data: {"id":',
                _encode(completion_id),
                b',"object":"chat.completion.chunk","created":',
                str(created).encode(),
                b',"model":',
                _encode(model),
                b',"system_fingerprint":"',
                _FINGERPRINT.encode(),
                b'","choices":[{"index":0,"delta":',
            )
        )
        usage_null = b',"usage":null' if usage is not None else b""
        tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

        resp = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
        await resp.prepare(request)
        delay = self.chunk_delay_s
        try:
            await resp.write(b"")  # flush the status line and headers now
            if self.first_byte_delay_s > 0:
                await asyncio.sleep(self.first_byte_delay_s)
            await resp.write(head + b'{"role":"assistant","content":"","refusal":null}' + tail)
            for token in tokens:
                if delay > 0:
                    await asyncio.sleep(delay)
                await resp.write(head + b'{"content":' + _encode(token) + b"}" + tail)
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(
                head
                + b'{},"logprobs":null,"finish_reason":"'
                + finish_reason.encode()
                + b'"}]'
                + usage_null
                + b"}\n\n"
            )
            if usage is not None:
                await resp.write(
                    b"data: "
                    + _encode(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "system_fingerprint": _FINGERPRINT,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                    + b"\n\n"
                )
            await resp.write(_DONE)
            await resp.write_eof()
        except ConnectionError:
            # The client went away mid-stream: stop generating.
            return resp
        self.requests_served += 1
        return resp


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


def mock_config_data(providers: Sequence[MockProvider]) -> dict[str, Any]:
    """A config dict, shaped like the TOML config file, for the given started mocks."""
    models: list[str] = []
    for provider in providers:
        models.extend(m for m in provider.spec.models if m not in models)
    code_models = [m for m in ("claude-3.5-sonnet", "gpt-4o") if m in models]
    rules: list[dict[str, Any]] = [
        {
            "name": "code_generation",
            "allowed_models": code_models or models,
            "strategy": "lowest_cost",
            "max_sats_per_1k_output": 50,
            "keywords": ["code", "function", "implement"],
        },
        {
            "name": "cheap",
            "allowed_models": [m for m in ("gpt-4o-mini",) if m in models] or models,
            "strategy": "lowest_cost",
            "keywords": [],
        },
    ]
    return {
        "providers": [
            {
                "name": p.spec.name,
                "url": p.url,
                "api_key": f"sk-mock-{p.spec.name}",
                "models": list(p.spec.models),
                "input_rate": p.spec.input_rate,
                "output_rate": p.spec.output_rate,
                "base_fee": p.spec.base_fee,
            }
            for p in providers
        ],
        "policies": {"default_strategy": "lowest_cost", "rules": rules},
    }
