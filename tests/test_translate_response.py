"""Chat completion answer -> Anthropic message (arbstr.apis.translate.response)."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types
import pytest

from arbstr.apis.translate import chat_to_message
from arbstr.upstream.usage import NotACompletion


def completion(
    content: Any = "Hello!",
    finish: str | None = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    **choice: Any,
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "model": "upstream/model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def message(body: bytes, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    out: dict[str, Any] = json.loads(chat_to_message(body, model))
    anthropic.types.Message.model_validate(out)  # the official SDK's type accepts it
    return out


def call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_text_answer() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert message(completion(usage=usage)) == {
        "id": "msg_chatcmpl-abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def test_cached_tokens_are_taken_out_of_input_tokens() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 800},
    }
    out = message(completion(usage=usage))["usage"]
    assert out["input_tokens"] == 200
    assert out["cache_read_input_tokens"] == 800
    assert out["output_tokens"] == 7


def test_bad_usage_counts_read_as_zero() -> None:
    usage = {"prompt_tokens": -5, "completion_tokens": "x", "prompt_tokens_details": None}
    assert message(completion(usage=usage))["usage"]["input_tokens"] == 0
    assert message(completion())["usage"]["output_tokens"] == 0  # no usage at all


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [call("call_1", "read", '{"path": "a.py"}'), call("call_2", "ls", "")]
    out = message(completion(content=None, finish="tool_calls", tool_calls=calls))
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "a.py"}},
        {"type": "tool_use", "id": "call_2", "name": "ls", "input": {}},
    ]
    assert out["stop_reason"] == "tool_use"


def test_text_then_tool_calls_and_stop_with_tools_is_tool_use() -> None:
    out = message(completion("Reading it.", finish="stop", tool_calls=[call("c", "r", "{}")]))
    assert [b["type"] for b in out["content"]] == ["text", "tool_use"]
    assert out["stop_reason"] == "tool_use"


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"s"', "   "])
def test_unusable_arguments_give_empty_input_and_no_extra_text(arguments: str) -> None:
    out = message(completion(None, finish="tool_calls", tool_calls=[call("c", "f", arguments)]))
    assert out["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


def test_missing_tool_call_id_is_derived() -> None:
    calls = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]
    out = message(completion(None, finish="tool_calls", tool_calls=calls))
    assert out["content"][0]["id"] == "toolu_chatcmpl-abc123_0"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, expected: str) -> None:
    assert message(completion(finish=finish))["stop_reason"] == expected


def test_length_with_tool_calls_stays_max_tokens() -> None:
    out = message(completion(None, finish="length", tool_calls=[call("c", "f", '{"a":')]))
    assert out["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("key", ["stop_reason", "matched_stop"])
def test_stop_sequence_when_the_provider_names_it(key: str) -> None:
    named: dict[str, Any] = {key: "END"}
    out = message(completion(**named))
    assert out["stop_reason"] == "stop_sequence"
    assert out["stop_sequence"] == "END"
    token: dict[str, Any] = {key: 128009}  # a stop token id: not a sequence
    out = message(completion(**token))
    assert (out["stop_reason"], out["stop_sequence"]) == ("end_turn", None)


def test_content_parts_and_empty_content() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert message(completion(parts))["content"] == [{"type": "text", "text": "ab"}]
    assert message(completion(""))["content"] == []
    assert message(completion(None))["content"] == []


def test_no_choices_is_an_empty_message() -> None:
    out = message(b'{"id": "x", "choices": []}')
    assert out["content"] == []
    assert out["id"] == "msg_x"


def test_id_is_made_safe_and_defaulted() -> None:
    assert message(b'{"id": "a b/c", "choices": []}')["id"] == "msg_a_b_c"
    assert message(b'{"choices": []}')["id"] == "msg_arbstr"


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'"x"'])
def test_not_a_completion(body: bytes) -> None:
    with pytest.raises(NotACompletion):
        chat_to_message(body, "m")
