"""A streamed body's chunks as the relay reads them: whatever has arrived comes back at once,
joined when several chunks are buffered, never waiting for more, bytes intact and in order."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.upstream.connection import Connection, Response
from wire_connection import Owner, chunked, split, sse_response


def _now(r: Response) -> bytes | None:
    """The next chunk, which must be there without suspending (the coroutine finishes on its
    first step)."""
    coro = r.next_chunk()
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()  # type: ignore[attr-defined]
    raise AssertionError("the read waited although data had arrived")


def test_buffered_chunks_come_back_joined_in_one_read() -> None:
    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        r.stream_timeouts(10.0)
        events = [b'data: {"n": %d}\n\n' % i for i in range(3)]
        conn.data_received(b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events))
        assert _now(r) == b"".join(events)
        conn.data_received(b"%x\r\n%s\r\n" % (len(events[0]), events[0]))
        assert _now(r) == events[0]
        conn.data_received(b"0\r\n\r\n")
        assert _now(r) is None

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    st.lists(st.booleans(), min_size=1, max_size=20),
)
def test_no_byte_waits_and_order_holds(
    events: list[bytes], cuts: list[int], read_after: list[bool]
) -> None:
    """The wire split anywhere; after each piece arrives the relay may read or not; every
    body byte that has arrived is returned by the next read without waiting."""
    wire = chunked(events)
    pieces = split(wire, cuts)

    async def main() -> None:
        conn = Connection(Owner())
        r = await sse_response(conn)
        r.stream_timeouts(10.0)
        got: list[bytes] = []
        ended = False
        for i, piece in enumerate(pieces):
            conn.data_received(piece)
            if read_after[i % len(read_after)] or i == len(pieces) - 1:
                while conn._body or conn._complete:  # something arrived: no waiting for it
                    chunk = _now(r)
                    if chunk is None:
                        ended = True
                        break
                    got.append(chunk)
                if ended:
                    break
        assert ended
        assert b"".join(got) == b"".join(events)

    asyncio.run(main())
