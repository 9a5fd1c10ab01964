"""``POST /v1/route``: what a request would be routed to, without calling any provider.

The body is any client API's (``?api=``, else guessed from its fields); the headers are the
real route's (``X-Arbstr-Policy``, ``X-Arbstr-Tier``). The answer names the policy, the tier,
the complexity score and every provider/model considered, ranked or with why it was skipped.
It goes through the same :meth:`ApiHandler.plan` as the real request; errors are the ones
the real route would answer, in the OpenAI shape. No request-log row: nothing was served."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import Api
from arbstr.apis.registry import APIS, by_name
from arbstr.errors import ArbstrError, AuthError, InvalidParameter, MethodNotAllowed
from arbstr.routing.explain import explain
from arbstr.routing.fit import Needs
from arbstr.server.exchange import Exchange
from arbstr.server.gateway import Gateway
from arbstr.server.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    check_bearer,
    check_x_api_key,
    send_error,
    send_json,
)
from arbstr.server.ids import iso_now, new_request_id
from arbstr.server.pipeline import ApiHandler
from arbstr.server.stats import query_params

API_NAMES: tuple[ApiName, ...] = ("chat", "responses", "messages", "embeddings", "completions")
# content block types only Anthropic Messages has (OpenAI's are text, image_url, input_audio…)
_ANTHROPIC_BLOCKS = frozenset(
    {"image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)


def guess_api(body: bytes) -> ApiName:
    """The API a body is most likely for: ``messages`` for Anthropic-looking messages
    (``max_tokens`` and a ``system`` or an Anthropic content block), else ``chat`` with
    ``messages``, ``responses`` with ``input``, ``completions`` with ``prompt``, else chat."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "chat"  # the chat parser names what is wrong
    if not isinstance(obj, dict):
        return "chat"
    if "messages" in obj:
        if "max_tokens" in obj and ("system" in obj or _anthropic_blocks(obj["messages"])):
            return "messages"
        return "chat"
    if "input" in obj:
        return "responses"
    if "prompt" in obj:
        return "completions"
    return "chat"


def _anthropic_blocks(messages: object) -> bool:
    if not isinstance(messages, list):
        return False
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in _ANTHROPIC_BLOCKS for b in content
        ):
            return True
    return False


def handlers_for(gw: Gateway, apis: Iterable[Api] = APIS) -> dict[ApiName, ApiHandler]:
    """One handler per API name (the first registered), as the routes use them."""
    apis = tuple(apis)
    fallbacks = by_name(apis)
    return {name: ApiHandler(gw, api, fallbacks) for name, api in fallbacks.items()}


def dry_run(
    handler: ApiHandler, body: bytes, policy: str | None, tier: str | None
) -> dict[str, Any]:
    """The ``/v1/route`` answer for ``body``. Raises :class:`ArbstrError` as the real route."""
    gw = handler.gw
    ex = Exchange(new_request_id(), time.perf_counter(), iso_now(), handler.api.name)
    plan = handler.plan(body, policy, tier, ex)
    req, r = plan.request, plan.route
    f = req.features
    needs = Needs(plan.in_tokens, req.max_tokens or 0, f.images, f.tools)
    served = {p.name for p in handler.served}
    rows = explain(
        r,
        gw.prices.providers,
        served,
        plan.rule,
        req.model,
        plan.tier,
        handler.tiers,
        needs,
        plan.out_tokens,
        plan.affords,
        lambda name: gw.health.state(name) == "open",
    )
    return {
        "api": handler.api.name,
        "policy": plan.rule.name,
        "tier": r.tier,
        "tier_reason": r.reason,
        "complexity": None if ex.complexity is None else round(ex.complexity, 4),
        "reasons": list(ex.complexity_reasons),
        "requested_model": req.model,
        "model": r.model,
        "est_input_tokens": plan.in_tokens,
        "est_output_tokens": ex.est_output_tokens,
        "candidates": [
            {
                "provider": c.provider,
                "model": c.model,
                "est_cost_sats": round(c.est_cost, 6),
                "skipped": c.skipped,
                "funds": "insufficient" if c.funds_short else None,
            }
            for c in rows
        ],
    }


def pick(handlers: Mapping[ApiName, ApiHandler], api: str | None, body: bytes) -> ApiHandler:
    """The handler for ``api`` (a name, or None to guess it from ``body``)."""
    name = api if api is not None else guess_api(body)
    handler = handlers.get(cast(ApiName, name))
    if handler is None:
        known = ", ".join(n for n in API_NAMES if n in handlers)
        raise InvalidParameter("api", f"unknown API {name!r}; known: {known}")
    return handler


class RouteHandler:
    """``POST /v1/route``: the dry run over the app's API handlers."""

    def __init__(self, gw: Gateway, handlers: Mapping[ApiName, ApiHandler]) -> None:
        self.gw = gw
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except ClientGone:
            return
        except ArbstrError as err:
            err.message = self.gw.redactor.text(err.message)
            await send_error(send, err)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['path']} accepts POST only")
        token = self.gw.auth_token
        if token is not None and not (check_bearer(scope, token) or check_x_api_key(scope, token)):
            raise AuthError("missing or invalid bearer token for arbstr (server.auth_token)")
        api = query_params(scope).get("api")
        any_handler = next(iter(self.handlers.values()))
        body, policy, tier, _session = await any_handler.read(scope, receive)
        handler = pick(self.handlers, api, body)
        await send_json(send, 200, dry_run(handler, body, policy, tier))
