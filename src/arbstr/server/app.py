"""The ASGI application: route table, auth for admin routes, lifespan."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from arbstr.apis.base import Api
from arbstr.apis.count_tokens import COUNT_TOKENS
from arbstr.apis.registry import APIS, by_name, routes
from arbstr.errors import AuthError, InternalError, MethodNotAllowed, NotFound
from arbstr.server import admin, stats
from arbstr.server.count_tokens import CountTokensHandler
from arbstr.server.delivery import TrackedSend
from arbstr.server.dryrun import RouteHandler
from arbstr.server.gateway import Gateway
from arbstr.server.http import Receive, Scope, Send, check_bearer, send_error
from arbstr.server.pipeline import ApiHandler

log = logging.getLogger("arbstr.server")

AdminRoute = Callable[[Gateway, Send], Awaitable[None]]

_GET_ROUTES: dict[str, AdminRoute] = {
    "/health": admin.health,
    "/providers": admin.providers,
    "/v1/models": admin.models,
    "/v1/balances": admin.balances,
    "/v1/budgets": admin.budgets,
}
# routes that read the query string
_QUERY_ROUTES: dict[str, Callable[[Gateway, Scope, Send], Awaitable[None]]] = {
    "/v1/stats": stats.stats,
    "/v1/requests": stats.requests,
}
_PUBLIC = frozenset({"/health"})


class App:
    """Plain ASGI callable. Each client API's paths (``apis``, default every registered one)
    go straight to its :class:`ApiHandler`."""

    def __init__(self, gateway: Gateway, apis: Iterable[Api] = APIS) -> None:
        self.gateway = gateway
        apis = tuple(apis)
        fallbacks = by_name(apis)
        handlers = {id(a): ApiHandler(gateway, a, fallbacks) for a in apis}
        self.api_routes: dict[str, ApiHandler | CountTokensHandler | RouteHandler] = {
            p: handlers[id(a)] for p, a in routes(apis).items()
        }
        if any(a.name == "messages" for a in apis):
            counter = CountTokensHandler(gateway)
            self.api_routes[COUNT_TOKENS.path] = counter
            self.api_routes[COUNT_TOKENS.path[3:]] = counter  # without /v1, as the others
        # the dry run, over the same handlers (their served providers and tiers)
        named = {name: handlers[id(a)] for name, a in fallbacks.items()}
        self.api_routes["/v1/route"] = RouteHandler(gateway, named)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            handler = self.api_routes.get(path)
            if handler is not None:  # every method: the handler answers (and logs) a 405 too
                await handler(scope, receive, send)
                return
            out = TrackedSend(send)
            try:
                await self._admin(scope, path, out)
            except Exception as exc:  # the error boundary of the admin routes
                log.error("internal error on %s: %s", path, exc, exc_info=exc)
                if not out.started:
                    await send_error(out, InternalError("internal error in arbstr; see its log"))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _admin(self, scope: Scope, path: str, send: Send) -> None:
        gw = self.gateway
        key = path.rstrip("/") or path
        handler = _GET_ROUTES.get(key)
        if key == "/metrics" and gw.metrics is not None:  # off: a 404 like any unknown route
            handler = admin.metrics
        query_handler = _QUERY_ROUTES.get(key)
        if handler is None and query_handler is None:
            await send_error(send, NotFound(f"no route for {scope['method']} {path}"))
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed(f"{path} accepts GET only"))
            return
        if (
            path not in _PUBLIC
            and gw.auth_token is not None
            and not check_bearer(scope, gw.auth_token)
        ):
            await send_error(send, AuthError("missing or invalid bearer token for arbstr"))
            return
        if query_handler is not None:
            await query_handler(gw, scope, send)
        elif handler is not None:
            await handler(gw, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.gateway.close()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
