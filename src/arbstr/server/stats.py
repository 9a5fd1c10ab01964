"""``GET /v1/stats`` and ``GET /v1/requests``: the request log, read off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qsl

from arbstr.errors import ArbstrError, DatabaseUnavailable, InvalidParameter, InvalidRequest
from arbstr.server.gateway import Gateway
from arbstr.server.http import JSON_CT, Scope, Send, send_bytes, send_error
from arbstr.storage import (
    encode,
    parse_requests_params,
    parse_stats_params,
    read_requests,
    read_stats,
)
from arbstr.storage.payloads import Payload

Q = TypeVar("Q")
_MAX_FIELDS = 50


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as a dict; a parameter given twice is an error naming it."""
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:
        raise InvalidRequest(
            f"too many query parameters (at most {_MAX_FIELDS})", code="invalid_parameter"
        ) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidParameter(name, "given more than once")
        params[name] = value
    return params


async def _serve(
    gw: Gateway,
    scope: Scope,
    send: Send,
    parse: Callable[[dict[str, str]], Q],
    read: Callable[[str, Q], Payload],
) -> None:
    try:
        query = parse(query_params(scope))
        if gw.store is None:
            raise DatabaseUnavailable("arbstr runs without a request log (no database)")
        result = await asyncio.to_thread(read, gw.store.path, query)
    except ArbstrError as err:
        await send_error(send, err)
        return
    # rows an older arbstr wrote may hold an echoed key: the answer is redacted as a whole
    await send_bytes(send, 200, gw.redactor.bytes(encode(result)), [JSON_CT])


async def stats(gw: Gateway, scope: Scope, send: Send) -> None:
    await _serve(gw, scope, send, lambda p: parse_stats_params(p), read_stats)


async def requests(gw: Gateway, scope: Scope, send: Send) -> None:
    await _serve(gw, scope, send, lambda p: parse_requests_params(p), read_requests)
