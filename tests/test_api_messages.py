"""The Anthropic Messages and count_tokens modules: parsing, the model rewrite, usage (cache
parts added into prompt_tokens), the stream reader and the Anthropic error shapes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.apis.base import Api, ApiRequest, RequestFeatures
from arbstr.apis.count_tokens import COUNT_TOKENS, estimate
from arbstr.apis.messages import MESSAGES, MessagesReader
from arbstr.errors import InvalidRequest
from arbstr.upstream.usage import NotACompletion, Usage

_api: Api = MESSAGES  # mypy checks the protocol

enc = msgspec.json.encode
USER = {"role": "user", "content": "hello"}


def parse(body: Any) -> ApiRequest:
    return MESSAGES.parse(enc(body))


def test_a_simple_request() -> None:
    req = parse({"model": "claude-x", "max_tokens": 100, "system": "sys", "messages": [USER]})
    assert req == ApiRequest(
        api="messages",
        model="claude-x",
        stream=False,
        text_chars=len("sys") + len("hello"),
        last_user_text="hello",
        max_tokens=100,
        features=RequestFeatures(turns=1, system_text="sys", first_user_text="hello"),
    )
    assert MESSAGES.accepts_x_api_key is True
    assert MESSAGES.forward_headers == ("anthropic-version", "anthropic-beta")


def test_blocks_tools_and_the_last_user_text() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    body = {
        "model": "m",
        "max_tokens": 5,
        "stream": True,
        "tools": tools,
        "system": [
            {"type": "text", "text": "be ", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "kind"},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is "},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "text", "text": "this?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "let me see"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [{"type": "text", "text": "r22"}],
                    },
                ],
            },
        ],
    }
    req = parse(body)
    assert req.stream and req.max_tokens == 5
    assert req.last_user_text == "what is this?"  # the tool-result turn has no text of its own
    chars = len("be kind") + len("what is this?") + len("let me see") + len('{"q":1}') + 2 + 3
    assert req.text_chars == chars + len(enc(tools))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"[]", "invalid_request"),
        (b'{"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}', "missing_model"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "missing_max_tokens"),
        (
            b'{"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}',
            "invalid_max_tokens",
        ),
        (b'{"model": "m", "max_tokens": 1}', "missing_messages"),
        (b'{"model": "m", "max_tokens": 1, "messages": []}', "missing_messages"),
        (b'{"model": "m", "max_tokens": 1, "messages": [{"content": 5}]}', "invalid_request"),
        (b'{"model": "m", "max_tokens": "1", "messages": [{"content": "x"}]}', "invalid_request"),
        (
            b'{"model": "m\\u0000", "max_tokens": 1, "messages": [{"content": "x"}]}',
            "invalid_model",
        ),
    ],
)
def test_bad_bodies(body: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        MESSAGES.parse(body)
    assert info.value.code == code


def test_a_missing_max_tokens_answers_in_anthropic_shape() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"model": "m", "messages": [USER]})
    e = info.value
    body = msgspec.json.decode(MESSAGES.error_body(e.status, e.type, e.code, e.message))
    assert e.status == 400
    assert body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "model",
        "max_tokens",
        "system",
        "messages",
        "stream",
        "tools",
        "role",
        "content",
        "type",
        "text",
        "input",
    ]
)
shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["text", "tool_use", "tool_result", "user"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped, st.dictionaries(keys, shaped, max_size=6)))
def test_any_json_parses_or_is_invalid_request(value: Any) -> None:
    for api in (MESSAGES, COUNT_TOKENS):
        try:
            req = api.parse(enc(value))
        except InvalidRequest:
            continue
        assert req.model and req.text_chars >= 0


def test_upstream_body_rewrites_only_a_different_model() -> None:
    body = b'{"model":"claude-x","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}'
    req = MESSAGES.parse(body)
    assert MESSAGES.upstream_body(body, req, "claude-x") is body
    out = msgspec.json.decode(MESSAGES.upstream_body(body, req, "anthropic/claude-x"))
    assert out == {**msgspec.json.decode(body), "model": "anthropic/claude-x"}


# -- usage ----------------------------------------------------------------------------------

USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 200,
    "cache_creation_input_tokens": 30,
    "output_tokens": 7,
}


def test_reply_usage_adds_the_cache_parts_into_prompt_tokens() -> None:
    body = enc({"id": "msg", "type": "message", "content": [], "usage": USAGE})
    assert MESSAGES.reply_usage(body, "p", "r") == Usage(
        240, 7, cached_tokens=200, cache_write_tokens=30
    )
    plain = enc({"usage": {"input_tokens": 10, "output_tokens": 7, "cost": {"total_msats": 9}}})
    assert MESSAGES.reply_usage(plain, "p", "r") == Usage(10, 7, 9)


def test_reply_usage_absent_odd_and_not_a_reply(caplog: pytest.LogCaptureFixture) -> None:
    assert MESSAGES.reply_usage(b'{"type": "message"}', "p", "r") is None
    for body in (b"[]", b"x"):
        with pytest.raises(NotACompletion):
            MESSAGES.reply_usage(body, "p", "r")
    odd = {"input_tokens": 1.5, "cache_read_input_tokens": "2", "output_tokens": 10**12}
    with caplog.at_level(logging.WARNING, "arbstr.upstream"):
        assert MESSAGES.reply_usage(enc({"usage": odd}), "prov", "r") == Usage()
    assert "usage.input_tokens" in caplog.text and "usage.output_tokens" in caplog.text
    # a known input count with an unusable cache part: the parts that can be read
    half = {"input_tokens": 4, "cache_read_input_tokens": "x", "output_tokens": 1}
    assert MESSAGES.reply_usage(enc({"usage": half}), "p", "r") == Usage(4, 1)
    huge = {"input_tokens": 10**9, "cache_read_input_tokens": 10**9}
    got = MESSAGES.reply_usage(enc({"usage": huge}), "p", "r")
    assert got is not None and got.prompt_tokens is None and got.cached_tokens == 10**9


# -- stream reader --------------------------------------------------------------------------


def ev(type: str, **fields: Any) -> tuple[bytes, bytes]:
    return type.encode(), enc({"type": type, **fields})


def start(usage: Any) -> tuple[bytes, bytes]:
    return ev(
        "message_start",
        message={"id": "m", "type": "message", "role": "assistant", "content": [], "usage": usage},
    )


DELTA = ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})


def feed(reader: MessagesReader, events: list[tuple[bytes | None, bytes]]) -> None:
    for name, data in events:
        reader.read(name, data)


def test_a_normal_stream() -> None:
    reader = MESSAGES.stream_reader("p", "r")
    feed(
        reader,
        [
            start(
                {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 200,
                    "cache_creation_input_tokens": 30,
                    "output_tokens": 1,
                }
            ),
            ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            ev("ping"),
            DELTA,
            DELTA,
            ev("content_block_stop", index=0),
            ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}),
            ev("message_delta", delta={}, usage={"output_tokens": 9, "cost": {"total_msats": 77}}),
        ],
    )
    assert not reader.done and reader.content_events == 2
    assert reader.usage == Usage(240, 9, 77, cached_tokens=200, cache_write_tokens=30)
    reader.read(*ev("message_stop"))
    assert reader.done and reader.upstream_error is None


def test_events_without_names_are_read_by_their_type() -> None:
    reader = MESSAGES.stream_reader("p", "r")
    for _name, data in [
        start({"input_tokens": 3}),
        DELTA,
        ev("message_delta", usage={"output_tokens": 2}),
        ev("message_stop"),
    ]:
        reader.read(None, data)
    assert reader.done and reader.content_events == 1 and reader.usage == Usage(3, 2)


def test_missing_or_odd_usage_never_stops_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    reader = MESSAGES.stream_reader("p", "r")
    with caplog.at_level(logging.WARNING, "arbstr.upstream"):
        feed(
            reader,
            [
                ev("message_start", message={"id": "m"}),  # no usage at all
                (b"message_start", b"{not json"),
                ev("message_start", message=5),
                ev("message_delta", usage={"output_tokens": "many"}),
                ev("message_delta", usage=[1]),
                DELTA,
                ev("message_stop"),
            ],
        )
    assert reader.done and reader.upstream_error is None and reader.content_events == 1
    assert reader.usage == Usage()  # usage objects seen, no count usable: estimates follow
    assert "usage.output_tokens" in caplog.text
    only_delta = MESSAGES.stream_reader("p", "r")
    feed(only_delta, [ev("message_delta", usage={"output_tokens": 4}), ev("message_stop")])
    assert only_delta.usage == Usage(None, 4)


def test_error_events() -> None:
    reader = MESSAGES.stream_reader("p", "r")
    feed(
        reader,
        [
            start({"input_tokens": 1}),
            DELTA,
            ev("error", error={"type": "overloaded_error", "message": "Overloaded"}),
            ev("error", error={"type": "api_error", "message": "later"}),
        ],
    )
    assert reader.upstream_error == "Overloaded" and not reader.done
    bare = MESSAGES.stream_reader("p", "r")
    bare.read(b"error", b"oops")
    assert bare.upstream_error == "upstream stream error"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none()
            | st.sampled_from(
                [
                    b"message_start",
                    b"message_delta",
                    b"message_stop",
                    b"error",
                    b"content_block_delta",
                    b"x",
                ]
            ),
            st.one_of(json_values.map(enc), st.binary(max_size=20)),
        ),
        max_size=6,
    )
)
def test_the_reader_never_raises(events: list[tuple[bytes | None, bytes]]) -> None:
    reader = MESSAGES.stream_reader("p", "r")
    feed(reader, events)
    assert reader.content_events >= 0


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "api_error"),
        (529, "overloaded_error"),
        (599, "api_error"),
    ],
)
def test_error_types_follow_the_status(status: int, type: str) -> None:
    for api in (MESSAGES, COUNT_TOKENS):
        body = msgspec.json.decode(api.error_body(status, "upstream_error", "c", "msg"))
        assert body == {"type": "error", "error": {"type": type, "message": "msg"}}


def test_stream_error_event() -> None:
    blob = MESSAGES.stream_error("upstream_error", "upstream_error", "gone")
    name, data = blob.removesuffix(b"\n\n").split(b"\n")
    assert name == b"event: error"
    assert msgspec.json.decode(data.removeprefix(b"data: ")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "gone"},
    }
    kept = MESSAGES.stream_error("overloaded_error", "x", "busy")
    assert b'"type":"overloaded_error"' in kept


# -- count_tokens ---------------------------------------------------------------------------


def test_count_tokens_needs_no_max_tokens_and_estimates() -> None:
    body = enc({"model": "claude-x", "system": "12345678", "messages": [USER], "stream": True})
    req = COUNT_TOKENS.parse(body)
    assert req.model == "claude-x" and not req.stream and req.max_tokens is None
    assert estimate(body) == 4 == COUNT_TOKENS.estimate(body)  # 13 chars, rounded up
    tools = [{"name": "f", "input_schema": {}}]
    with_tools = enc({"model": "m", "messages": [USER], "tools": tools})
    assert estimate(with_tools) == -(-(5 + len(enc(tools))) // 4)
    tiny = enc({"model": "m", "messages": [{"role": "user", "content": ""}]})
    assert estimate(tiny) == 1
    assert msgspec.json.decode(COUNT_TOKENS.local_answer(42)) == {"input_tokens": 42}
    assert COUNT_TOKENS.path == "/v1/messages/count_tokens"
    assert COUNT_TOKENS.upstream_path == "/messages/count_tokens"
    assert COUNT_TOKENS.upstream_body(body, req, "claude-x") is body
    assert COUNT_TOKENS.accepts_x_api_key
    with pytest.raises(InvalidRequest):
        estimate(b'{"model": "m"}')
