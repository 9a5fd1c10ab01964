"""``POST /v1/messages/count_tokens``: asked of the cheapest provider that serves Anthropic
Messages natively, else (no such provider, or it failed) answered locally with an estimate.

Counting is free and is not a completion, so it writes no request-log row and is never
retried; ``x-arbstr-count-source: provider|estimate`` says where the number came from.
Errors are Anthropic-shaped."""

from __future__ import annotations

import logging

from arbstr.apis.base import ApiRequest
from arbstr.apis.count_tokens import COUNT_TOKENS, estimate_of
from arbstr.errors import ArbstrError, AuthError, InvalidRequest, MethodNotAllowed
from arbstr.routing import route, select_policy
from arbstr.server.exchange import header_value
from arbstr.server.gateway import Gateway
from arbstr.server.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    check_bearer,
    check_x_api_key,
    read_body,
    send_bytes,
)
from arbstr.server.ids import new_request_id
from arbstr.upstream import AttemptFailed

log = logging.getLogger("arbstr.count_tokens")
JSON = (b"content-type", b"application/json")
FORWARD = tuple(n.encode("latin-1") for n in COUNT_TOKENS.forward_headers)


class CountTokensHandler:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id()
        headers = [(b"x-arbstr-request-id", rid.encode())]
        try:
            body = await self._checked_body(scope, receive)
            req = COUNT_TOKENS.parse(body)
        except ClientGone:
            return
        except ArbstrError as err:
            message = self.gw.redactor.text(err.message)
            error = COUNT_TOKENS.error_body(err.status, err.type, err.code, message)
            await send_bytes(send, err.status, error, [JSON, *headers])
            return
        answer = await self._ask_provider(scope, body, req, rid)
        if answer is not None:
            provider, model, reply = answer
            headers.append((b"x-arbstr-provider", provider.encode()))
            headers.append((b"x-arbstr-model", header_value(model)))
            headers.append((b"x-arbstr-count-source", b"provider"))
            await send_bytes(send, 200, self.gw.redactor.bytes(reply), [JSON, *headers])
            return
        headers.append((b"x-arbstr-count-source", b"estimate"))
        await send_bytes(send, 200, COUNT_TOKENS.local_answer(estimate_of(req)), [JSON, *headers])

    async def _checked_body(self, scope: Scope, receive: Receive) -> bytes:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['path']} accepts POST only")
        token = self.gw.auth_token
        if token is not None and not (check_bearer(scope, token) or check_x_api_key(scope, token)):
            raise AuthError("missing or invalid x-api-key / bearer token for arbstr")
        length: int | None = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length header") from None
        return await read_body(receive, self.gw.config.server.max_body_bytes, length)

    async def _ask_provider(
        self, scope: Scope, body: bytes, req: ApiRequest, rid: str
    ) -> tuple[str, str, bytes] | None:
        """``(provider, model, answer)`` of the first-ranked native provider, or None (then
        arbstr estimates)."""
        gw = self.gw
        native = [p for p in gw.prices.providers if "messages" in p.apis]
        if not native:
            return None
        policy_header = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-arbstr-policy"), None
        )
        try:
            rule = select_policy(gw.config.policies, policy_header, req.last_user_text)
            r = route(native, rule, req.model, estimate_of(req), lambda _: 0, {})
        except ArbstrError:
            return None  # no native provider for this model: estimate
        cand = r.candidates[0]
        if gw.health.state(cand.provider.name) == "open":
            return None  # cooling down after failures: not worth the wait for a count
        extra = b"".join(
            k + b": " + v + b"\r\n"
            for k, v in scope["headers"]
            if k in FORWARD and b"\r" not in v and b"\n" not in v
        )
        upstream = COUNT_TOKENS.upstream_body(body, req, cand.model)
        timeout = min(gw.config.server.request_timeout_s, gw.config.server.connect_timeout_s + 5)
        try:
            reply = await gw.upstream.complete(
                cand.provider,
                upstream,
                rid,
                timeout,
                COUNT_TOKENS.upstream_path,
                extra,
                lambda _body, _p, _r: None,
            )
        except (AttemptFailed, ArbstrError, OSError, TimeoutError) as exc:
            log.info(
                "count_tokens: %s failed (%s); answering with an estimate",
                cand.provider.name,
                gw.redactor.text(str(exc)),
                extra={"request_id": rid},
            )
            return None
        return cand.provider.name, cand.model, reply.body
