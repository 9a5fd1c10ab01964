"""A body pumped to a callback as httptools parses it (the stream relay's fast path): every
byte once and in order wherever the wire is split and wherever the callback stops, the rest
kept for the next read; failures of the upstream, of time and of the callback each raised as
themselves."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.upstream.connection import Connection
from arbstr.upstream.protocol import ResponseBroken
from wire_connection import Owner, chunked, split, sse_response


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    st.lists(st.booleans(), min_size=1, max_size=20),
)
def test_every_byte_once_in_order_wherever_the_sink_stops(
    events: list[bytes], cuts: list[int], stops: list[bool]
) -> None:
    """The wire split anywhere; the sink stops after some parts; the relay then reads once
    with next_chunk and pumps again, as relay_stream does when the client's buffer fills."""
    wire = chunked(events)
    pieces = split(wire, cuts)

    async def feed(conn: Connection) -> None:
        for piece in pieces:
            await asyncio.sleep(0)
            conn.data_received(piece)

    async def main() -> None:
        owner = Owner()
        conn = Connection(owner)
        r = await sse_response(conn)
        r.stream_timeouts(10.0)
        got: list[bytes] = []
        n = itertools.count()

        def sink(part: bytes) -> bool:
            assert part
            got.append(part)
            return stops[next(n) % len(stops)]

        feeding = asyncio.ensure_future(feed(conn))
        while True:
            if not await r.pump(sink):
                break
            chunk = await r.next_chunk()
            if chunk is None:
                break
            got.append(chunk)
        await feeding
        assert b"".join(got) == b"".join(events)
        r.close()
        assert owner.reused == [conn]  # read to the end: the connection is kept

    asyncio.run(main())


def test_parts_buffered_before_the_pump_go_to_the_sink_first() -> None:
    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        conn.data_received(b"3\r\nabc\r\n")
        got: list[bytes] = []

        def sink(part: bytes) -> bool:
            got.append(part)
            return False

        pumping = asyncio.ensure_future(r.pump(sink))
        await asyncio.sleep(0)
        assert got == [b"abc"]
        conn.data_received(b"2\r\nde\r\n0\r\n\r\n")
        assert await pumping is False
        assert got == [b"abc", b"de"]

    asyncio.run(main())


def test_an_upstream_that_breaks_mid_pump_is_response_broken() -> None:
    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        pumping = asyncio.ensure_future(r.pump(lambda part: False))
        await asyncio.sleep(0)
        conn.data_received(b"3\r\nabc\r\n")
        conn.connection_lost(None)
        with pytest.raises(ResponseBroken, match="mid-body"):
            await pumping

    asyncio.run(main())


def test_a_quiet_upstream_times_out_mid_pump() -> None:
    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        r.stream_timeouts(0.05)
        with pytest.raises(TimeoutError):
            await r.pump(lambda part: False)

    asyncio.run(main())


def test_the_sinks_own_failure_is_raised_as_itself_and_drops_the_connection() -> None:
    """Not as a broken upstream (httptools would wrap an exception raised in its callback);
    the connection, its body read only in part, is not reused."""

    async def main() -> None:
        owner = Owner()
        conn = Connection(owner)
        r = await sse_response(conn)

        def sink(part: bytes) -> bool:
            raise ValueError("trailer failed")

        pumping = asyncio.ensure_future(r.pump(sink))
        await asyncio.sleep(0)
        conn.data_received(b"3\r\nabc\r\n")
        with pytest.raises(ValueError, match="trailer failed"):
            await pumping
        r.close()
        assert owner.reused == [] and conn.closed

    asyncio.run(main())


def test_what_one_read_brings_goes_to_the_sink_at_once_joined() -> None:
    """A relay that fell behind gets the chunks of one read in one call (one write to the
    client), and only after the read is parsed: the end of the body in the same read is seen
    after them."""

    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        calls: list[bytes] = []

        def sink(part: bytes) -> bool:
            calls.append(part)
            return False

        pumping = asyncio.ensure_future(r.pump(sink))
        await asyncio.sleep(0)
        conn.data_received(chunked([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]))
        assert await pumping is False
        assert calls == [b"data: 1\n\ndata: 2\n\ndata: 3\n\n"]

    asyncio.run(main())
