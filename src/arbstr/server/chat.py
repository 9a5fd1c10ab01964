"""``POST /v1/chat/completions``: the hot path, as plain ASGI.

Every answer on this route, whatever its status, carries the request id and writes exactly one
row: auth failures, bad input, disconnects and crashes included. An unexpected exception is
answered by the error boundary (a 500 before the response started, an error event in a stream
after it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from arbstr.apis import ChatRequest, parse_chat, upstream_body
from arbstr.config import Provider
from arbstr.errors import (
    ArbstrError,
    AuthError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
)
from arbstr.logs import log_request
from arbstr.routing import (
    Candidate,
    Route,
    cost_msats,
    estimate_input_tokens,
    estimate_output_tokens,
    reservation_for,
    route,
    select_policy,
)
from arbstr.server.charge import Charge
from arbstr.server.delivery import SSE_HEADERS, TrackedSend, error_event, trailer_event
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.exchange import Exchange
from arbstr.server.gateway import Gateway
from arbstr.server.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    check_bearer,
    read_body,
    send_bytes,
    send_error,
)
from arbstr.server.ids import iso_now, new_request_id
from arbstr.server.outcome import (
    Outcome,
    add_msats,
    billed_estimate,
    cached_tokens,
    failed,
    record_of,
    stream_cost,
    tokens,
)
from arbstr.server.streaming import relay_stream
from arbstr.upstream import (
    AttemptFailed,
    StreamRelay,
    provider_cost_msats,
    run_with_retries,
)

log = logging.getLogger("arbstr.chat")
T = TypeVar("T")


@dataclass(slots=True)
class Prepared:
    body: bytes  # what goes upstream (to candidates that list the route's model)
    request: ChatRequest
    route: Route
    original: bytes  # the client's body

    def body_for(self, c: Candidate) -> bytes:
        """The body for ``c``: with the model as that provider lists it."""
        if c.model == self.route.model:
            return self.body
        return upstream_body(self.original, self.request, c.model)

    reserve: Callable[[Candidate], int | None]  # msats a candidate's node reserves for it


class ChatHandler:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.redact = gw.redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(new_request_id(), time.perf_counter(), iso_now())
        out = TrackedSend(send)
        try:
            await self._handle(scope, receive, out, ex)
        except Exception as exc:  # the error boundary: no request unanswered or unrecorded
            await self._crashed(ex, out, exc)

    async def _handle(
        self, scope: Scope, receive: Receive, send: TrackedSend, ex: Exchange
    ) -> None:
        gw = self.gw
        if scope["method"] != "POST":
            await self._fail(send, ex, MethodNotAllowed(f"{scope['path']} accepts POST only"))
            return
        if gw.auth_token is not None and not check_bearer(scope, gw.auth_token):
            err = AuthError("missing or invalid bearer token for arbstr (server.auth_token)")
            await self._fail(send, ex, err)
            return
        try:
            prep = await self._prepare(scope, receive, ex)
        except ClientGone:
            self._record(ex, failed(499, "client disconnected before sending its whole request"))
            return
        except ArbstrError as err:
            await self._fail(send, ex, err)
            return
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(receive, task)
        try:
            if prep.request.stream:
                await self._stream(prep, ex, send, watch)
            else:
                await self._complete(prep, ex, send, watch)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            task.uncancel()
            log.info("client disconnected; upstream request cancelled", extra=_rid(ex))
            billed = billed_estimate(ex, prep.route)
            self._record(ex, failed(499, "client disconnected", billed))
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
        req = parse_chat(body)
        ex.model = req.model
        ex.streaming = req.stream
        rule = select_policy(gw.config.policies, policy_header, req.last_user_text)
        ex.policy = rule.name
        in_tokens = estimate_input_tokens(req.text_chars)
        ex.est_input_tokens = in_tokens
        ratios = gw.ratios

        def out_tokens(model: str) -> int:
            return estimate_output_tokens(req.max_tokens, in_tokens, ratios.get(rule.name, model))

        def reserve(c: Candidate) -> int | None:
            # what c's node holds back before forwarding, from its published limits
            return reservation_for(c.provider.model_info.get(c.model), c.rates, req.max_tokens)

        affords = gw.funds.predicate(reserve)  # None (nothing to check) until funds are known
        r = route(
            gw.prices.providers,
            rule,
            req.model,
            in_tokens,
            out_tokens,
            gw.health.latency_ms,
            affords,
        )
        ex.model = r.model
        ex.est_output_tokens = out_tokens(r.model)
        return Prepared(upstream_body(body, req, r.model), req, r, body, reserve)

    async def _attempts(
        self,
        prep: Prepared,
        ex: Exchange,
        send: Send,
        watch: DisconnectWatch,
        call: Callable[[Provider, bytes, str, float], Awaitable[T]],
    ) -> tuple[Candidate, T] | None:
        """Run the attempts of ``call`` (``upstream.complete`` or ``upstream.open_stream``):
        retries, fallback, breaker, each attempt within ``request_timeout_s`` and the deadline.
        On final failure answer the client (the upstream's own 4xx, or an OpenAI-shaped error),
        record it and return None."""
        gw = self.gw
        timeout_cap = gw.config.server.request_timeout_s

        async def attempt(c: Candidate, remaining: float) -> T:
            body = prep.body_for(c)
            return await call(c.provider, body, ex.request_id, min(timeout_cap, remaining))

        try:
            return await run_with_retries(
                prep.route.candidates,
                attempt,
                settings=gw.config.retry,
                health=gw.health,
                deadline=time.monotonic() + gw.config.retry.deadline_s,
                log=ex.attempts,
                rng=gw.rng,
                on_candidate=lambda c: _set_candidate(ex, c),
                funds=gw.funds,
                reserve=prep.reserve,
            )
        except AttemptFailed as failure:
            watch.stop()
            await self._pass_through(failure, ex, send)
        except ArbstrError as err:
            watch.stop()
            billed = billed_estimate(ex, prep.route)
            await self._fail(send, ex, err, possibly_billed_msats=billed)
        return None

    async def _pass_through(self, failure: AttemptFailed, ex: Exchange, send: Send) -> None:
        """An upstream 4xx that is the request's fault: passed on as the upstream sent it
        (with any echoed secret redacted)."""
        status = failure.status or 502
        headers = ex.headers()
        headers.append(
            (b"content-type", (failure.content_type or "application/json").encode("latin-1"))
        )
        await send_bytes(send, status, self.redact.bytes(failure.body or b""), headers)
        self._record(ex, failed(status, failure.message))

    # -- non-streaming ------------------------------------------------------------------------

    async def _complete(
        self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch
    ) -> None:
        gw = self.gw
        delivered = await self._attempts(prep, ex, send, watch, gw.upstream.complete)
        if delivered is None:
            return
        cand, reply = delivered
        ex.attempts.in_flight = False
        in_tok, out_tok = tokens(reply.usage, ex.est_input_tokens, None)
        usage = reply.usage
        charge = Charge(
            cost_msats(cand.rates, in_tok, out_tok, cached_tokens(usage)),
            provider_cost_msats(
                usage,
                reply.routstr_cost_msats,
                provider=cand.provider.name,
                request_id=ex.request_id,
            ),
        )
        latency = ex.elapsed_ms()
        overhead = max(0.0, latency - ex.attempts.waited_s * 1000.0)
        headers = ex.headers()
        headers.append((b"content-type", reply.content_type.encode("latin-1")))
        headers += charge.headers()
        headers.append((b"x-arbstr-latency-ms", f"{latency:.2f}".encode()))
        headers.append((b"x-arbstr-overhead-ms", f"{overhead:.2f}".encode()))
        watch.stop()
        await send_bytes(send, reply.status, self.redact.bytes(reply.body), headers)
        if usage is not None and usage.prompt_tokens and usage.completion_tokens is not None:
            gw.ratios.observe(ex.policy or "default", ex.model, in_tok, out_tok)
        self._record(
            ex,
            Outcome(
                True,
                input_tokens=in_tok,
                output_tokens=out_tok,
                charge=charge,
                possibly_billed_msats=billed_estimate(ex, prep.route),  # earlier attempts
            ),
        )

    # -- streaming ----------------------------------------------------------------------------

    async def _stream(
        self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch
    ) -> None:
        gw = self.gw
        delivered = await self._attempts(prep, ex, send, watch, gw.upstream.open_stream)
        if delivered is None:
            return
        cand, sr = delivered
        told: list[Charge] = []  # the charge the trailer told the client
        first_byte_at = time.perf_counter()  # the response starts now

        def reported(relay: StreamRelay) -> int | None:
            return provider_cost_msats(
                relay.usage,
                sr.routstr_cost_msats,
                provider=cand.provider.name,
                request_id=ex.request_id,
            )

        def trailer(relay: StreamRelay) -> bytes:
            # built at [DONE], after the final usage chunk with the provider's figure
            in_tok, out_tok = tokens(relay.usage, ex.est_input_tokens, relay.content_chunks)
            cached = cached_tokens(relay.usage)
            told.append(Charge(cost_msats(cand.rates, in_tok, out_tok, cached), reported(relay)))
            now = time.perf_counter()
            return trailer_event(
                chunk_id=relay.last_id or f"arbstr-{ex.request_id}",
                request_id=ex.request_id,
                provider=ex.provider,
                model=ex.model,
                policy=ex.policy,
                tokens=(in_tok, out_tok),
                cost=told[0].trailer_fields(),
                latency_ms=(now - ex.started) * 1000.0,
                ttft_ms=(first_byte_at - ex.started) * 1000.0,
            )

        relay = StreamRelay(
            forward_usage_chunk=prep.request.client_wants_usage,
            trailer=trailer,
            provider=cand.provider.name,
            request_id=ex.request_id,
        )
        try:
            error_message = await relay_stream(
                sr,
                relay,
                send,
                ex.headers() + SSE_HEADERS,
                provider=cand.provider.name,
                idle_timeout_s=gw.config.server.stream_idle_timeout_s,
                redact=self.redact.bytes,
                before_last_send=watch.stop,
            )
        except asyncio.CancelledError:  # the client left: the node still bills it all
            ex.relayed_output_tokens = tokens(relay.usage, 0, relay.content_chunks)[1]
            raise
        finally:
            sr.close()
        ex.attempts.in_flight = False  # (still set if the client left: the node bills a cut stream)
        now = time.perf_counter()
        in_tok, out_tok = tokens(relay.usage, ex.est_input_tokens, relay.content_chunks)
        if relay.upstream_error is not None:
            upstream_says = self.redact.text(relay.upstream_error)
            error_message = f"{cand.provider.name}: error event: {upstream_says}"
        success = error_message is None
        if not success:
            log.warning("stream failed: %s", error_message, extra=_rid(ex))
            gw.health.record_failure(cand.provider.name)
        elif relay.usage is not None and relay.usage.prompt_tokens:
            gw.ratios.observe(ex.policy or "default", ex.model, in_tok, out_tok)
        charge, billed = stream_cost(
            told[0] if told else None,
            relay.usage is not None,
            reported(relay) if not told else None,
            cand.rates,
            (in_tok, out_tok),
            ex.est_output_tokens,
            cached_tokens(relay.usage),
        )
        self._record(
            ex,
            Outcome(
                success,
                input_tokens=in_tok,
                output_tokens=out_tok,
                charge=charge,
                possibly_billed_msats=add_msats(billed, billed_estimate(ex, prep.route)),
                ttft_ms=(first_byte_at - ex.started) * 1000.0,
                stream_duration_ms=(now - first_byte_at) * 1000.0,
                error_status=None if success else 502,
                error_message=error_message,
            ),
        )

    # -- errors and records -------------------------------------------------------------------

    async def _fail(
        self, send: Send, ex: Exchange, err: ArbstrError, possibly_billed_msats: int | None = None
    ) -> None:
        err.message = self.redact.text(err.message)
        await send_error(send, err, ex.headers())
        self._record(ex, failed(err.status, err.message, possibly_billed_msats))

    async def _crashed(self, ex: Exchange, out: TrackedSend, exc: Exception) -> None:
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc, extra=_rid(ex))
        message = f"internal error in arbstr (request id {ex.request_id}); see its log"
        with contextlib.suppress(Exception):
            if not out.started:
                await send_error(out, InternalError(message), ex.headers())
            elif not out.ended:
                tail = (
                    error_event(message, type="server_error", code="internal_error")
                    if ex.streaming
                    else b""
                )
                await out({"type": "http.response.body", "body": tail, "more_body": False})
        if not ex.recorded:
            with contextlib.suppress(Exception):
                what = f"internal error: {type(exc).__name__}: {exc}"
                self._record(ex, failed(500, what, billed_estimate(ex)))

    def _record(self, ex: Exchange, o: Outcome) -> None:
        ex.recorded = True
        record = record_of(ex, o, self.redact)
        self.gw.sink.submit(record)
        log_request(record, ex.attempts.header())


def _set_candidate(ex: Exchange, c: Candidate) -> None:
    ex.candidate = c
    ex.model = c.model  # as this provider lists it


def _rid(ex: Exchange) -> dict[str, str]:
    return {"request_id": ex.request_id}
