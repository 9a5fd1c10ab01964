"""The JSON answer a buffered stream amounts to, judged like a JSON answer."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from arbstr.apis.chat import parse_chat
from arbstr.apis.messages import parse_messages
from arbstr.routing.escalation import signal
from arbstr.routing.stream_answer import chat_answer, messages_answer, stream_answer


def d(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def delta(i: int = 0, finish: str | None = None, **fields: Any) -> bytes:
    return d({"choices": [{"index": i, "delta": fields, "finish_reason": finish}]})


def test_chat_content_tool_calls_finish_and_usage_are_assembled() -> None:
    datas = [
        delta(role="assistant", content=""),
        delta(content="Hel"),
        delta(content="lo"),
        delta(tool_calls=[{"index": 1, "function": {"name": "b", "arguments": '{"y"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"name": "a", "arguments": "{}"}}]),
        delta(tool_calls=[{"index": 1, "function": {"arguments": ": 2}"}}]),
        delta(1, content="other choice"),
        delta(finish="tool_calls"),
        d({"choices": [], "usage": {"completion_tokens": 4}}),
        b"[DONE]",
    ]
    a = chat_answer(datas)
    msg = a["choices"][0]["message"]
    assert msg["content"] == "Hello"
    assert [c["function"] for c in msg["tool_calls"]] == [
        {"name": "a", "arguments": "{}"},
        {"name": "b", "arguments": '{"y": 2}'},
    ]
    assert a["choices"][0]["finish_reason"] == "tool_calls"
    assert a["usage"] == {"completion_tokens": 4}


def test_a_cut_chat_stream_is_truncated_and_a_whole_one_fine() -> None:
    req = parse_chat(d({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    cut = stream_answer("chat", [delta(content="half"), delta(finish="length")])
    whole = stream_answer("chat", [delta(content="all"), delta(finish="stop")])
    assert cut is not None and whole is not None
    assert signal("chat", cut, req) == "truncated"
    assert signal("chat", whole, req) is None


def ev(kind: str, **fields: Any) -> bytes:
    return d({"type": kind, **fields})


def test_messages_text_tool_input_and_stop_reason_are_assembled() -> None:
    datas = [
        ev("message_start", message={"usage": {"input_tokens": 5, "output_tokens": 1}}),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi "}),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "there"}),
        ev("content_block_start", index=1, content_block={"type": "tool_use", "input": {}}),
        ev(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '{"a'},
        ),
        ev(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '": 1}'},
        ),
        ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 9}),
        ev("message_stop"),
    ]
    a = messages_answer(datas)
    assert a["content"][0] == {"type": "text", "text": "hi there"}
    assert a["content"][1] == {"type": "tool_use", "input": {"a": 1}}
    assert a["stop_reason"] == "tool_use"
    assert a["usage"] == {"input_tokens": 5, "output_tokens": 9}


def test_broken_tool_input_fragments_are_bad_tool_args() -> None:
    req = parse_messages(
        d({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]})
    )
    datas = [
        ev("content_block_start", index=0, content_block={"type": "tool_use", "input": {}}),
        ev(
            "content_block_delta",
            index=0,
            delta={"type": "input_json_delta", "partial_json": '{"a'},
        ),
        ev("message_delta", delta={"stop_reason": "tool_use"}),
    ]
    body = stream_answer("messages", datas)
    assert body is not None and signal("messages", body, req) == "bad_tool_args"


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_any_payloads_give_an_answer(datas: list[bytes]) -> None:
    assert isinstance(chat_answer(datas), dict)
    assert isinstance(messages_answer(datas), dict)
    assert stream_answer("responses", datas) is None
