"""What the stream relay forwards and what it learns (arbstr.upstream.relay): byte for byte
across any split, the usage chunk hidden whatever its field types, upstream error events."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbstr.upstream.relay import MAX_ERROR_CHARS, StreamRelay
from arbstr.upstream.usage import Usage

TRAILER = b'data: {"arbstr":{}}\n\n'
DONE = b"data: [DONE]\n\n"


def relay(forward_usage: bool = False) -> StreamRelay:
    return StreamRelay(forward_usage_chunk=forward_usage, trailer=lambda _: TRAILER, provider="p")


def run(r: StreamRelay, pieces: Iterable[bytes]) -> bytes:
    """What the client gets, as the relay loop sends it: each piece's bytes, then any events
    held at ``[DONE]``."""
    out = []
    for p in pieces:
        out.append(r.feed(p))
        if r.held is not None:
            out.append(r.release())
    return b"".join(out) + r.finish()


def sse(obj: object) -> bytes:
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


def content(text: str, **extra: object) -> bytes:
    return sse({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}], **extra})


def usage_chunk(usage: object, **extra: object) -> bytes:
    return sse({"id": "c1", "choices": [], "usage": usage, **extra})


# --- usage ----------------------------------------------------------------------------------


def test_usage_chunk_is_read_and_hidden_unless_asked() -> None:
    u = usage_chunk({"prompt_tokens": 3, "completion_tokens": 2, "cost": {"total_msats": 7}})
    stream = [content("a"), content("b"), u, DONE]
    r = relay()
    assert run(r, stream) == content("a") + content("b") + TRAILER + DONE
    assert r.usage == Usage(prompt_tokens=3, completion_tokens=2, total_msats=7)
    assert r.content_chunks == 2 and r.done and r.last_id == "c1"
    r = relay(forward_usage=True)
    assert run(r, stream) == content("a") + content("b") + u + TRAILER + DONE
    assert r.usage is not None and r.usage.completion_tokens == 2


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12", "completion_tokens": 9},
        {"cost_sats": "abc", "completion_tokens": 9},
        {"cost": "free", "completion_tokens": 9},
        {"completion_tokens": 9, "prompt_tokens": 2**63},
        [],
        "lots",
        7,
    ],
)
def test_usage_chunk_with_mistyped_fields_is_still_recognised(
    usage: object, caplog: pytest.LogCaptureFixture
) -> None:
    r = relay()
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        assert run(r, [content("a"), usage_chunk(usage), DONE]) == content("a") + TRAILER + DONE
    if isinstance(usage, dict):
        assert r.usage is not None and r.usage.completion_tokens == 9
    else:
        assert r.usage is None
    assert caplog.records and all("provider p" in x.getMessage() for x in caplog.records)


def test_usage_null_on_content_chunks_is_nothing() -> None:
    r = relay()
    stream = [content("a", usage=None), sse({"id": "c1", "choices": [], "usage": None}), DONE]
    assert run(r, stream) == b"".join(stream[:2]) + TRAILER + DONE
    assert r.usage is None and r.content_chunks == 1


def test_usage_in_a_content_chunk_is_read_and_forwarded() -> None:
    chunk = content("a", usage={"prompt_tokens": 1, "completion_tokens": 1})
    r = relay()
    assert run(r, [chunk, DONE]) == chunk + TRAILER + DONE
    assert r.usage == Usage(prompt_tokens=1, completion_tokens=1)


def test_odd_ids_and_non_chunks_are_forwarded() -> None:
    stream = [
        sse({"id": 5, "choices": [{"delta": {}}]}),
        b"data: not json\n\n",
        b'data: ["an", "array"]\n\n',
        b": keep-alive\n\n",
        DONE,
    ]
    r = relay()
    assert run(r, stream) == b"".join(stream[:-1]) + TRAILER + DONE
    assert r.last_id is None and r.content_chunks == 1


# --- upstream error events ------------------------------------------------------------------


def test_error_event_is_forwarded_and_exposed() -> None:
    err = sse({"error": {"message": "model\n overloaded\x00!", "type": "server_error"}})
    r = relay()
    assert run(r, [content("a"), err, DONE]) == content("a") + err + TRAILER + DONE
    assert r.upstream_error == "model overloaded !"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ("plain text", "plain text"),
        ({"code": 500}, "upstream sent an error event"),
        (True, "upstream sent an error event"),
        ({"message": "   "}, "upstream sent an error event"),
        ({"message": "x" * 10_000}, "x" * (MAX_ERROR_CHARS - 1) + "…"),
    ],
)
def test_error_text(error: object, text: str) -> None:
    r = relay()
    run(r, [sse({"error": error})])
    assert r.upstream_error == text
    assert len(text) <= MAX_ERROR_CHARS


def test_error_null_is_no_error_and_the_first_error_is_kept() -> None:
    r = relay()
    run(r, [content("a", error=None), DONE])
    assert r.upstream_error is None
    r = relay()
    run(r, [sse({"error": "first"}), sse({"error": "second"})])
    assert r.upstream_error == "first"


def test_a_usage_chunk_with_an_error_is_read_and_never_hidden() -> None:
    r = relay()
    chunk = usage_chunk({"completion_tokens": 1}, error={"message": "quota"})
    assert run(r, [content("a"), chunk, DONE]) == content("a") + chunk + TRAILER + DONE
    assert r.upstream_error == "quota"
    assert r.usage == Usage(completion_tokens=1)


# --- end of stream --------------------------------------------------------------------------


def test_finish_forwards_what_follows_done_and_drops_half_events_before_it() -> None:
    r = relay()
    assert r.feed(content("a") + b'data: {"par') == content("a")
    assert r.finish() == b""  # half an event: never forwarded before an error event
    r = relay()
    assert r.feed(DONE + b"\r\n: bye") == TRAILER + DONE + b"\r\n"  # a stray blank line
    assert r.finish() == b": bye"


def test_crlf_split_after_done_and_before_a_hidden_usage_chunk() -> None:
    c = content("a").replace(b"\n\n", b"\r\n\r\n")
    u = usage_chunk({"completion_tokens": 1}).replace(b"\n\n", b"\r\n\r\n")
    done = DONE.replace(b"\n\n", b"\r\n\r\n")
    r = relay()
    out = [r.feed(p) for p in (c[:-1], b"\n" + u[:-1], b"\n" + done[:-1], b"\n")]
    # the LF ending the content chunk goes out at once; the usage chunk's goes with it
    assert out == [c[:-1], b"\n", TRAILER + done[:-1], b"\n"]
    assert r.finish() == b""


# --- property: byte for byte across any split -----------------------------------------------

ENDINGS = (b"\n", b"\r\n", b"\r")
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts, st.just([])
)
usage_values = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": odd_values,
            "completion_tokens": odd_values,
            "cost_sats": odd_values,
            "cost": odd_values | st.fixed_dictionaries({"total_msats": odd_values}),
        },
    ),
    st.just([]),
    st.just("x"),
)


CHOICES_OF_USAGE_CHUNK: list[dict[str, object]] = [{"choices": []}, {}, {"choices": None}]


@st.composite
def events(draw: st.DrawFn) -> tuple[list[list[bytes]], int | None, int]:
    """A realistic stream as events of lines (no line endings yet): content chunks, comments,
    keep-alives, multi-line data, at most one usage-only chunk, then ``[DONE]``. Returns the
    events, the index of the usage chunk (or None) and the index of ``[DONE]``."""
    out: list[list[bytes]] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["content", "comment", "multiline", "event-field"]))
        text = draw(texts)
        if kind == "comment":
            out.append([b": keep-alive " + text.replace("\r", "").replace("\n", "").encode()])
            continue
        body = content(text)[6:-2]
        if kind == "multiline":  # JSON split over data lines (joined with \n: still JSON)
            cut = body.index(b'"choices"')
            out.append([b": note", b"data: " + body[:cut], b"data:" + body[cut:]])
        elif kind == "event-field":
            out.append([b"event: message", b"data:" + body])
        else:
            out.append([b"data: " + body])
    usage_at: int | None = None
    if draw(st.booleans()):
        usage_at = draw(st.integers(0, len(out)))
        usage = draw(usage_values)
        choices = draw(st.sampled_from(CHOICES_OF_USAGE_CHUNK))
        out.insert(usage_at, [b"data: " + sse({"id": "c1", **choices, "usage": usage})[6:-2]])
    if draw(st.booleans()):
        out.append([b": after the last chunk"])
    out.append([b"data: [DONE]"])
    return out, usage_at, len(out) - 1


def serialise(lines_per_event: Sequence[Sequence[bytes]], endings: Iterable[bytes]) -> list[bytes]:
    """Each event's bytes with the given line endings (a LF right after a CR ending would
    merge into one CRLF, so it becomes CRLF)."""
    it = iter(endings)
    prev = b"\n"
    out = []
    for lines in lines_per_event:
        parts = []
        for line in [*lines, b""]:
            ending = next(it)
            if prev == b"\r" and ending.startswith(b"\n"):
                ending = b"\r" + ending
            parts.append(line + ending)
            prev = ending
        out.append(b"".join(parts))
    return out


def split_at(blob: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(stream=events(), forward_usage=st.booleans(), data=st.data())
def test_property_relay_is_byte_exact_across_any_split(
    stream: tuple[list[list[bytes]], int | None, int], forward_usage: bool, data: st.DataObject
) -> None:
    lines, usage_at, done_at = stream
    n_lines = sum(len(e) + 1 for e in lines)
    style = data.draw(st.sampled_from(["lf", "crlf", "cr", "mixed"]))
    if style == "mixed":
        endings = data.draw(st.lists(st.sampled_from(ENDINGS), min_size=n_lines, max_size=n_lines))
    else:
        endings = [{"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}[style]] * n_lines
    raw_events = serialise(lines, endings)
    blob = b"".join(raw_events)
    leftover = data.draw(st.sampled_from([b"", b"\n", b": bye", b"data: x"]))  # after [DONE]
    blob += leftover
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=len(blob) // 2 + 2))

    expected = []
    for i, ev in enumerate(raw_events):
        if i == usage_at and not forward_usage:
            continue
        if i == done_at:
            expected.append(TRAILER)
        expected.append(ev)
    expected.append(leftover)

    r = relay(forward_usage)
    logging.getLogger("arbstr.upstream").disabled = True
    try:
        got = run(r, split_at(blob, cuts))
    finally:
        logging.getLogger("arbstr.upstream").disabled = False
    assert got == b"".join(expected)
    assert r.done
    n_content = sum(1 for e in lines if any(b'"content"' in ln for ln in e))
    assert r.content_chunks == n_content


def test_done_arriving_with_other_events_is_held_until_they_are_sent() -> None:
    """The trailer is built only after the events before ``[DONE]`` went out: a trailer that
    fails (an internal error) cannot take the text that came with it."""

    def broken(_: StreamRelay) -> bytes:
        raise RuntimeError("trailer failed")

    relay = StreamRelay(forward_usage_chunk=False, trailer=broken, provider="p")
    one = b'data: {"choices":[{"delta":{"content":"one"}}]}\n\n'
    two = b'data: {"choices":[{"delta":{"content":"two"}}]}\n\n'
    out = relay.feed(one + two + b"data: [DONE]\n\n")
    assert out == one + two and relay.held is not None and not relay.done
    with pytest.raises(RuntimeError, match="trailer failed"):
        relay.release()
    ok = StreamRelay(forward_usage_chunk=False, trailer=lambda _: TRAILER, provider="p")
    assert ok.feed(one + b"data: [DONE]\n\n") == one
    assert ok.release() == TRAILER + b"data: [DONE]\n\n" and ok.done and ok.held is None
    assert ok.release() == b""
