"""Small plain-ASGI helpers: reading bodies, sending JSON and errors."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import msgspec

from arbstr.errors import ArbstrError, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


async def read_body(receive: Receive, limit: int, content_length: int | None) -> bytes:
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"request body of {content_length} bytes exceeds the {limit} limit")
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        return body
    parts = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        parts.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    hdrs: Headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, obj: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, _encode(obj), [JSON_CT, *headers])


async def send_error(
    send: Send, err: ArbstrError, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, err.status, err.body(), [JSON_CT, *headers])


def check_bearer(scope: Scope, expected: bytes) -> bool:
    """Constant-time comparison of ``Authorization: Bearer <token>``."""
    for k, v in scope["headers"]:
        if k == b"authorization":
            scheme, _, token = v.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)
    return False


def check_x_api_key(scope: Scope, expected: bytes) -> bool:
    """Constant-time comparison of ``x-api-key: <token>`` (how Anthropic clients send it)."""
    for k, v in scope["headers"]:
        if k == b"x-api-key":
            return hmac.compare_digest(v.strip(), expected)
    return False


def body_writer(send: Send) -> Callable[[bytes], bool] | None:
    """For a started chunked response served by uvicorn: ``write(body)`` puts one body part
    on the client's socket at once, as ``send`` would but with no ASGI message and no await,
    and returns whether the client takes more now (False: it left, or its buffer is full and
    the next part should go through ``send``, which waits). Empty parts are skipped (one
    would end the body). None for any other server (or another uvicorn): use ``send``."""
    send = getattr(send, "server_send", send)  # under a wrapper that tracks the response
    cycle: Any = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
    flow: Any = getattr(cycle, "flow", None)
    write = getattr(getattr(cycle, "transport", None), "write", None)
    if (
        write is None
        or not hasattr(flow, "write_paused")
        or getattr(cycle, "chunked_encoding", None) is not True
        or getattr(cycle, "response_complete", None) is not False
        or not hasattr(cycle, "disconnected")
    ):
        return None

    def write_part(body: bytes) -> bool:
        if cycle.disconnected:
            return False
        if body:
            write(b"%x\r\n%s\r\n" % (len(body), body))
        return not flow.write_paused

    return write_part
