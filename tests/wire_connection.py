"""An upstream :class:`~arbstr.upstream.connection.Connection` fed by hand, for tests of how
it reads a body: no socket, the bytes given to ``data_received`` as the wire would."""

from __future__ import annotations

import asyncio
import itertools

from arbstr.upstream.connection import Connection, Response

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class Owner:
    """The connection's pool: records the connections given back for reuse."""

    def __init__(self) -> None:
        self.reused: list[Connection] = []

    def put(self, conn: Connection) -> None:
        self.reused.append(conn)

    def discard(self, conn: Connection) -> None:
        pass


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


def chunked(events: list[bytes]) -> bytes:
    """``events`` as a chunked body, one HTTP chunk each, with its end."""
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    """``wire`` cut at the given offsets (taken modulo its length), in order, none empty."""
    points = sorted({c % len(wire) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


async def sse_response(conn: Connection) -> Response:
    """A request sent on ``conn`` and the head of a chunked SSE answer received."""
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    pending = asyncio.ensure_future(conn.send(b"POST / HTTP/1.1\r\n\r\n", 10.0))
    await asyncio.sleep(0)
    conn.data_received(SSE_HEAD)
    return await pending
