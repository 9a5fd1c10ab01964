"""The seam between :class:`~arbstr.upstream.client.UpstreamClient` and an HTTP transport:
where a request goes (:class:`Target`), what a transport and its responses must offer, and
the two errors that tell "never sent" from "sent, then broken".

The real implementation is :mod:`arbstr.upstream.transport`; tests can put a scripted
in-memory one in its place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from arbstr.urls import HttpUrl, parse_http_url


class ConnectFailed(OSError):
    """Could not get a connection (refused, DNS, TLS, connect timeout, pool full until the
    connect timeout): the request was never sent."""


class ResponseBroken(OSError):
    """The connection broke, or the answer was not valid HTTP, after the request was sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one provider's chat endpoint lives, with its request head pre-encoded."""

    scheme: str
    host: str  # without brackets for IPv6 literals
    port: int
    path: bytes
    head_prefix: bytes  # request line and fixed headers, up to (not including) Content-Length

    @classmethod
    def for_url(cls, url: str | HttpUrl, extra_headers: dict[str, str]) -> Target:
        """``ValueError`` for a URL that config validation would reject too."""
        u = parse_http_url(url) if isinstance(url, str) else url
        lines = [f"POST {u.path} HTTP/1.1", f"Host: {u.host_header}"]
        lines += [f"{k}: {v}" for k, v in extra_headers.items()]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return cls(u.scheme, u.host, u.port, u.path.encode("latin-1"), head)


class HttpResponse(Protocol):
    """One upstream answer, readable once."""

    status: int
    headers: dict[str, str]  # lower-case names

    async def read(self) -> bytes:
        """The whole body, then the response is closed."""
        ...

    def next_chunk(self) -> Awaitable[bytes | None]:
        """Body bytes that arrived since the last call (waiting for some); None at the end."""
        ...

    def pump(self, sink: Callable[[bytes], bool]) -> Awaitable[bool]:
        """Body bytes to ``sink`` as they arrive until it returns True (then True) or the body
        ends (False); see :meth:`arbstr.upstream.connection.Response.pump`."""
        ...

    def stream_timeouts(self, idle_timeout_s: float) -> None:
        """No overall deadline from now on; ``TimeoutError`` after ``idle_timeout_s``
        without data."""
        ...

    def close(self) -> None:
        """Release the connection: reused if the body was read to the end, else dropped."""
        ...


class HttpTransport(Protocol):
    async def post(
        self,
        target: Target,
        body: bytes,
        extra_head: bytes,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> HttpResponse:
        """Send ``POST`` and return once the response head is in. ``extra_head`` holds
        per-request header lines, each ending in CRLF. Raises :class:`ConnectFailed` (never
        sent), :class:`ResponseBroken` or another ``OSError`` (sent, then broken) and
        ``TimeoutError`` (no answer within ``timeout_s``)."""
        ...

    def close(self) -> None: ...


async def pump_by_reading(
    next_chunk: Callable[[], Awaitable[bytes | None]], sink: Callable[[bytes], bool]
) -> bool:
    """``pump`` for a body read by awaiting its parts (in-memory and replayed ones)."""
    while (chunk := await next_chunk()) is not None:
        if sink(chunk):
            return True
    return False
