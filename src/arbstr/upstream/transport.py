"""A lean HTTP/1.1 client for the chat hot path: keep-alive pools per upstream, request heads
pre-encoded per provider, responses parsed by httptools (the C parser uvicorn uses).

Why not aiohttp here: measured on this project's benchmark (bench/README.md), aiohttp's
client spends ~390k instructions per request — a third of the proxy's whole cost — and a
uvicorn + aiohttp forwarder tops out near 2,100-2,900 req/s on one core; the same forwarder
on a bare asyncio pool does ~8,000. aiohttp stays for the low-traffic calls (price
discovery, balances, Nostr).

Errors: :class:`ConnectFailed` (nothing was sent), :class:`ResponseBroken` (the connection
broke or the answer was malformed after the request was sent; an ``OSError``), and
``TimeoutError`` when a deadline passes or a stream goes quiet.

Timeouts are one timer per connection (``loop.call_at``), not an ``asyncio.timeout`` scope
per request and per chunk: the timer fails the waiting future directly, and a stream's idle
timer is re-armed only when it fires (from the time of the last data), not on every chunk.
"""

from __future__ import annotations

import asyncio
import collections
import math
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_MAX_IDLE_PER_POOL = 256
_ssl_context: ssl.SSLContext | None = None


def _default_ssl() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class ConnectFailed(OSError):
    """Could not open a connection: the request was never sent."""


class ResponseBroken(OSError):
    """The connection broke, or the answer was not valid HTTP, after the request was sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one provider's chat endpoint lives, with its request head pre-encoded."""

    scheme: str
    host: str
    port: int
    path: bytes
    head_prefix: bytes  # request line and fixed headers, up to (not including) Content-Length

    @classmethod
    def for_url(cls, url: str, extra_headers: dict[str, str]) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = port == (443 if parts.scheme == "https" else 80)
        host_header = parts.hostname if default_port else f"{parts.hostname}:{port}"
        if ":" in parts.hostname and not default_port:  # IPv6 literal
            host_header = f"[{parts.hostname}]:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}"]
        lines += [f"{k}: {v}" for k, v in extra_headers.items()]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return cls(parts.scheme, parts.hostname, port, path.encode(), head)


class Response:
    """One upstream answer, readable once: :meth:`read`, or :meth:`next_chunk` after
    :meth:`stream_timeouts`."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # lower-case names

    async def read(self) -> bytes:
        """The whole body (within the deadline given to :meth:`Transport.post`)."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            chunk = await conn.next_body()
            if chunk is None:
                break
            parts.append(chunk)
        self.close()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def next_chunk(self) -> bytes | None:
        """The body bytes that have arrived since the last call (waiting for some), or None at
        the end of the body."""
        return await self._conn.next_body()

    def stream_timeouts(self, idle_timeout_s: float) -> None:
        """From now on no overall deadline, but ``TimeoutError`` when nothing arrives for
        ``idle_timeout_s`` (for a stream, once its first bytes are in)."""
        self._conn.set_timeouts(math.inf, idle_timeout_s)

    def close(self) -> None:
        """Return the connection to its pool if the answer was read to the end, else drop it
        (which is how a cancelled stream stops the upstream at once)."""
        self._conn.finish()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf  # loop time by which the answer must be complete
        self._idle = math.inf  # seconds without data after which a stream times out
        self._last_data = 0.0
        self._reset_request()

    def _reset_request(self) -> None:
        self._headers: dict[str, str] = {}
        self._head_waiter: asyncio.Future[Response] | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._body_waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._headers_done = False
        self._eof_delimited = False
        self._keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._idle != math.inf:
            self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseBroken("unexpected protocol upgrade from upstream"))
        except httptools.HttpParserError as exc:
            self._fail(ResponseBroken(f"malformed HTTP from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._complete:
            return
        if self._headers_done and self._eof_delimited and exc is None:
            self.on_message_complete()  # a body delimited by the end of the connection
            return
        if self._head_waiter is not None or self._headers_done:
            what = "mid-body" if self._headers_done else "before any response"
            self._fail(ResponseBroken(f"upstream closed the connection {what}"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()  # only valid while in the head
        h = self._headers
        self._eof_delimited = "content-length" not in h and "chunked" not in h.get(
            "transfer-encoding", ""
        )
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim answer: wait for the real one
            self._headers_done = False
            self._headers = {}
            return
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self, status, h))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self._headers_done:
            self._complete = True
            self._wake()

    # -- timeouts -----------------------------------------------------------------------------

    def set_timeouts(self, deadline: float, idle_s: float) -> None:
        """Fail the exchange with ``TimeoutError`` at loop time ``deadline``, or after
        ``idle_s`` seconds without data, whichever comes first (``math.inf``: never)."""
        self._deadline = deadline
        self._idle = idle_s
        self._last_data = self._loop.time()
        self._cancel_timer()
        expiry = min(deadline, self._last_data + idle_s)
        if expiry != math.inf:
            self._timer = self._loop.call_at(expiry, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(TimeoutError("no complete response before the timeout"))
        elif now >= self._last_data + self._idle:
            self._fail(TimeoutError(f"no data for {self._idle:g} s"))
        else:  # data came since the timer was set: wait for the rest of the idle period
            self._timer = self._loop.call_at(
                min(self._deadline, self._last_data + self._idle), self._on_timer
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- request side -------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def send(self, data: bytes, timeout_s: float) -> Response:
        """Write one request and wait for the response head; the whole answer is due within
        ``timeout_s`` (see :meth:`set_timeouts`)."""
        assert self.transport is not None
        self._head_waiter = self._loop.create_future()
        self.set_timeouts(self._loop.time() + timeout_s, math.inf)
        self.transport.write(data)
        return await self._head_waiter

    async def next_body(self) -> bytes | None:
        while True:
            if self._body:
                return self._body.popleft()
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None

    def finish(self) -> None:
        self._cancel_timer()
        reusable = self._complete and not self.closed and self._error is None and self._keep_alive
        if reusable:
            self._reset_request()
            self._pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Idle keep-alive connections to one (scheme, host, port)."""

    def __init__(self, target: Target) -> None:
        self.scheme, self.host, self.port = target.scheme, target.host, target.port
        self._idle: list[_Connection] = []

    async def acquire(self, connect_timeout_s: float) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        tls = self.scheme == "https"
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, proto = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=_default_ssl() if tls else None,
                    server_hostname=self.host if tls else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"connect to {self.host}:{self.port} timed out after {connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return proto

    def put(self, conn: _Connection) -> None:
        if len(self._idle) < _MAX_IDLE_PER_POOL:
            self._idle.append(conn)
        else:
            conn.abort()

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()


class Transport:
    """Pools by (scheme, host, port); one request at a time per connection."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int], Pool] = {}

    def pool(self, target: Target) -> Pool:
        key = (target.scheme, target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(target)
        return pool

    async def post(
        self,
        target: Target,
        body: bytes,
        extra_head: bytes,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> Response:
        """Send ``POST`` with ``body`` and return once the response head is in. ``extra_head``
        holds per-request header lines, each ending in CRLF. The connection must be open within
        ``connect_timeout_s``, and the whole answer in within ``timeout_s`` (a stream changes
        that with :meth:`Response.stream_timeouts`)."""
        conn = await self.pool(target).acquire(connect_timeout_s)
        data = b"".join(
            (
                target.head_prefix,
                extra_head,
                b"Content-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        try:
            return await conn.send(data, timeout_s)
        except BaseException:
            conn.abort()
            raise

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
