"""``POST`` on every client API route (chat, embeddings, completions, ...): one pipeline,
driven by the route's :class:`~arbstr.apis.base.Api`, as plain ASGI.

Every answer, whatever its status, carries the request id and writes exactly one row (with
the API's name): auth failures, bad input, disconnects and crashes included; errors are in
the API's own shape. An unexpected exception is answered by the error boundary (a 500 before
the response started, the API's error event in a stream after it). Chat is the hot path:
nothing here costs it more than an attribute check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from arbstr.apinames import ApiName
from arbstr.apis.base import Api, ApiRequest, Translator
from arbstr.config import Provider
from arbstr.errors import ArbstrError, AuthError, InternalError, InvalidRequest, MethodNotAllowed
from arbstr.routing import (
    Candidate,
    TierMap,
    tier_map,
)
from arbstr.server.budgets import exceeded, hold
from arbstr.server.delivery import TrackedSend
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.exchange import Exchange
from arbstr.server.gateway import Gateway
from arbstr.server.http import (
    JSON_CT,
    ClientGone,
    Receive,
    Scope,
    Send,
    check_bearer,
    check_x_api_key,
    read_body,
    send_bytes,
)
from arbstr.server.ids import iso_now, new_request_id
from arbstr.server.outcome import (
    billed_estimate,
    failed,
)
from arbstr.server.pipeline_streams import Prepared, rid
from arbstr.server.planning import Plan, Planner
from arbstr.upstream import AttemptFailed, run_with_retries
from arbstr.upstream.client import JsonReply, StreamReply

log = logging.getLogger("arbstr.pipeline")


class ApiHandler(Planner):
    """Serves one :class:`Api`; ``fallbacks`` (name -> Api) finds the API a translated one
    is served through (``Api.translated_via``)."""

    def __init__(self, gw: Gateway, api: Api, fallbacks: Mapping[ApiName, Api]) -> None:
        self.gw = gw
        self.api = api
        self.redact = gw.redactor
        self.translator: Translator | None = None
        self.fallback: Api | None = None
        if api.translated_via is not None and api.translator is not None:
            self.fallback = fallbacks.get(api.translated_via)
            self.translator = api.translator if self.fallback is not None else None
        self._parse = api.parse
        self._usage_of = api.reply_usage
        self._forward = tuple(n.lower().encode("latin-1") for n in api.forward_headers)
        # chat and completions: OpenAI chunks through the chat relay (trailer: chat only)
        self.openai_relay = api.name in ("chat", "completions")
        self.trailer = api.name == "chat"
        self._served_from: Sequence[Provider] | None = None
        self._served: Sequence[Provider] = ()
        self._tiers: TierMap = tier_map(gw.config.tiers, ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(new_request_id(), time.perf_counter(), iso_now(), self.api.name)
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
        token = gw.auth_token
        if (
            token is not None
            and not check_bearer(scope, token)
            and not (self.api.accepts_x_api_key and check_x_api_key(scope, token))
        ):
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
            log.info("client disconnected; upstream request cancelled", extra=rid(ex))
            if not ex.recorded:  # (an escalated answer's row is written before its re-ask)
                billed = billed_estimate(ex, prep.route)
                self._record(ex, failed(499, "client disconnected", billed))
        finally:
            watch.stop()

    # -- reading ------------------------------------------------------------------------------

    async def _prepare(self, scope: Scope, receive: Receive, ex: Exchange) -> Prepared:
        """Read the request, then :meth:`plan` it (the dry run ``POST /v1/route`` plans too)."""
        body, policy_header, tier_header, session = await self.read(scope, receive)
        plan = self.plan(body, policy_header, tier_header, ex, session)
        req, r = plan.request, plan.route
        adm = ex.budget_admission
        if adm is not None:  # (no await since the plan: nothing came between)
            shared = self.gw.shared_budgets
            if shared is not None and adm.covering:  # the database has the last word
                refused = await shared.confirm(ex.request_id, adm)
                if refused is not None:
                    ex.budget_admission = None
                    raise exceeded(refused, self.gw.budgets.clock())
            hold(self.gw.budgets, ex)
        extra = _forwarded(scope, self._forward) if self._forward else b""
        return Prepared(
            self.api, self.api.upstream_body(body, req, r.model), req, r, body, plan.reserve, extra
        )

    async def read(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes, str | None, str | None, bytes | None]:
        """The body, the ``X-Arbstr-Policy`` / ``X-Arbstr-Tier`` headers and the conversation's
        session id (``X-Arbstr-Session``, else ``X-Claude-Code-Session-Id``)."""
        policy_header: str | None = None
        tier_header: str | None = None
        content_length: int | None = None
        session: bytes | None = None
        cc_session: bytes | None = None
        for k, v in scope["headers"]:
            if k == b"x-arbstr-policy":
                policy_header = v.decode("latin-1")
            elif k == b"x-arbstr-tier":
                tier_header = v.decode("latin-1").strip().lower()
            elif k == b"x-arbstr-session":
                session = v
            elif k == b"x-claude-code-session-id":
                cc_session = v
            elif k == b"content-length":
                try:
                    content_length = int(v)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length header") from None
        body = await read_body(receive, self.gw.config.server.max_body_bytes, content_length)
        return body, policy_header, tier_header, session or cc_session

    def translated(self, c: Candidate) -> bool:
        """Whether ``c`` serves this API only through its translation."""
        return self.fallback is not None and self.api.name not in c.provider.apis

    async def _attempts(
        self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch, stream: bool
    ) -> tuple[Candidate, JsonReply | StreamReply] | None:
        """Run the attempts (a JSON request or a stream): retries, fallback, breaker, each
        attempt within ``request_timeout_s`` and the deadline. On final failure answer the
        client (the upstream's own 4xx, or an error in the API's shape), record it and
        return None."""
        gw = self.gw
        up = gw.upstream
        timeout_cap = gw.config.server.request_timeout_s
        api, fb, rid_ = self.api, self.fallback, ex.request_id

        async def attempt(c: Candidate, remaining: float) -> JsonReply | StreamReply:
            timeout = min(timeout_cap, remaining)
            if fb is not None and api.name not in c.provider.apis:
                assert self.translator is not None
                body = self.translator.translate_request(prep.original, prep.request, c.model)
                if stream:
                    return await up.open_stream(c.provider, body, rid_, timeout, fb.upstream_path)
                return await up.complete(
                    c.provider, body, rid_, timeout, fb.upstream_path, b"", fb.reply_usage
                )
            body = prep.body_for(c)
            if stream:
                return await up.open_stream(
                    c.provider, body, rid_, timeout, api.upstream_path, prep.extra_head
                )
            return await up.complete(
                c.provider, body, rid_, timeout, api.upstream_path, prep.extra_head, self._usage_of
            )

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
        (with any echoed secret redacted); rewritten in this API's shape when it came from
        the API it was translated to."""
        status = failure.status or 502
        headers = ex.headers()
        if ex.candidate is not None and self.translated(ex.candidate):
            message = self.redact.text(failure.message)
            body = self.api.error_body(status, "invalid_request_error", "upstream_error", message)
            headers.append(JSON_CT)
        else:
            ctype = failure.content_type or "application/json"
            headers.append((b"content-type", ctype.encode("latin-1")))
            body = self.redact.bytes(failure.body or b"")
        await send_bytes(send, status, body, headers)
        self._record(ex, failed(status, failure.message))

    # -- errors -------------------------------------------------------------------------------

    async def _fail(
        self, send: Send, ex: Exchange, err: ArbstrError, possibly_billed_msats: int | None = None
    ) -> None:
        err.message = self.redact.text(err.message)
        body = self.api.error_body(err.status, err.type, err.code, err.message)
        await send_bytes(send, err.status, body, [JSON_CT, *ex.headers(), *err.headers])
        self._record(ex, failed(err.status, err.message, possibly_billed_msats))

    async def _crashed(self, ex: Exchange, out: TrackedSend, exc: Exception) -> None:
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc, extra=rid(ex))
        message = f"internal error in arbstr (request id {ex.request_id}); see its log"
        with contextlib.suppress(Exception):
            if not out.started:
                err = InternalError(message)
                body = self.api.error_body(err.status, err.type, err.code, message)
                await send_bytes(out, err.status, body, [JSON_CT, *ex.headers()])
            elif not out.ended:
                tail = (
                    self.api.stream_error("server_error", "internal_error", message)
                    if ex.streaming
                    else b""
                )
                await out({"type": "http.response.body", "body": tail, "more_body": False})
        if not ex.recorded:
            with contextlib.suppress(Exception):
                what = f"internal error: {type(exc).__name__}: {exc}"
                self._record(ex, failed(500, what, billed_estimate(ex)))


def _forwarded(scope: Scope, names: tuple[bytes, ...]) -> bytes:
    """The request's headers named in ``names`` as header lines for the upstream request
    (a value with CR or LF is dropped: it would split the request head)."""
    lines = [
        k + b": " + v + b"\r\n"
        for k, v in scope["headers"]
        if k in names and b"\r" not in v and b"\n" not in v
    ]
    return b"".join(lines)


def _set_candidate(ex: Exchange, c: Candidate) -> None:
    ex.candidate = c
    ex.model = c.model  # as this provider lists it


__all__ = ["ApiHandler", "ApiRequest", "Plan"]
