"""Tests for the incremental SSE parser (arbstr.upstream.sse)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbstr.upstream.sse import CRLF_TAIL, SSEEvent, SSEParser

OPENAI_CHUNK = (
    b'data: {"id":"x","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
)


def feed_all(chunks: Iterable[bytes], parser: SSEParser | None = None) -> list[SSEEvent]:
    p = parser if parser is not None else SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(p.feed(chunk))
    return events


def datas(events: Sequence[SSEEvent]) -> list[bytes | None]:
    return [e.data for e in events]


def dispatched(events: Sequence[SSEEvent]) -> list[SSEEvent]:
    """The events as a browser would see them: without the :data:`CRLF_TAIL` pieces."""
    return [e for e in events if e is not CRLF_TAIL]


def merged(events: Sequence[SSEEvent]) -> list[bytes]:
    """Each event's raw, with a :data:`CRLF_TAIL` joined to the event it ends."""
    raws: list[bytes] = []
    for e in events:
        if e is CRLF_TAIL:
            assert raws and raws[-1].endswith(b"\r"), "a CRLF_TAIL follows an event ending in CR"
            raws[-1] += e.raw
        else:
            raws.append(e.raw)
    return raws


def split_at(blob: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted(set(cuts))
    chunks: list[bytes] = []
    prev = 0
    for c in points:
        chunks.append(blob[prev:c])
        prev = c
    chunks.append(blob[prev:])
    return chunks


def check_roundtrip(blob: bytes, chunks: Sequence[bytes]) -> list[SSEEvent]:
    p = SSEParser()
    events = feed_all(chunks, p)
    rest = p.flush()
    assert b"".join(e.raw for e in events) + rest == blob
    assert p.pending == 0
    return events


# --------------------------------------------------------------------------- unit tests


def test_single_openai_chunk() -> None:
    p = SSEParser()
    events = p.feed(OPENAI_CHUNK)
    assert len(events) == 1
    assert events[0].raw == OPENAI_CHUNK
    assert events[0].data == OPENAI_CHUNK[6:-2]
    assert events[0].event is None
    assert p.pending == 0
    assert p.flush() == b""


def test_single_event_fast_path_respects_state() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\n") == []
    # Looks like a lone one-event chunk, but continues the buffered event.
    assert datas(p.feed(b"data: b\n\n")) == [b"a\nb"]
    assert p.feed(b"da") == []
    assert datas(p.feed(b"data: c\n\n")) == [None]  # field "dadata" is unknown
    assert p.feed(b"event: e\n") == []
    events = p.feed(b"data: d\n\n")
    assert [(e.data, e.event) for e in events] == [(b"d", b"e")]
    assert datas(p.feed(b"data: a\rdata: b\n\n")) == [b"a\nb"]
    assert datas(p.feed(b"data: a\ndata: b\n\n")) == [b"a\nb"]
    assert datas(p.feed(b"data:\n\n")) == [b""]
    assert datas(p.feed(b"data:x\n\n")) == [b"x"]
    assert datas(p.feed(b"data: x\r")) == []
    assert datas(p.feed(b"data: y\n\n")) == [b"x\ny"]
    assert p.pending == 0
    # A CR ending the previous chunk must be forgotten once a full event follows it.
    assert datas(p.feed(b"data: a\r\r")) == [b"a"]
    assert datas(p.feed(b"data: b\n\n")) == [b"b"]
    assert datas(p.feed(b"\n")) == [None]


def test_bom_after_fast_path_event_is_not_stripped() -> None:
    p = SSEParser()
    assert datas(p.feed(b"data: a\n\n")) == [b"a"]
    assert datas(p.feed(b"\xef\xbb\xbfdata: b\n\n")) == [None]


def test_several_events_in_one_chunk() -> None:
    blob = b"data: a\n\ndata: b\n\ndata: [DONE]\n\n"
    events = SSEParser().feed(blob)
    assert datas(events) == [b"a", b"b", b"[DONE]"]
    assert [e.raw for e in events] == [b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n"]


def test_done_marker() -> None:
    events = SSEParser().feed(b"data: [DONE]\n\n")
    assert datas(events) == [b"[DONE]"]


def test_crlf() -> None:
    blob = b"data: a\r\n\r\ndata: b\r\n\r\n"
    events = SSEParser().feed(blob)
    assert datas(events) == [b"a", b"b"]
    assert [e.raw for e in events] == [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]


def test_lone_cr() -> None:
    blob = b"data: a\r\rdata: b\rdata: c\r\r"
    events = SSEParser().feed(blob)
    assert datas(events) == [b"a", b"b\nc"]
    assert [e.raw for e in events] == [b"data: a\r\r", b"data: b\rdata: c\r\r"]


def test_mixed_line_endings() -> None:
    blob = b"data: a\rdata: b\r\ndata: c\n\r\n"
    events = SSEParser().feed(blob)
    assert datas(events) == [b"a\nb\nc"]
    assert events[0].raw == blob


def test_crlf_split_across_chunks_mid_event() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.pending == 8
    assert p.feed(b"\ndata: b\r\n") == []
    events = p.feed(b"\r\n")
    assert datas(events) == [b"a\nb"]  # the split CRLF is one line ending, not a blank line
    assert events[0].raw == b"data: a\r\ndata: b\r\n\r\n"
    assert p.pending == 0


def test_crlf_split_across_chunks_at_dispatch() -> None:
    p = SSEParser()
    first = p.feed(b"data: a\r\n\r")
    # Dispatched at once, without waiting to see whether a LF follows.
    assert datas(first) == [b"a"]
    assert first[0].raw == b"data: a\r\n\r"
    # The LF completing the CRLF is not a blank line: it comes back as the marked tail of the
    # event it ends, at once, so a relay can forward (or drop) it with that event.
    tail = p.feed(b"\n")
    assert len(tail) == 1 and tail[0] is CRLF_TAIL and tail[0].raw == b"\n"
    assert p.pending == 0
    second = p.feed(b"data: b\r\n\r\n")
    assert datas(second) == [b"b"]
    assert second[0].raw == b"data: b\r\n\r\n"
    assert p.flush() == b""


def test_crlf_tail_then_more_events_in_the_same_chunk() -> None:
    p = SSEParser()
    assert datas(p.feed(b"data: a\r\r")) == [b"a"]
    events = p.feed(b"\ndata: b\n\ndata: c\n")
    assert events[0] is CRLF_TAIL
    assert [e.raw for e in events[1:]] == [b"data: b\n\n"]
    assert p.flush() == b"data: c\n"


def test_a_real_blank_line_after_a_cr_event_is_not_a_crlf_tail() -> None:
    p = SSEParser()
    assert datas(p.feed(b"data: a\r\r\n")) == [b"a"]  # the CRLF is whole: part of the event
    events = p.feed(b"\n")
    assert len(events) == 1 and events[0] is not CRLF_TAIL and events[0].data is None


def test_lf_after_a_cr_inside_an_event_stays_in_that_event() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n") == []
    events = p.feed(b"\n")
    assert [e.raw for e in events] == [b"data: a\r\n\n"]


def test_cr_at_chunk_end_followed_by_other_byte() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    events = p.feed(b"\r")
    assert datas(events) == [b"a"]
    assert p.feed(b"data: b\r") == []
    assert datas(p.feed(b"data: c\n\n")) == [b"b\nc"]


def test_comments() -> None:
    blob = b": keep-alive\n\n:another\ndata: x\n: mid comment\n\n"
    events = SSEParser().feed(blob)
    assert datas(events) == [None, b"x"]
    assert [e.raw for e in events] == [b": keep-alive\n\n", b":another\ndata: x\n: mid comment\n\n"]


def test_multiline_data() -> None:
    events = SSEParser().feed(b"data: line1\ndata: line2\ndata:\ndata: line4\n\n")
    assert datas(events) == [b"line1\nline2\n\nline4"]


def test_data_without_space_and_extra_spaces() -> None:
    events = SSEParser().feed(b"data:x\n\ndata:  two\n\ndata:\tt\n\n")
    # Only one leading space is removed.
    assert datas(events) == [b"x", b" two", b"\tt"]


def test_empty_data() -> None:
    events = SSEParser().feed(b"data:\n\ndata: \n\ndata\n\n")
    assert datas(events) == [b"", b"", b""]


def test_field_without_colon() -> None:
    events = SSEParser().feed(b"data\ndata\n\nevent\ndata: x\n\nfoo\n\n")
    assert datas(events) == [b"\n", b"x", None]
    assert events[1].event == b""
    assert events[2].raw == b"foo\n\n"


def test_event_field() -> None:
    blob = b"event: ping\ndata: 1\n\nevent:update\n\ndata: 2\n\n"
    events = SSEParser().feed(blob)
    assert [(e.event, e.data) for e in events] == [(b"ping", b"1"), (b"update", None), (None, b"2")]


def test_unknown_fields_ignored_but_kept() -> None:
    blob = b"id: 7\nretry: 100\nfoo: bar\ndata: x\nDATA: y\ndata : z\n\n"
    events = SSEParser().feed(blob)
    assert datas(events) == [b"x"]
    assert events[0].raw == blob


def test_colon_in_value() -> None:
    events = SSEParser().feed(b'data: {"a": "b:c"}\n\n')
    assert datas(events) == [b'{"a": "b:c"}']


def test_extra_blank_lines() -> None:
    blob = b"\n\ndata: a\n\n\n\r\ndata: b\n\n"
    events = check_roundtrip(blob, [blob])
    assert datas(events) == [None, None, b"a", None, None, b"b"]


def test_bom_stripped_from_first_line_only() -> None:
    bom = b"\xef\xbb\xbf"
    blob = bom + b"data: a\n\n" + bom + b"data: b\n\ndata: c\n\n"
    for chunks in ([blob], [blob[:1], blob[1:2], blob[2:5], blob[5:]], [bytes([b]) for b in blob]):
        events = check_roundtrip(blob, chunks)
        assert datas(events) == [b"a", None, b"c"]


def test_bom_then_blank_line() -> None:
    blob = b"\xef\xbb\xbf\ndata: a\n\n"
    events = check_roundtrip(blob, [blob])
    assert datas(events) == [None, b"a"]
    assert events[0].raw == b"\xef\xbb\xbf\n"


def test_split_everywhere_byte_by_byte() -> None:
    blob = (
        b': hi\r\nevent: e\rdata: {"k": 1}\r\ndata:two\n\r\ndata\r\rdata: [DONE]\n\n' + OPENAI_CHUNK
    )
    whole = check_roundtrip(blob, [blob])
    one_by_one = check_roundtrip(blob, [bytes([b]) for b in blob])
    expected: list[bytes | None] = [b'{"k": 1}\ntwo', b"", b"[DONE]", OPENAI_CHUNK[6:-2]]
    assert datas(whole) == datas(dispatched(one_by_one)) == expected
    assert merged(one_by_one) == merged(whole)
    assert [e.event for e in whole] == [b"e", None, None, None]
    for cut in range(len(blob) + 1):
        halves = check_roundtrip(blob, [blob[:cut], blob[cut:]])
        assert datas(dispatched(halves)) == expected
        assert merged(halves) == merged(whole)


def test_incomplete_event_and_flush() -> None:
    p = SSEParser()
    assert datas(p.feed(b"data: a\n\ndata: b\nda")) == [b"a"]
    assert p.pending == len(b"data: b\nda")
    assert p.flush() == b"data: b\nda"
    assert p.pending == 0
    assert p.flush() == b""
    # The parser starts afresh after a flush: the abandoned event's data is gone.
    assert datas(p.feed(b"data: c\n\n")) == [b"c"]


def test_pending_counts_partial_line_and_lines() -> None:
    p = SSEParser()
    p.feed(b"data: x")
    assert p.pending == 7
    p.feed(b"yz\nevent: q\n")
    assert p.pending == 19
    events = p.feed(b"\n")
    assert datas(events) == [b"xyz"]
    assert events[0].event == b"q"
    assert p.pending == 0


def test_empty_chunks_are_harmless() -> None:
    p = SSEParser()
    assert p.feed(b"") == []
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"") == []
    assert datas(p.feed(b"\n\r\n")) == [b"a"]


def test_event_is_cheap_value_object() -> None:
    e = SSEEvent(b"data: a\n\n", b"a")
    assert e == SSEEvent(b"data: a\n\n", b"a", None)
    assert not hasattr(e, "__dict__")


# ------------------------------------------------------------------------ long lines


@pytest.mark.parametrize("ending", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_10mb_line_in_4kb_pieces_is_linear(ending: bytes) -> None:
    payload = b'{"content":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    blob = b"data: " + payload + ending + b"data: [DONE]\n\n"
    step = 4096
    p = SSEParser()
    events: list[SSEEvent] = []
    t0 = time.perf_counter()
    for i in range(0, len(blob), step):
        events.extend(p.feed(blob[i : i + step]))
        if not events:
            assert p.pending == min(i + step, len(blob))
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"took {elapsed:.2f}s: not linear"
    assert datas(events) == [payload, b"[DONE]"]
    assert b"".join(e.raw for e in events) == blob
    assert p.flush() == b""


def test_many_lines_in_one_event_is_linear() -> None:
    # 200k short data lines in one event, fed in small pieces: must not rescan the event.
    blob = b"data: abcdefgh\n" * 200_000 + b"\n"
    p = SSEParser()
    events: list[SSEEvent] = []
    t0 = time.perf_counter()
    for i in range(0, len(blob), 1000):
        events.extend(p.feed(blob[i : i + 1000]))
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"took {elapsed:.2f}s: not linear"
    assert len(events) == 1
    assert events[0].raw == blob
    assert events[0].data == b"\n".join([b"abcdefgh"] * 200_000)


# ------------------------------------------------------------------- property tests

ENDINGS = (b"\n", b"\r\n", b"\r")

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
).map(repr)


def _no_newlines(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")


values = st.one_of(
    st.text(max_size=30).map(_no_newlines),
    json_like.map(_no_newlines),
    st.sampled_from([b"", b" ", b"[DONE]", b":", b"data: x", b"  lead"]),
)

# A line is (kind, value); kinds are interpreted by build_stream.
line_st = st.one_of(
    st.tuples(st.just("data_space"), values),
    st.tuples(st.just("data_nospace"), values),
    st.tuples(st.just("data_bare"), st.just(b"")),
    st.tuples(st.just("comment"), values),
    st.tuples(st.just("event"), values),
    st.tuples(st.just("unknown"), values),
)
event_st = st.lists(line_st, max_size=5)
stream_st = st.lists(event_st, max_size=8)


Expected = list[tuple[bytes | None, bytes | None]]


def build_stream(
    events: list[list[tuple[str, bytes]]], endings: list[bytes]
) -> tuple[bytes, Expected]:
    """Serialise the model; return the bytes and the expected (data, event) per dispatch."""
    out: list[bytes] = []
    expected: Expected = []
    it = iter(endings)
    prev_ending = b"\n"

    def emit(content: bytes) -> None:
        nonlocal prev_ending
        ending = next(it)
        if prev_ending == b"\r" and ending.startswith(b"\n"):
            ending = b"\r" + ending  # a LF right after a CR would merge into one CRLF
        out.append(content + ending)
        prev_ending = ending

    for lines in events:
        data: list[bytes] | None = None
        ev: bytes | None = None
        for kind, value in lines:
            if kind in ("data_space", "data_nospace", "data_bare"):
                if kind == "data_space" or value.startswith(b" "):
                    emit(b"data: " + value)
                elif kind == "data_nospace":
                    emit(b"data:" + value)
                else:
                    emit(b"data")
                data = [value] if data is None else [*data, value]
            elif kind == "comment":
                emit(b":" + value)
            elif kind == "event":
                emit(b"event: " + value)
                ev = value
            else:
                emit(b"x-unknown: " + value)
        emit(b"")
        expected.append((None if data is None else b"\n".join(data), ev))
    return b"".join(out), expected


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(model=stream_st, choices=st.data())
def test_property_random_streams_random_chunks(
    model: list[list[tuple[str, bytes]]], choices: st.DataObject
) -> None:
    n_lines = sum(len(e) + 1 for e in model)
    endings = choices.draw(st.lists(st.sampled_from(ENDINGS), min_size=n_lines, max_size=n_lines))
    blob, expected = build_stream(model, endings)
    cuts = choices.draw(st.lists(st.integers(0, len(blob)), max_size=12))
    chunks = split_at(blob, cuts)
    events = check_roundtrip(blob, chunks)
    assert [(e.data, e.event) for e in dispatched(events)] == expected
    # where a stream is cut changes no event's bytes (a split CRLF's LF is marked as its tail)
    assert merged(events) == merged(check_roundtrip(blob, [blob]))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(model=stream_st, choices=st.data())
def test_property_lf_only_raw_boundaries_do_not_depend_on_chunking(
    model: list[list[tuple[str, bytes]]], choices: st.DataObject
) -> None:
    n_lines = sum(len(e) + 1 for e in model)
    blob, expected = build_stream(model, [b"\n"] * n_lines)
    cuts = choices.draw(st.lists(st.integers(0, len(blob)), max_size=12))
    whole = check_roundtrip(blob, [blob])
    chunked = check_roundtrip(blob, split_at(blob, cuts))
    assert whole == chunked
    assert [(e.data, e.event) for e in whole] == expected
    # Every event's raw ends with the blank line that dispatched it.
    assert all(e.raw.endswith(b"\n\n") or e.raw == b"\n" for e in whole)


@settings(max_examples=300)
@given(blob=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=10))
def test_property_arbitrary_bytes_never_lose_bytes(blob: bytes, cuts: list[int]) -> None:
    chunks = split_at(blob, [c for c in cuts if c <= len(blob)])
    chunked = check_roundtrip(blob, chunks)
    whole = check_roundtrip(blob, [blob])
    assert datas(dispatched(chunked)) == datas(whole)
    assert [e.event for e in dispatched(chunked)] == [e.event for e in whole]
    assert merged(chunked) == merged(whole)


@settings(max_examples=200)
@given(
    blob=st.lists(
        st.sampled_from([b"data: a", b"data:", b":c", b"event: e", b"\r", b"\n", b"x"])
    ).map(b"".join),
    choices=st.data(),
)
def test_property_line_ending_soup(blob: bytes, choices: st.DataObject) -> None:
    cuts = choices.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    chunked = dispatched(check_roundtrip(blob, split_at(blob, cuts)))
    whole = check_roundtrip(blob, [blob])
    one_by_one = check_roundtrip(blob, [bytes([b]) for b in blob])
    assert merged(one_by_one) == merged(whole)
    one_by_one = dispatched(one_by_one)
    assert datas(chunked) == datas(whole) == datas(one_by_one)
    assert [e.event for e in chunked] == [e.event for e in whole] == [e.event for e in one_by_one]
