"""A fake Routstr node that bills like routstr-core 0.4.5 does, for end-to-end billing tests.

``FakeRoutstr`` is an aiohttp server on 127.0.0.1 (ephemeral port) in a thread with its own
event loop, so that sync clients (the ``openai`` SDK), async tests and the proxy's thread can
all reach it; its knobs are plain method calls from the test thread.

    with FakeRoutstr([NodeModel("gpt-4o", 2.5e-6, 1e-5)], keys={"sk-a": 10_000_000}) as node:
        node.push(Plan(completion_tokens=20, cached_tokens=60, prompt_tokens=69))
        ...  # a chat request through arbstr
        assert node.requests[-1].charged_msats == 10_000_000 - node.balance("sk-a")

Prices are USD per token converted at ``btc_usd`` into ``sats_pricing`` (sats per token);
``set_btc_usd`` re-prices (what a real node does every ~120 s). Each chat request reserves
the worst case (``max_cost``, less the unused part of ``max_completion_cost`` when the request
has ``max_tokens``) and answers 402 when the key's free balance cannot cover it. It bills the
upstream's reported USD cost when there is one (``upstream_cost_usd``), else the token formula
``prompt x uncached + input_cache_read x cached + completion x completion_tokens``; the
``request`` price is published but never billed. The whole planned answer is billed when the
node starts answering, so a client that times out or leaves mid-stream pays in full; failed
answers (``Plan(status=...)``, 4xx, 402) are free. The arithmetic, exact to the millisat,
is in fake_routstr_pricing.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from fake_routstr_pricing import NodeModel, SatsPricing, usd_msats
from fake_upstream import DONE, chunk, completion_json, sse

__all__ = ["FakeRoutstr", "NodeModel", "NodeRequest", "Plan", "SatsPricing", "usd_msats"]


@dataclass(frozen=True)
class Plan:
    """How the node answers one chat request (``FakeRoutstr.push``, or its ``default``).

    Streams send one content chunk per completion token. ``status`` other than 200 is an
    upstream failure (nothing charged). ``delay_s`` passes before the first byte; the charge
    is already made by then."""

    completion_tokens: int = 12  # at most the request's max_tokens
    prompt_tokens: int | None = None  # default: message characters / 4, rounded up
    cached_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens
    upstream_cost_usd: float | None = None  # overrides the model's switch for this request
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    status: int = 200
    content: str = "tok"


@dataclass
class NodeRequest:
    """One chat request as the node saw and billed it (balances in msats)."""

    key: str
    model: str | None  # as sent
    served_model: str | None  # the listed id it resolved to
    max_tokens: int | None
    stream: bool
    status: int = 0
    reserved_msats: int = 0
    charged_msats: int = 0
    formula_msats: int = 0  # what the token formula gives, whatever was billed
    balance_before: int = 0
    balance_after: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    btc_usd: float = 0.0
    received_at: float = field(default_factory=time.monotonic)
    disconnected: bool = False  # the client left before the answer was complete
    finished: bool = False  # the whole answer was written


def _error(status: int, message: str, type_: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "code": code}}
    return web.json_response(body, status=status)


def _prompt_chars(body: Mapping[str, Any]) -> int:
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class FakeRoutstr:
    """A Routstr node on 127.0.0.1 in its own thread; see the module docstring."""

    def __init__(
        self,
        models: Sequence[NodeModel],
        *,
        keys: Mapping[str, int] | None = None,
        btc_usd: float = 100_000.0,
        root: str = "",
    ) -> None:
        self.models: list[NodeModel] = list(models)
        self.default = Plan()
        self.requests: list[NodeRequest] = []  # chat requests, in arrival order
        self.models_calls = 0
        self.root = root.rstrip("/")
        self.port = 0
        self._btc_usd = btc_usd
        self._balances: dict[str, int] = dict(keys or {})
        self._reserved: dict[str, int] = {}
        self._plans: deque[Plan] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    # --- knobs and inspection (any thread) ------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a provider entry uses: ``http://127.0.0.1:PORT{root}/v1``."""
        return f"http://127.0.0.1:{self.port}{self.root}/v1"

    @property
    def btc_usd(self) -> float:
        return self._btc_usd

    def set_btc_usd(self, rate: float) -> None:
        """Re-price: /models shows, and later requests bill at, the new rate."""
        with self._lock:
            self._btc_usd = rate

    def pricing(self, model_id: str) -> SatsPricing:
        return SatsPricing.of(self._model(model_id), self._btc_usd)

    def set_balance(self, key: str, msats: int) -> None:
        with self._lock:
            self._balances[key] = msats

    def balance(self, key: str) -> int:
        with self._lock:
            return self._balances[key]

    def push(self, *plans: Plan) -> None:
        """Queue plans; each chat request takes one (``default`` once the queue is empty)."""
        with self._lock:
            self._plans.extend(plans)

    def charged_msats(self, key: str | None = None) -> int:
        """Total billed, for one key or all."""
        return sum(r.charged_msats for r in self.requests if key is None or r.key == key)

    def wait_requests(self, n: int, timeout_s: float = 5.0) -> list[NodeRequest]:
        """Block until at least ``n`` chat requests arrived (and were billed)."""
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < n or any(r.status == 0 for r in self.requests):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {n} requests reached the node")
            time.sleep(0.005)
        return self.requests[:]

    def _model(self, requested: str) -> NodeModel:
        for m in self.models:
            if requested in (m.id, m.canonical_slug):
                return m
        raise KeyError(requested)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeRoutstr:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeRoutstr:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _start(self) -> None:
        app = web.Application()
        v1 = f"{self.root}/v1"
        app.router.add_post(f"{v1}/chat/completions", self._chat)
        app.router.add_get(f"{v1}/models", self._models)
        app.router.add_get(f"{v1}/balance/info", self._balance_info)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    # --- routes ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        data = [
            {
                "id": m.id,
                "canonical_slug": m.canonical_slug,
                "name": m.id,
                "context_length": m.context_length,
                "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
                "top_provider": {
                    "context_length": m.context_length,
                    "max_completion_tokens": m.max_completion_tokens,
                },
                "sats_pricing": self.pricing(m.id).as_json(),
            }
            for m in self.models
        ]
        return web.json_response({"data": data})

    def _key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip()
        return key if auth.startswith("Bearer sk-") and key in self._balances else None

    async def _balance_info(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if key is None:
            return _error(401, "Invalid API key", "invalid_request_error", "invalid_api_key")
        with self._lock:
            balance, reserved = self._balances[key], self._reserved.get(key, 0)
        return web.json_response({"api_key": key, "balance": balance, "reserved": reserved})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        model = body.get("model") if isinstance(body.get("model"), str) else None
        rec = NodeRequest(
            key=request.headers.get("Authorization", "").removeprefix("Bearer "),
            model=model,
            served_model=None,
            max_tokens=_max_tokens(body),
            stream=body.get("stream") is True,
        )
        self.requests.append(rec)
        try:
            resp = await self._answer(request, body, rec)
        except asyncio.CancelledError:
            rec.disconnected = True
            raise
        except ConnectionError:  # a write hit the closed connection before the cancellation
            rec.disconnected = True
            return web.Response()
        finally:
            if rec.status == 200:  # the reservation is held while answering
                with self._lock:
                    self._reserved[rec.key] -= rec.reserved_msats
        rec.finished = True
        return resp

    def _refuse(self, rec: NodeRequest, resp: web.Response) -> web.Response:
        rec.status = resp.status
        return resp

    async def _answer(
        self, request: web.Request, body: dict[str, Any], rec: NodeRequest
    ) -> web.StreamResponse:
        key = self._key(request)
        if key is None:
            resp = _error(401, "Invalid API key", "invalid_request_error", "invalid_api_key")
            return self._refuse(rec, resp)
        try:
            m = self._model(rec.model or "")
        except KeyError:
            msg = f"Model '{rec.model}' not found"
            return self._refuse(rec, _error(400, msg, "invalid_request_error", "model_not_found"))
        rec.served_model = m.id
        with self._lock:
            plan = self._plans.popleft() if self._plans else self.default
            rate = self._btc_usd
            pricing = SatsPricing.of(m, rate)
            reserve = pricing.reservation_msats(rec.max_tokens)
            balance = self._balances[key]
            free = balance - self._reserved.get(key, 0)
            rec.balance_before = rec.balance_after = balance
            rec.reserved_msats, rec.btc_usd = reserve, rate
            if free < reserve:
                msg = f"Insufficient balance: {reserve} mSats required, {free} available."
                resp = _error(402, msg, "insufficient_balance", "insufficient_balance")
                return self._refuse(rec, resp)
            if plan.status != 200:
                resp = _error(plan.status, "upstream failed", "upstream_error", "upstream_error")
                return self._refuse(rec, resp)
            self._bill(rec, m, plan, pricing, body)
            self._balances[key] = rec.balance_after = balance - rec.charged_msats
            self._reserved[key] = self._reserved.get(key, 0) + reserve
            rec.status = 200
        if plan.delay_s > 0:
            await asyncio.sleep(plan.delay_s)
        usage = self._usage(rec)
        if rec.stream:
            return await self._stream(request, rec, m, plan, body, usage)
        reply = completion_json(
            " ".join([plan.content] * rec.completion_tokens), model=m.canonical_slug
        )
        reply["usage"] = usage
        headers = {"X-Routstr-Cost-Msats": str(rec.charged_msats)}
        return web.json_response(reply, headers=headers)

    def _bill(
        self,
        rec: NodeRequest,
        m: NodeModel,
        plan: Plan,
        pricing: SatsPricing,
        body: Mapping[str, Any],
    ) -> None:
        """Token counts of the planned answer and its charge (the caller holds the lock)."""
        prompt = plan.prompt_tokens
        if prompt is None:
            prompt = max(1, math.ceil(_prompt_chars(body) / 4))
        completion = plan.completion_tokens
        if rec.max_tokens is not None:
            completion = min(completion, rec.max_tokens)
        rec.prompt_tokens, rec.completion_tokens = prompt, completion
        rec.cached_tokens = min(plan.cached_tokens, prompt)
        rec.formula_msats = pricing.tokens_msats(prompt, rec.cached_tokens, completion)
        usd = plan.upstream_cost_usd if plan.upstream_cost_usd is not None else m.upstream_cost_usd
        rec.charged_msats = rec.formula_msats if usd is None else usd_msats(usd, rec.btc_usd)

    def _usage(self, rec: NodeRequest) -> dict[str, Any]:
        n = rec.charged_msats
        return {
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "total_tokens": rec.prompt_tokens + rec.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": rec.cached_tokens},
            "cost": {"base_msats": rec.reserved_msats, "total_msats": n},
            "cost_sats": n // 1000,
        }

    async def _stream(
        self,
        request: web.Request,
        rec: NodeRequest,
        m: NodeModel,
        plan: Plan,
        body: Mapping[str, Any],
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        model = m.canonical_slug
        await resp.write(sse(chunk("", role="assistant", model=model)))
        for i in range(rec.completion_tokens):
            if i and plan.chunk_delay_s > 0:
                await asyncio.sleep(plan.chunk_delay_s)
            await resp.write(sse(chunk(f"{plan.content}{i} ", model=model)))
        await resp.write(sse(chunk(finish_reason="stop", model=model)))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            await resp.write(sse(chunk(model=model, usage=usage)))
        await resp.write(DONE)
        await resp.write_eof()
        return resp
