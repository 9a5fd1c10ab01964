"""One upstream HTTP/1.1 connection: a request at a time, the answer parsed by httptools (the C
parser uvicorn uses), and its timeouts.

A body is read either by awaiting each part (:meth:`Response.next_chunk`) or pumped: each part
goes to a callback as httptools parses it (:meth:`Response.pump`), which spares a stream the
future, task wake-up and coroutine resumption of every awaited chunk.

Timeouts are one timer per connection (``loop.call_at``), not an ``asyncio.timeout`` scope per
request and per chunk: the timer fails the waiting future directly, and a stream's idle timer
is re-armed only when it fires (from the time of the last data), not on every chunk."""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import httptools

from arbstr.upstream.protocol import ResponseBroken

# a server's ``Keep-Alive: timeout=N`` is trusted up to this much before N, so that a request
# is not sent just as the server closes the connection
SERVER_KEEPALIVE_MARGIN_S = 0.5


class Owner(Protocol):
    """Where a connection goes when its exchange is over (its pool)."""

    def put(self, conn: Connection) -> None: ...

    def discard(self, conn: Connection) -> None: ...


def server_keepalive_s(value: str) -> float:
    """How long a connection may idle by a ``Keep-Alive`` header (``timeout=5, max=100``):
    its timeout minus :data:`SERVER_KEEPALIVE_MARGIN_S`; ``math.inf`` when it names none."""
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(0.0, float(number.strip()) - SERVER_KEEPALIVE_MARGIN_S)
            except ValueError:
                return math.inf
    return math.inf


class Response:
    """One upstream answer, readable once: :meth:`read`, or :meth:`next_chunk` after
    :meth:`stream_timeouts`."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # lower-case names

    async def read(self) -> bytes:
        """The whole body (within the deadline given to the transport's ``post``)."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            chunk = await conn.next_body()
            if chunk is None:
                break
            parts.append(chunk)
        self.close()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def next_chunk(self) -> Awaitable[bytes | None]:
        """The body bytes that have arrived since the last call (waiting for some), or None at
        the end of the body. (Returns the connection's coroutine itself: one frame less per
        chunk.)"""
        return self._conn.next_body()

    def pump(self, sink: Callable[[bytes], bool]) -> Awaitable[bool]:
        """Hand the body to ``sink`` as it arrives, from the connection's data callback (what
        one read brought, joined), until ``sink`` returns True (stop: True; what comes next
        is buffered for :meth:`next_chunk`) or the body ends (False). Upstream failures and
        timeouts raise as from :meth:`next_chunk`; an exception of ``sink`` as it is."""
        return self._conn.pump(sink)

    def stream_timeouts(self, idle_timeout_s: float) -> None:
        """From now on no overall deadline, but ``TimeoutError`` when nothing arrives for
        ``idle_timeout_s`` (for a stream, once its first bytes are in)."""
        self._conn.set_timeouts(math.inf, idle_timeout_s)

    def close(self) -> None:
        """Return the connection to its pool if the answer was read to the end, else drop it
        (which is how a cancelled stream stops the upstream at once)."""
        self._conn.finish()


class Connection(asyncio.Protocol):
    """Holds one of its owner's connection slots while ``counted`` (set by the owner once
    connected). Data from the server between exchanges (no request waiting) closes it."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = False  # holds one of the owner's connection slots
        self.idle = False  # in the owner's idle list
        self.expires = 0.0  # loop time after which an idle connection is not reused
        self.server_keepalive_s = math.inf  # from the last answer's Keep-Alive header
        self._parser = httptools.HttpResponseParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf  # loop time by which the answer must be complete
        self._idle_s = math.inf  # seconds without data after which a stream times out
        self._last_data = 0.0
        self._reset_request()

    def _reset_request(self) -> None:
        self._headers: dict[str, str] = {}
        self._head_waiter: asyncio.Future[Response] | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._body_waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], bool] | None = None  # pumping to it (see pump)
        self._sink_error: Exception | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._headers_done = False
        self._eof_delimited = False
        self._keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._head_waiter is None:  # between exchanges: nothing may come now
            self.abort()
            return
        if self._idle_s != math.inf:
            self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseBroken("unexpected protocol upgrade from upstream"))
        except httptools.HttpParserError as exc:
            self._fail(ResponseBroken(f"malformed HTTP from upstream: {exc}"))
        if self._sink is not None and self._body:
            self._push(self._sink)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release()
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
        keep_alive = h.get("keep-alive")
        if keep_alive is not None:
            self.server_keepalive_s = server_keepalive_s(keep_alive)
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self, status, h))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if self._sink is None:  # (pumped: handed over once the whole read is parsed)
            self._wake()

    def _push(self, sink: Callable[[bytes], bool]) -> None:
        """The body parts of one read, joined, to the pump's sink (outside httptools' callbacks,
        which would wrap its exceptions as parse errors)."""
        try:
            if not sink(self._take_body()):
                return
        except Exception as exc:  # the sink's failure, not the upstream's: pump raises it
            self._sink_error = exc
        self._sink = None  # stopped: what comes next is buffered
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
        self._idle_s = idle_s
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
        elif now >= self._last_data + self._idle_s:
            self._fail(TimeoutError(f"no data for {self._idle_s:g} s"))
        else:  # data came since the timer was set: wait for the rest of the idle period
            self._timer = self._loop.call_at(
                min(self._deadline, self._last_data + self._idle_s), self._on_timer
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

    def _take_body(self) -> bytes:
        body = self._body
        if len(body) == 1:
            return body.popleft()
        out = b"".join(body)
        body.clear()
        return out

    async def next_body(self) -> bytes | None:
        """Everything buffered since the last call, joined (never waiting for more when some
        is there): when the relay falls behind, several chunks go out in one write."""
        while True:
            if self._body:
                return self._take_body()
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None

    async def pump(self, sink: Callable[[bytes], bool]) -> bool:
        """See :meth:`Response.pump`."""
        if self._body and sink(self._take_body()):
            return True
        self._sink = sink
        self._sink_error = None
        try:
            while self._sink is not None:
                if self._error is not None:
                    raise self._error
                if self._complete:
                    return False
                self._body_waiter = self._loop.create_future()
                try:
                    await self._body_waiter
                finally:
                    self._body_waiter = None
        finally:
            self._sink = None
        if self._sink_error is not None:
            error, self._sink_error = self._sink_error, None
            raise error
        return True

    def finish(self) -> None:
        self._cancel_timer()
        reusable = self._complete and not self.closed and self._error is None and self._keep_alive
        if reusable:
            self._reset_request()
            self._owner.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        self._release()

    def _release(self) -> None:
        """Give the connection's slot back to its owner, once."""
        if self.counted:
            self.counted = False
            self._owner.discard(self)
