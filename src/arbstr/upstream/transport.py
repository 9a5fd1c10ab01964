"""The chat hot path's HTTP/1.1 client: a keep-alive connection pool per upstream origin,
request heads pre-encoded per provider (:class:`Target`), answers parsed by httptools.

It replaces aiohttp's client on this one path because that client cost about a third of the
proxy's CPU per request (bench/README.md); aiohttp stays for the low-traffic calls (price
discovery, balances, Nostr).

Each pool, like httpcore's: at most ``max_connections`` open at once (busy, idle or
connecting), a request waiting for a free one up to its connect timeout; idle connections
reused newest first, never after ``keepalive_expiry_s`` (or the server's shorter
``Keep-Alive: timeout``) nor once the server closed them or sent anything unasked.

Errors: :class:`ConnectFailed` (nothing was sent), :class:`ResponseBroken` (the connection
broke or the answer was malformed after the request was sent; an ``OSError``), and
``TimeoutError`` when a deadline passes or a stream goes quiet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl

from arbstr.upstream.connection import Connection, Response
from arbstr.upstream.protocol import ConnectFailed, Target

DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_KEEPALIVE_EXPIRY_S = 5.0
# the idle sweep runs at most this often, so a pool of many connections idling since slightly
# different times does not wake the loop for each one
_SWEEP_GRANULARITY_S = 0.1

_Waiter = asyncio.Future[Connection | None]  # a connection handed over, or None: a free slot


class Pool:
    """Connections to one (scheme, host, port)."""

    def __init__(
        self,
        target: Target,
        *,
        max_connections: int,
        keepalive_expiry_s: float,
        ssl_context: ssl.SSLContext | None,  # None for http
    ) -> None:
        self.scheme, self.host, self.port = target.scheme, target.host, target.port
        self.max_connections = max_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._ssl = ssl_context
        self._loop = asyncio.get_running_loop()
        self._idle: list[Connection] = []  # oldest first; reused from the end
        self._open = 0  # connections holding a slot: busy, idle, or being connected
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def acquire(self, connect_timeout_s: float) -> Connection:
        """An idle connection, a new one while under the limit, else the first one freed;
        :class:`ConnectFailed` when none is had within ``connect_timeout_s``."""
        idle = self._idle
        if idle:
            now = self._loop.time()
            while idle:
                conn = idle.pop()
                conn.idle = False
                sock = conn.transport
                if conn.expires > now and not conn.closed and sock and not sock.is_closing():
                    return conn
                conn.abort()
        if self._open < self.max_connections:
            self._open += 1
            return await self._connect(connect_timeout_s)
        return await self._wait(connect_timeout_s)

    async def _wait(self, connect_timeout_s: float) -> Connection:
        loop = self._loop
        deadline = loop.time() + connect_timeout_s
        while True:
            waiter: _Waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                got = await waiter
            except BaseException:  # timed out, pool closed, or cancelled
                if not waiter.done():
                    waiter.cancel()
                if waiter.cancelled() or waiter.exception() is not None:
                    self._forget(waiter)
                    if not waiter.cancelled() and isinstance(waiter.exception(), TimeoutError):
                        raise ConnectFailed(
                            f"no free connection to {self.host}:{self.port} within"
                            f" {connect_timeout_s:g} s ({self.max_connections} in use)"
                        ) from None
                else:  # cancelled just after being handed a connection or a slot
                    self._give_back(waiter.result())
                raise
            finally:
                timer.cancel()
            if got is None:  # a slot was passed on: open a connection with it
                return await self._connect(deadline - loop.time())
            if not got.closed:
                return got
            # closed on its way here (its slot went to the next waiter): wait on

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):  # already dropped by put() or _free_slot()
            self._waiters.remove(waiter)

    def _give_back(self, got: Connection | None) -> None:
        if got is None:
            self._free_slot()
        elif not got.closed:  # (a closed one freed its slot when it closed)
            self.put(got)

    async def _connect(self, timeout_s: float) -> Connection:
        """Open a connection in a slot already taken; the slot is freed if it fails."""
        tls = self._ssl is not None
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                _, conn = await self._loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if tls else None,
                )
        except TimeoutError:
            self._free_slot()
            raise ConnectFailed(
                f"connect to {self.host}:{self.port} timed out after {timeout_s:g} s"
            ) from None
        except OSError as exc:  # refused, DNS, TLS verification ...
            self._free_slot()
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        except BaseException:
            self._free_slot()
            raise
        if conn.closed:  # closed by the server before anything was sent
            self._free_slot()
            raise ConnectFailed(f"{self.host}:{self.port} closed the connection at once")
        conn.counted = True
        return conn

    def put(self, conn: Connection) -> None:
        """A connection whose exchange ended cleanly: to the first waiter, else idle."""
        if self._closed:
            conn.abort()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        now = self._loop.time()
        expires = now + min(self.keepalive_expiry_s, conn.server_keepalive_s)
        if expires <= now:
            conn.abort()
            return
        conn.expires = expires
        conn.idle = True
        self._idle.append(conn)
        timer = self._sweep_timer
        if timer is None or expires < timer.when():
            self._arm_sweep(expires, now)

    def discard(self, conn: Connection) -> None:
        """A connection closed: out of the idle list, and its slot freed."""
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to this waiter
                return
        self._open -= 1

    def _arm_sweep(self, when: float, now: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_timer = self._loop.call_at(max(when, now + _SWEEP_GRANULARITY_S), self._sweep)

    def _sweep(self) -> None:
        """Close the idle connections that have expired."""
        self._sweep_timer = None
        now = self._loop.time()
        keep: list[Connection] = []
        expired: list[Connection] = []
        for conn in self._idle:
            (keep if conn.expires > now else expired).append(conn)
        self._idle = keep
        for conn in expired:
            conn.idle = False
            conn.abort()
        if keep:
            self._arm_sweep(min(c.expires for c in keep), now)

    def close(self) -> None:
        """Fail the waiters, close the idle connections; busy ones close when they finish."""
        self._closed = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the transport was closed"))
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.idle = False
            conn.abort()


def _expire(waiter: _Waiter) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Transport:
    """Pools by (scheme, host, port); one request at a time per connection.

    ``ssl_context`` verifies https upstreams (default: ``ssl.create_default_context()``, the
    system's CAs, or those named by ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``)."""

    def __init__(
        self,
        *,
        max_connections_per_origin: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be at least 1")
        self.max_connections_per_origin = max_connections_per_origin
        self.keepalive_expiry_s = keepalive_expiry_s
        self.ssl_context = ssl_context  # None: the default one, made at the first https pool
        self._pools: dict[tuple[str, str, int], Pool] = {}

    def pool(self, target: Target) -> Pool:
        key = (target.scheme, target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(
                target,
                max_connections=self.max_connections_per_origin,
                keepalive_expiry_s=self.keepalive_expiry_s,
                ssl_context=self._tls() if target.scheme == "https" else None,
            )
        return pool

    def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()  # reads SSL_CERT_FILE / _DIR
        return self.ssl_context

    async def post(
        self,
        target: Target,
        body: bytes,
        extra_head: bytes,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> Response:
        """Send ``POST`` with ``body`` and return once the response head is in. ``extra_head``
        holds per-request header lines, each ending in CRLF. A connection must be had within
        ``connect_timeout_s``, and the whole answer within ``timeout_s`` (a stream changes
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
