"""The failure signals of routing/escalation: one per reason, and no body ever raises."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from arbstr.apinames import ALL_APIS
from arbstr.apis.base import ApiRequest, RequestFeatures
from arbstr.routing.escalation import REASONS, next_tier, signal


def req(max_tokens: int | None = None, **features: Any) -> ApiRequest:
    return ApiRequest(
        "chat", "auto", False, 10, "hi", max_tokens, features=RequestFeatures(**features)
    )


def chat(content: Any = "hello", finish: str = "stop", tokens: int = 5, **message: Any) -> bytes:
    msg = {"role": "assistant", "content": content, **message}
    body = {
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": tokens},
    }
    return json.dumps(body).encode()


def call(arguments: str) -> list[dict[str, Any]]:
    return [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]


def test_chat_signals() -> None:
    assert signal("chat", chat(), req()) is None
    assert signal("chat", chat(finish="length"), req()) == "truncated"
    assert signal("chat", chat(finish="length", tokens=5), req(max_tokens=5)) is None
    assert signal("chat", chat(finish="length", tokens=4), req(max_tokens=5)) == "truncated"
    assert signal("chat", chat(content="  "), req()) == "empty"
    assert signal("chat", chat(content=None), req()) == "empty"
    assert signal("chat", chat(refusal="no"), req()) == "refusal"
    assert signal("chat", chat(finish="content_filter"), req()) == "refusal"
    json_req = req(response_format="json_object")
    assert signal("chat", chat(content="nope"), json_req) == "invalid_json"
    assert signal("chat", chat(content='{"a": 1}'), json_req) is None
    tool_req = req(tool_choice_required=True)
    assert signal("chat", chat(), tool_req) == "no_tool_call"
    assert signal("chat", chat(content=None, tool_calls=call('{"x": 1}')), tool_req) is None
    assert signal("chat", chat(content=None, tool_calls=call("{x")), req()) == "bad_tool_args"
    assert signal("chat", chat(content=None, tool_calls=call("")), req()) is None
    parts = [{"type": "text", "text": "hi"}]
    assert signal("chat", chat(content=parts), req()) is None


def messages(content: list[dict[str, Any]], stop: str = "end_turn", out: int = 5) -> bytes:
    body = {"content": content, "stop_reason": stop, "usage": {"output_tokens": out}}
    return json.dumps(body).encode()


def test_messages_signals() -> None:
    text = [{"type": "text", "text": "hi"}]
    assert signal("messages", messages(text), req(100)) is None
    assert signal("messages", messages(text, "max_tokens", 100), req(100)) is None
    assert signal("messages", messages(text, "max_tokens", 50), req(100)) == "truncated"
    assert signal("messages", messages([], "refusal"), req(100)) == "refusal"
    assert signal("messages", messages([]), req(100)) == "empty"
    use = [{"type": "tool_use", "id": "t", "name": "f", "input": "oops"}]
    assert signal("messages", messages(use, "tool_use"), req(100)) == "bad_tool_args"
    assert signal("messages", messages(text), req(100, tool_choice_required=True)) == "no_tool_call"


def test_responses_signals() -> None:
    def resp(output: list[dict[str, Any]], status: str = "completed", why: str = "") -> bytes:
        body: dict[str, Any] = {"status": status, "output": output, "usage": {"output_tokens": 3}}
        if why:
            body["incomplete_details"] = {"reason": why}
        return json.dumps(body).encode()

    msg = [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}]
    assert signal("responses", resp(msg), req()) is None
    assert signal("responses", resp(msg, "incomplete", "max_output_tokens"), req()) == "truncated"
    assert signal("responses", resp(msg, "incomplete", "content_filter"), req()) == "refusal"
    assert signal("responses", resp([]), req()) == "empty"
    fc = [{"type": "function_call", "name": "f", "arguments": "[1"}]
    assert signal("responses", resp(fc), req()) == "bad_tool_args"


def test_other_apis_and_non_answers_give_none() -> None:
    assert signal("embeddings", chat(content=""), req()) is None
    assert signal("chat", b"not json", req()) is None
    assert signal("chat", b"[1, 2]", req()) is None
    assert signal("chat", b'{"choices": []}', req()) is None


def test_next_tier() -> None:
    assert next_tier("economy") == "standard"
    assert next_tier("standard") == "frontier"
    assert next_tier("frontier") is None and next_tier(None) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)
_keys = st.sampled_from(
    [
        "choices",
        "message",
        "content",
        "tool_calls",
        "function",
        "arguments",
        "finish_reason",
        "refusal",
        "usage",
        "stop_reason",
        "output",
        "status",
        "type",
        "text",
        "input",
    ]
)
_shaped = st.recursive(
    _json,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=40,
)


@given(
    st.sampled_from(ALL_APIS),
    st.one_of(st.binary(max_size=200), _shaped.map(lambda v: json.dumps(v).encode())),
    st.none() | st.integers(min_value=0, max_value=10),
    st.sampled_from([None, "json_object", "json_schema"]),
    st.booleans(),
)
def test_no_body_ever_raises(
    api: Any, body: bytes, max_tokens: int | None, fmt: Any, required: bool
) -> None:
    got = signal(api, body, req(max_tokens, response_format=fmt, tool_choice_required=required))
    assert got is None or got in REASONS
