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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from arbstr.apinames import ApiName
from arbstr.apis.base import Api, ApiRequest, Translator
from arbstr.config import Provider, Rule
from arbstr.errors import ArbstrError, AuthError, InternalError, InvalidRequest, MethodNotAllowed
from arbstr.routing import (
    AUTO_MODELS,
    Candidate,
    Route,
    TierMap,
    chosen_tier,
    estimate_input_tokens,
    estimate_output_tokens,
    reservation_for,
    route,
    select_policy,
    tier_map,
)
from arbstr.routing.complexity import score
from arbstr.routing.sticky import Sticky, conversation_key, higher_tier, prefer
from arbstr.server.budgets import estimate, exceeded, hold, within_budgets
from arbstr.server.chat import HotPaths
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
from arbstr.upstream import AttemptFailed, run_with_retries
from arbstr.upstream.client import JsonReply, StreamReply

log = logging.getLogger("arbstr.pipeline")


@dataclass(frozen=True, slots=True)
class Plan:
    """A parsed and routed request: what the real route sends and the dry run explains."""

    request: ApiRequest
    rule: Rule
    route: Route
    tier: str | None  # the tier asked for (header, pseudo-model or score), before any move up
    in_tokens: int
    out_tokens: Callable[[str], int]
    reserve: Callable[[Candidate], int | None]
    affords: Callable[[Candidate], bool] | None


class ApiHandler(HotPaths):
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

    # -- parsing and routing ------------------------------------------------------------------

    def _serve(self, providers: Sequence[Provider]) -> None:
        """The providers that serve this API, natively or through its translation (kept
        until the price book replaces its tuple)."""
        name, via = self.api.name, self.fallback and self.fallback.name
        ok = [p for p in providers if name in p.apis or (via is not None and via in p.apis)]
        self._served = providers if len(ok) == len(providers) else tuple(ok)
        self._served_from = providers
        # each listed model's tier, placed by price: once per price refresh
        self._tiers = tier_map(self.gw.config.tiers, self._served)

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

    def plan(
        self,
        body: bytes,
        policy_header: str | None,
        tier_header: str | None,
        ex: Exchange,
        session: bytes | None = None,
    ) -> Plan:
        """Parse, choose the policy, score, route (into ``ex`` as it goes). No I/O. Raises
        :class:`ArbstrError` as the route answers it."""
        gw = self.gw
        req = self._parse(body)
        ex.model = req.model
        ex.streaming = req.stream
        rule = select_policy(gw.config.policies, policy_header, req.last_user_text)
        ex.policy = rule.name
        in_tokens = estimate_input_tokens(req.text_chars)
        ex.est_input_tokens = in_tokens
        ratios = gw.ratios
        with_output = req.estimate_output

        def out_tokens(model: str) -> int:
            if not with_output:
                return 0
            return estimate_output_tokens(req.max_tokens, in_tokens, ratios.get(rule.name, model))

        def reserve(c: Candidate) -> int | None:
            # what c's node holds back before forwarding, from its published limits
            return reservation_for(c.provider.model_info.get(c.model), c.rates, req.max_tokens)

        affords = gw.funds.predicate(reserve)  # None (nothing to check) until funds are known
        providers = gw.prices.providers
        if providers is not self._served_from:
            self._serve(providers)
        scored_tier = self._scored(req, ex, rule) if req.model in AUTO_MODELS else None
        features = req.features
        tier = chosen_tier(req.model, tier_header, scored_tier)
        conversations = gw.sticky
        key = conversation_key(session, req) if conversations.enabled else None
        stuck = conversations.get(key) if key is not None else None
        if stuck is not None and scored_tier is not None and tier_header is None:
            tier = higher_tier(tier, stuck.tier)  # within a conversation: only upward
        r = route(
            self._served,
            rule,
            req.model,
            in_tokens,
            out_tokens,
            gw.health.latency_ms,
            affords,
            tier=tier,
            tiers=self._tiers,
            max_tokens=req.max_tokens,
            images=features.images,
            tools=features.tools,
        )
        if key is not None:
            concrete = tier is None and req.model not in AUTO_MODELS
            r = self._stick(ex, key, stuck, r, affords, concrete)
        if gw.budgets.enabled:
            r = self._budgeted(ex, r, req, rule, in_tokens, out_tokens, affords)
        ex.tier = r.tier
        if r.reason is not None:
            log.info("tier: %s", r.reason, extra=rid(ex))
        ex.model = r.model
        ex.est_output_tokens = out_tokens(r.model)
        return Plan(req, rule, r, tier, in_tokens, out_tokens, reserve, affords)

    def _budgeted(
        self,
        ex: Exchange,
        r: Route,
        req: ApiRequest,
        rule: Rule,
        in_tokens: int,
        out_tokens: Callable[[str], int],
        affords: Callable[[Candidate], bool] | None,
    ) -> Route:
        """``r`` within the ``[[budgets]]`` (see :func:`within_budgets`)."""
        gw = self.gw

        def reroute(tier: str) -> Route:
            return route(
                self._served,
                rule,
                req.model,
                in_tokens,
                out_tokens,
                gw.health.latency_ms,
                affords,
                tier=tier,
                tiers=self._tiers,
                max_tokens=req.max_tokens,
                images=req.features.images,
                tools=req.features.tools,
            )

        auto = req.model in AUTO_MODELS
        return within_budgets(gw.budgets, ex, r, auto, reroute, estimate(in_tokens, out_tokens))

    @property
    def served(self) -> Sequence[Provider]:
        """The providers serving this API (as of the last plan)."""
        return self._served

    @property
    def tiers(self) -> TierMap:
        return self._tiers

    def _stick(
        self,
        ex: Exchange,
        key: bytes,
        stuck: Sticky | None,
        r: Route,
        affords: Callable[[Candidate], bool] | None,
        concrete: bool,
    ) -> Route:
        """The route with the conversation's candidate first when it is usable (see
        :func:`~arbstr.routing.sticky.prefer`), and the verdict for ``x-arbstr-sticky``."""
        ex.sticky_key = key
        if stuck is None:
            ex.sticky = "new"
            return r
        health = self.gw.health

        def usable(c: Candidate) -> bool:
            return health.state(c.provider.name) != "open" and (affords is None or affords(c))

        r, ex.sticky_to = prefer(r, stuck, by_provider_only=concrete, usable=usable)
        ex.sticky = "miss" if ex.sticky_to is None else "hit"
        return r

    def _scored(self, req: ApiRequest, ex: Exchange, rule: Rule) -> str | None:
        """Score an ``auto`` request (into ``ex``, for its headers and row) and say the tier
        it routes within: the scored one, unless the policy names its models and no
        ``[[tiers]]`` are configured (then ``auto`` is the cheapest of those, as always)."""
        c = score(req, self.gw.config.complexity)
        ex.complexity, ex.complexity_reasons = c.score, c.reasons
        if self.gw.config.tiers or not rule.allowed_models:
            return c.tier
        return None

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
