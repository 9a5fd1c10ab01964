"""``POST /v1/chat/completions``: the hot path, as plain ASGI."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from arbstr.apis.chat import Message, StreamOptions, text_of
from arbstr.errors import ArbstrError, AuthError, InvalidRequest, UpstreamError
from arbstr.logs import log_request
from arbstr.money import format_msats, msats_decimal
from arbstr.records import RequestRecord
from arbstr.routing.policy import select_policy
from arbstr.routing.pricing import (
    cost_msats,
    cost_sats,
    estimate_input_tokens,
    estimate_output_tokens,
)
from arbstr.routing.router import Candidate, Route, route
from arbstr.server.gateway import Gateway
from arbstr.server.http import (
    JSON_CT,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    check_bearer,
    read_body,
    send_bytes,
    send_error,
)
from arbstr.timefmt import IsoStamper
from arbstr.upstream.client import AttemptFailed, JsonReply, StreamReply
from arbstr.upstream.executor import AttemptLog, run_with_retries
from arbstr.upstream.relay import StreamRelay
from arbstr.upstream.usage import Usage, provider_cost_sats

log = logging.getLogger("arbstr.chat")
WATCH_AFTER_S = 0.05  # a request older than this is watched for client disconnects
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# What arbstr reads of the request (everything else is forwarded untouched)


class ChatView(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    messages: list[Message] | msgspec.UnsetType = msgspec.UNSET
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: StreamOptions | msgspec.UnsetType | None = msgspec.UNSET


_view_decoder = msgspec.json.Decoder(ChatView)
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_USAGE_OPTION = b',"stream_options":{"include_usage":true}}'

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-arbstr-streaming", b"true"),
]


_getrandbits = random.Random().getrandbits  # seeded from os.urandom at import
_stamp = IsoStamper()  # the event loop's


def _iso_now() -> str:
    """Now, UTC, ISO 8601 to the millisecond (``2025-01-02T03:04:05.678Z``)."""
    return _stamp(time.time())


def _request_id() -> str:
    """A new request id: a version-7 UUID (RFC 9562) as text. Its first 48 bits are the Unix
    time in ms, so ids sort by time and the request log's UNIQUE index on them grows at its
    end: random (version-4) ids scatter every insert over the whole index, which doubled the
    SQLite writer's CPU per row at 50k rows. The other 74 bits are random; ids correlate
    requests, they are not secrets, so the fast non-cryptographic generator is enough."""
    value = (time.time_ns() // 1_000_000) << 80 | _getrandbits(74)
    # version 7 in bits 76-79, variant 0b10 in bits 62-63; the random bits slide around them
    value = (value & _HIGH) | _V7 | (value & _MID) << 2 | _VARIANT | (value & _LOW)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_HIGH = ((1 << 48) - 1) << 80  # unix_ts_ms
_V7 = 0x7 << 76
_MID = ((1 << 12) - 1) << 62  # rand_a, moved to bits 64-75
_VARIANT = 0b10 << 62
_LOW = (1 << 62) - 1  # rand_b


@dataclass(slots=True)
class Exchange:
    """Everything known about one chat request as it goes along."""

    request_id: str
    started: float  # perf_counter
    timestamp: str
    model: str = ""
    provider: str | None = None
    policy: str | None = None
    streaming: bool = False
    est_input_tokens: int = 0
    attempts: AttemptLog = field(default_factory=AttemptLog)

    def headers(self) -> Headers:
        h: Headers = [(b"x-arbstr-request-id", self.request_id.encode())]
        if self.provider is not None:
            h.append((b"x-arbstr-provider", self.provider.encode()))
        if self.model:
            h.append((b"x-arbstr-model", self.model.encode("utf-8", "replace")))
        if self.policy is not None:
            h.append((b"x-arbstr-policy", self.policy.encode()))
        retries = self.attempts.header()
        if retries is not None:
            h.append((b"x-arbstr-retries", retries.encode()))
        return h

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


@dataclass(slots=True)
class Prepared:
    body: bytes
    route: Route
    stream: bool
    client_wants_usage: bool


class ChatHandler:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        ex = Exchange(_request_id(), time.perf_counter(), _iso_now())
        if gw.auth_token is not None and not check_bearer(scope, gw.auth_token):
            err = AuthError("missing or invalid bearer token for arbstr (server.auth_token)")
            await send_error(send, err, ex.headers())
            return
        try:
            prep = await self._prepare(scope, receive, ex)
        except ClientGone:
            return
        except ArbstrError as err:
            await send_error(send, err, ex.headers())
            self._record_error(ex, err.status, err.message)
            return
        task = asyncio.current_task()
        assert task is not None
        watch = _DisconnectWatch(receive, task)
        try:
            if prep.stream:
                await self._stream(prep, ex, send, watch)
            else:
                await self._complete(prep, ex, send, watch)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            task.uncancel()
            log.info("client disconnected; upstream request cancelled", extra=_rid(ex))
            self._record_error(ex, 499, "client disconnected")
        finally:
            watch.stop()

    # -- parsing and routing ------------------------------------------------------------------

    async def _prepare(self, scope: Scope, receive: Receive, ex: Exchange) -> Prepared:
        gw = self.gw
        policy_header: str | None = None
        content_length: int | None = None
        for k, v in scope["headers"]:
            if k == b"x-arbstr-policy":
                policy_header = v.decode("latin-1")
            elif k == b"content-length":
                try:
                    content_length = int(v)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length header") from None
        body = await read_body(receive, gw.config.server.max_body_bytes, content_length)
        try:
            view = _view_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid request body: {exc}", code="invalid_request") from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                f"request body is not valid JSON: {exc}", code="invalid_json"
            ) from None
        if view.model is msgspec.UNSET or not view.model:
            raise InvalidRequest("you must provide a model parameter", code="missing_model")
        ex.model = view.model
        if view.messages is msgspec.UNSET or not view.messages:
            raise InvalidRequest("'messages' must be a non-empty array", code="missing_messages")
        stream = bool(view.stream)
        ex.streaming = stream

        chars = 0
        last_user: str | None = None
        for m in view.messages:
            text = text_of(m.content)
            chars += len(text)
            if m.role == "user":
                last_user = text
        rule = select_policy(gw.config.policies, policy_header, last_user)
        ex.policy = rule.name
        in_tokens = estimate_input_tokens(chars)
        ex.est_input_tokens = in_tokens
        max_tokens = view.max_completion_tokens or view.max_tokens
        ratios = gw.ratios

        def out_tokens(model: str) -> int:
            return estimate_output_tokens(max_tokens, in_tokens, ratios.get(rule.name, model))

        r = route(
            gw.prices.providers, rule, view.model, in_tokens, out_tokens, gw.health.latency_ms
        )
        ex.model = r.model

        client_wants_usage = False
        rewrite: dict[str, Any] | None = None
        if r.model != view.model:
            rewrite = {"model": r.model}
        if stream:
            so = view.stream_options
            client_wants_usage = isinstance(so, StreamOptions) and so.include_usage is True
            if not client_wants_usage:
                if so is msgspec.UNSET and rewrite is None:
                    body = _splice_usage_option(body)
                else:
                    rewrite = rewrite or {}
                    rewrite["stream_options"] = True
        if rewrite is not None:
            body = _rewrite(body, rewrite)
        return Prepared(body, r, stream, client_wants_usage)

    # -- non-streaming ------------------------------------------------------------------------

    async def _complete(
        self, prep: Prepared, ex: Exchange, send: Send, watch: _DisconnectWatch
    ) -> None:
        gw = self.gw
        timeout_cap = gw.config.server.request_timeout_s

        async def attempt(c: Candidate, remaining: float) -> JsonReply:
            return await gw.upstream.complete(
                c.provider, prep.body, ex.request_id, min(timeout_cap, remaining)
            )

        delivered = await self._deliver(prep, ex, send, watch, attempt)
        if delivered is None:
            return
        cand, reply = delivered

        usage = reply.usage
        in_tok, out_tok = _tokens(usage, ex.est_input_tokens, None)
        msats = cost_msats(cand.rates, in_tok, out_tok)
        latency = ex.elapsed_ms()
        overhead = max(0.0, latency - ex.attempts.upstream_wait_s * 1000.0)
        headers = ex.headers()
        headers.append((b"content-type", reply.content_type.encode("latin-1")))
        headers.append((b"x-arbstr-cost-sats", format_msats(msats).encode()))
        headers.append((b"x-arbstr-latency-ms", f"{latency:.2f}".encode()))
        headers.append((b"x-arbstr-overhead-ms", f"{overhead:.2f}".encode()))
        watch.stop()
        await send_bytes(send, reply.status, reply.body, headers)
        if usage is not None and usage.prompt_tokens and usage.completion_tokens is not None:
            gw.ratios.observe(ex.policy or "default", ex.model, in_tok, out_tok)
        self._record(
            ex,
            success=True,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost=msats_decimal(msats),
            provider_cost=provider_cost_sats(usage, reply.routstr_cost_msats),
            latency_ms=latency,
        )

    async def _deliver(
        self,
        prep: Prepared,
        ex: Exchange,
        send: Send,
        watch: _DisconnectWatch,
        attempt: Callable[[Candidate, float], Awaitable[T]],
    ) -> tuple[Candidate, T] | None:
        """Run the attempts (retries, fallback, breaker). On final failure answer the client
        (the upstream's own 4xx, or an OpenAI-shaped error), record it and return None."""
        gw = self.gw
        try:
            return await run_with_retries(
                prep.route.candidates,
                attempt,
                settings=gw.config.retry,
                health=gw.health,
                deadline=time.monotonic() + gw.config.retry.deadline_s,
                log=ex.attempts,
                rng=gw.rng,
                on_candidate=lambda c: _set_provider(ex, c),
            )
        except AttemptFailed as failure:
            watch.stop()
            await self._pass_through(failure, ex, send)
        except ArbstrError as err:
            watch.stop()
            await send_error(send, err, ex.headers())
            self._record_error(ex, err.status, err.message)
        return None

    async def _pass_through(self, failure: AttemptFailed, ex: Exchange, send: Send) -> None:
        """An upstream 4xx that is the request's fault: passed on as the upstream sent it."""
        status = failure.status or 502
        body = failure.body or b""
        headers = ex.headers()
        headers.append(
            (b"content-type", (failure.content_type or "application/json").encode("latin-1"))
        )
        await send_bytes(send, status, body, headers)
        self._record_error(ex, status, failure.message)

    # -- streaming ----------------------------------------------------------------------------

    async def _stream(
        self, prep: Prepared, ex: Exchange, send: Send, watch: _DisconnectWatch
    ) -> None:
        gw = self.gw
        first_byte_cap = gw.config.server.request_timeout_s

        async def attempt(c: Candidate, remaining: float) -> StreamReply:
            return await gw.upstream.open_stream(
                c.provider, prep.body, ex.request_id, min(first_byte_cap, remaining)
            )

        delivered = await self._deliver(prep, ex, send, watch, attempt)
        if delivered is None:
            return
        cand, sr = delivered

        state = _StreamState()

        def trailer(relay: StreamRelay) -> bytes:
            in_tok, out_tok = _tokens(relay.usage, ex.est_input_tokens, relay.content_chunks)
            state.cost = cost_sats(cand.rates, in_tok, out_tok)
            state.tokens = (in_tok, out_tok)
            return _trailer_event(ex, relay, state, in_tok, out_tok)

        relay = StreamRelay(forward_usage_chunk=prep.client_wants_usage, trailer=trailer)
        error_message: str | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": ex.headers() + SSE_HEADERS,
                }
            )
            state.first_byte_at = time.perf_counter()
            out = relay.feed(sr.first_chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            try:
                while (chunk := await sr.next_chunk()) is not None:
                    out = relay.feed(chunk)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            except TimeoutError:
                error_message = (
                    f"{cand.provider.name}: no data for"
                    f" {gw.config.server.stream_idle_timeout_s:g} s (stream_idle_timeout_s)"
                )
            except OSError as exc:
                error_message = f"{cand.provider.name}: stream broken: {exc or type(exc).__name__}"
            if error_message is None and not relay.done:
                error_message = f"{cand.provider.name}: stream ended without [DONE]"
            tail = b""
            if error_message is not None:
                tail = relay.leftover()
                if tail and not tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
                    tail = b""  # an incomplete event would corrupt the error event after it
                tail += _error_event(error_message)
            watch.stop()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            sr.close()

        latency = ex.elapsed_ms()
        ttft = (state.first_byte_at - ex.started) * 1000.0 if state.first_byte_at else None
        duration = (
            (time.perf_counter() - state.first_byte_at) * 1000.0 if state.first_byte_at else None
        )
        if state.tokens is None:
            in_tok, out_tok = _tokens(relay.usage, ex.est_input_tokens, relay.content_chunks)
            state.cost = cost_sats(cand.rates, in_tok, out_tok)
        else:
            in_tok, out_tok = state.tokens
        success = error_message is None and not relay.error_seen
        if error_message is not None:
            log.warning("stream interrupted: %s", error_message, extra=_rid(ex))
            gw.health.record_failure(cand.provider.name)
        if success and relay.usage is not None and relay.usage.prompt_tokens:
            gw.ratios.observe(ex.policy or "default", ex.model, in_tok, out_tok)
        self._record(
            ex,
            success=success,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost=state.cost,
            provider_cost=provider_cost_sats(relay.usage, sr.routstr_cost_msats),
            latency_ms=latency,
            ttft_ms=ttft,
            stream_duration_ms=duration,
            error_status=None if success else 502,
            error_message=error_message
            or ("upstream sent an error event" if not success else None),
        )

    # -- records ------------------------------------------------------------------------------

    def _record(
        self,
        ex: Exchange,
        *,
        success: bool,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: Decimal | None,
        provider_cost: Decimal | None,
        latency_ms: float,
        ttft_ms: float | None = None,
        stream_duration_ms: float | None = None,
        error_status: int | None = None,
        error_message: str | None = None,
    ) -> None:
        record = RequestRecord(
            request_id=ex.request_id,
            timestamp=ex.timestamp,
            model=ex.model,
            provider=ex.provider,
            policy=ex.policy,
            streaming=ex.streaming,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_sats=cost,
            provider_cost_sats=provider_cost,
            latency_ms=round(latency_ms),
            ttft_ms=None if ttft_ms is None else round(ttft_ms),
            stream_duration_ms=None if stream_duration_ms is None else round(stream_duration_ms),
            success=success,
            error_status=error_status,
            error_message=error_message,
            attempts=max(1, ex.attempts.tried),
        )
        self.gw.sink.submit(record)
        log_request(record, ex.attempts.header())

    def _record_error(self, ex: Exchange, status: int, message: str) -> None:
        self._record(
            ex,
            success=False,
            input_tokens=None,
            output_tokens=None,
            cost=None,
            provider_cost=None,
            latency_ms=ex.elapsed_ms(),
            error_status=status,
            error_message=message,
        )


@dataclass(slots=True)
class _StreamState:
    first_byte_at: float = 0.0
    cost: Decimal | None = None
    tokens: tuple[int, int] | None = None


class _DisconnectWatch:
    """Cancels the request's task when the client disconnects (uvicorn's ``send`` silently
    does nothing after the client left, so without this the upstream would keep going).

    Watching means a task blocked in ``receive()``: ~18 µs to create and cancel, a tenth of a
    fast request's cost. So it starts only once the request has taken ``after_s``; a client
    that left before then is noticed at that moment (uvicorn remembers the disconnect)."""

    __slots__ = ("_fut", "_receive", "_task", "_timer", "gone")

    def __init__(
        self, receive: Receive, task: asyncio.Task[Any], after_s: float = WATCH_AFTER_S
    ) -> None:
        self._receive = receive
        self._task = task
        self.gone = False
        self._fut: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            after_s, self._arm
        )

    def _arm(self) -> None:
        self._timer = None
        self._fut = asyncio.ensure_future(self._receive())
        self._fut.add_done_callback(self._on_message)

    def _on_message(self, fut: asyncio.Future[Any]) -> None:
        if self._fut is None or fut.cancelled() or fut.exception() is not None:
            return
        if fut.result().get("type") == "http.disconnect":
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.cancel()


def _set_provider(ex: Exchange, c: Candidate) -> None:
    ex.provider = c.provider.name


def _rid(ex: Exchange) -> dict[str, str]:
    return {"request_id": ex.request_id}


def _tokens(usage: Usage | None, est_input: int, content_chunks: int | None) -> tuple[int, int]:
    """Tokens from the provider's usage; estimates where it said nothing."""
    in_tok = usage.prompt_tokens if usage is not None else None
    out_tok = usage.completion_tokens if usage is not None else None
    if in_tok is None:
        in_tok = est_input
    if out_tok is None:
        out_tok = content_chunks or 0
    return in_tok, out_tok


def _splice_usage_option(body: bytes) -> bytes:
    """Add ``"stream_options":{"include_usage":true}`` to a JSON object without re-encoding it
    (only called when the object has no ``stream_options`` key)."""
    end = body.rstrip()
    if end.endswith(b"}"):
        return end[:-1] + _USAGE_OPTION
    return _rewrite(body, {"stream_options": True})


def _rewrite(body: bytes, changes: dict[str, Any]) -> bytes:
    """Re-encode the request with ``model`` replaced and/or usage requested (rare path)."""
    obj = _decode_any(body)
    if not isinstance(obj, dict):
        raise UpstreamError("request body is not a JSON object")
    if "model" in changes:
        obj["model"] = changes["model"]
    if changes.get("stream_options"):
        so = obj.get("stream_options")
        obj["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
    return _encode(obj)


def _trailer_event(
    ex: Exchange, relay: StreamRelay, state: _StreamState, in_tok: int, out_tok: int
) -> bytes:
    now = time.perf_counter()
    ttft = (state.first_byte_at - ex.started) * 1000.0 if state.first_byte_at else None
    payload = {
        "id": relay.last_id or f"arbstr-{ex.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": ex.model,
        "choices": [],
        "arbstr": {
            "request_id": ex.request_id,
            "provider": ex.provider,
            "model": ex.model,
            "policy": ex.policy,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "cost_sats": float(state.cost) if state.cost is not None else None,
            "latency_ms": round((now - ex.started) * 1000.0, 2),
            "ttft_ms": None if ttft is None else round(ttft, 2),
        },
    }
    return b"data: " + _encode(payload) + b"\n\n"


def _error_event(message: str) -> bytes:
    err = {"error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"}}
    return b"data: " + _encode(err) + b"\n\n"


__all__ = ["JSON_CT", "ChatHandler"]
