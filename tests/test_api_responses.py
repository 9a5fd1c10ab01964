"""The Responses API module: parsing, the model rewrite, usage and the stream reader."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.apis.base import Api, ApiRequest, RequestFeatures
from arbstr.apis.responses import RESPONSES, ResponsesReader
from arbstr.errors import InvalidRequest
from arbstr.upstream.usage import NotACompletion, Usage

_api: Api = RESPONSES  # mypy checks the protocol

enc = msgspec.json.encode


def parse(body: Any) -> ApiRequest:
    return RESPONSES.parse(enc(body))


def test_string_input() -> None:
    req = parse({"model": "gpt-4o", "input": "hello", "instructions": "be brief", "stream": True})
    assert req == ApiRequest(
        api="responses",
        model="gpt-4o",
        stream=True,
        text_chars=len("hello") + len("be brief"),
        last_user_text="hello",
        max_tokens=None,
        features=RequestFeatures(turns=1, system_text="be brief", first_user_text="hello"),
    )


def test_items_count_text_tool_calls_and_outputs() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {}}]
    body = {
        "model": "m",
        "max_output_tokens": 64,
        "tools": tools,
        "input": [
            {"role": "user", "content": "first question"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "an answer", "annotations": []}],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
            {
                "type": "function_call_output",
                "call_id": "d",
                "output": [{"type": "input_text", "text": "xy"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look at "},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    {"type": "input_text", "text": "this"},
                ],
            },
            {"type": "reasoning", "id": "r", "summary": [], "encrypted_content": "zzz"},
            {
                "type": "computer_call_output",
                "call_id": "e",
                "output": {"type": "computer_screenshot"},
            },
        ],
    }
    req = parse(body)
    assert req.max_tokens == 64
    assert req.last_user_text == "look at this"
    text = len("first question") + len("an answer") + len('{"a":1}') + 2 + 2 + len("look at this")
    assert req.text_chars == text + len(enc(tools))


def test_last_user_text_is_the_last_user_message() -> None:
    req = parse(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"type": "function_call_output", "call_id": "c", "output": "out"},
            ],
        }
    )
    assert req.last_user_text == "a"
    assert parse({"model": "m"}).last_user_text is None  # input is optional (prompt, ids)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"[]", "invalid_request"),
        (b"{}", "missing_model"),
        (b'{"model": ""}', "missing_model"),
        (b'{"model": "a\\nb"}', "invalid_model"),
        (b'{"model": "m", "input": 3}', "invalid_request"),
        (b'{"model": "m", "input": [{"role": "user", "content": 5}]}', "invalid_request"),
        (b'{"model": "m", "max_output_tokens": "9"}', "invalid_request"),
        (b'{"model": "m", "stream": "yes"}', "invalid_request"),
    ],
)
def test_bad_bodies(body: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        RESPONSES.parse(body)
    assert info.value.code == code


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
        "input",
        "instructions",
        "max_output_tokens",
        "stream",
        "tools",
        "role",
        "content",
        "type",
        "text",
        "arguments",
        "output",
    ]
)
shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["message", "function_call", "function_call_output", "user"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped, st.dictionaries(keys, shaped, max_size=6)))
def test_any_json_parses_or_is_invalid_request(value: Any) -> None:
    try:
        req = RESPONSES.parse(enc(value))
    except InvalidRequest:
        return
    assert req.model and req.text_chars >= 0


def test_upstream_body_rewrites_only_a_different_model() -> None:
    body = b'{"model":"gpt-4o","input":"hi","x":{"keep":[1,2.5]}}'
    req = RESPONSES.parse(body)
    assert RESPONSES.upstream_body(body, req, "gpt-4o") is body
    out = msgspec.json.decode(RESPONSES.upstream_body(body, req, "openai/gpt-4o"))
    assert out == {"model": "openai/gpt-4o", "input": "hi", "x": {"keep": [1, 2.5]}}


# -- usage ----------------------------------------------------------------------------------

USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 40},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 107,
}


def test_reply_usage() -> None:
    body = enc({"id": "r", "object": "response", "status": "completed", "usage": USAGE})
    assert RESPONSES.reply_usage(body, "p", "r") == Usage(100, 7, cached_tokens=40)


def test_reply_usage_with_reported_cost_and_cache_writes() -> None:
    usage = {
        **USAGE,
        "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10},
        "cost": {"total_msats": 1234},
        "cost_sats": 2,
    }
    got = RESPONSES.reply_usage(enc({"usage": usage}), "p", "r")
    assert got == Usage(100, 7, 1234, 2000, cached_tokens=40, cache_write_tokens=10)


def test_reply_usage_absent_and_not_a_reply() -> None:
    assert RESPONSES.reply_usage(b'{"id": "r"}', "p", "r") is None
    assert RESPONSES.reply_usage(b'{"usage": null}', "p", "r") is None
    for body in (b"[1]", b"nope", b'"s"'):
        with pytest.raises(NotACompletion):
            RESPONSES.reply_usage(body, "p", "r")


def test_odd_usage_fields_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    usage = {"input_tokens": "100", "output_tokens": -1, "input_tokens_details": 5}
    with caplog.at_level(logging.WARNING, "arbstr.upstream"):
        got = RESPONSES.reply_usage(enc({"usage": usage}), "prov", "r")
    assert got == Usage()
    text = caplog.text
    assert "usage.input_tokens " in text and "usage.output_tokens" in text
    assert "usage.input_tokens_details" in text and "prov" in text
    with caplog.at_level(logging.WARNING, "arbstr.upstream"):
        assert RESPONSES.reply_usage(enc({"usage": [1]}), "prov", "r") is None


# -- stream reader --------------------------------------------------------------------------


def ev(type: str, **fields: Any) -> tuple[bytes, bytes]:
    return type.encode(), enc({"type": type, **fields})


def feed(reader: ResponsesReader, events: list[tuple[bytes | None, bytes]]) -> None:
    for name, data in events:
        reader.read(name, data)


def _resp(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "output": [], **fields}


def test_a_normal_stream() -> None:
    reader = RESPONSES.stream_reader("p", "r")
    feed(
        reader,
        [
            ev("response.created", response=_resp("in_progress")),
            ev("response.output_item.added", item={"type": "message"}),
            ev("response.output_text.delta", delta="Hel"),
            ev("response.output_text.delta", delta="lo"),
            ev("response.function_call_arguments.delta", delta="{"),
            ev("response.output_text.done", text="Hello"),
        ],
    )
    assert not reader.done and reader.usage is None and reader.content_events == 3
    reader.read(*ev("response.completed", response=_resp("completed", usage=USAGE)))
    assert reader.done and reader.upstream_error is None
    assert reader.usage == Usage(100, 7, cached_tokens=40)


def test_events_without_names_are_read_by_their_type() -> None:
    reader = RESPONSES.stream_reader("p", "r")
    for _name, data in [
        ev("response.output_text.delta", delta="x"),
        ev("response.completed", response=_resp("completed", usage=USAGE)),
    ]:
        reader.read(None, data)
    assert reader.done and reader.content_events == 1 and reader.usage is not None


def test_incomplete_is_a_normal_end_with_usage() -> None:
    reader = RESPONSES.stream_reader("p", "r")
    reader.read(*ev("response.incomplete", response=_resp("incomplete", usage=USAGE)))
    assert reader.done and reader.upstream_error is None and reader.usage is not None


def test_failed_and_error_events() -> None:
    reader = RESPONSES.stream_reader("p", "r")
    reader.read(
        *ev("response.failed", response=_resp("failed", error={"code": "c", "message": "boom"}))
    )
    assert reader.upstream_error == "boom" and not reader.done
    reader.read(*ev("error", code="x", message="later"))
    assert reader.upstream_error == "boom"  # the first error is kept

    documented = RESPONSES.stream_reader("p", "r")
    documented.read(*ev("error", code="x", message="top level"))
    assert documented.upstream_error == "top level"
    nested = RESPONSES.stream_reader("p", "r")
    nested.read(*ev("error", error={"type": "t", "message": "nested"}))
    assert nested.upstream_error == "nested"
    bare = RESPONSES.stream_reader("p", "r")
    bare.read(b"response.failed", b"not json")
    assert bare.upstream_error == "the response failed"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        enc({"type": "response.completed"}),
        enc({"type": "response.completed", "response": 5}),
        enc({"type": "response.completed", "response": _resp("completed", usage="x")}),
        enc({"type": "response.completed", "response": _resp("completed", usage=None)}),
    ],
)
def test_odd_completed_events_still_end_the_stream(data: bytes) -> None:
    reader = RESPONSES.stream_reader("p", "r")
    reader.read(b"response.completed", data)
    assert reader.done and reader.usage is None and reader.upstream_error is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none()
            | st.sampled_from(
                [
                    b"response.completed",
                    b"response.failed",
                    b"error",
                    b"response.output_text.delta",
                    b"x",
                ]
            ),
            st.one_of(json_values.map(enc), st.binary(max_size=20)),
        ),
        max_size=6,
    )
)
def test_the_reader_never_raises(events: list[tuple[bytes | None, bytes]]) -> None:
    reader = RESPONSES.stream_reader("p", "r")
    feed(reader, events)
    assert reader.content_events >= 0


def test_error_bodies() -> None:
    body = msgspec.json.decode(RESPONSES.error_body(502, "upstream_error", "e", "bad"))
    assert body == {"error": {"message": "bad", "type": "upstream_error", "code": "e"}}
