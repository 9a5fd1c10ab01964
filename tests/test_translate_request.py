"""Anthropic Messages request -> chat completions request (arbstr.apis.translate.request)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.apis.translate import chat_to_message, messages_to_chat
from arbstr.errors import InvalidRequest


def chat(body: dict[str, Any], model: str = "routed/model") -> dict[str, Any]:
    out: dict[str, Any] = json.loads(messages_to_chat(json.dumps(body).encode(), model))
    return out


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def test_minimal_request_sets_routed_model_and_keeps_options() -> None:
    out = chat(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "messages": [user("Hello")],
        }
    )
    assert out == {
        "model": "routed/model",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
    }


def test_thinking_and_unknown_fields_dropped() -> None:
    out = chat(
        {
            "model": "m",
            "max_tokens": 10,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "top_k": 5,
            "service_tier": "auto",
            "whatever": 1,
            "messages": [user("x")],
        }
    )
    assert set(out) == {"model", "messages", "max_tokens"}


def test_stream_asks_for_usage() -> None:
    out = chat({"model": "m", "stream": True, "messages": [user("x")]})
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "stream" not in chat({"model": "m", "stream": False, "messages": [user("x")]})


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", "Be brief."),
        (
            [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "x"}},
                {"type": "text", "text": "Be brief."},
            ],
            "You are Claude Code.\n\nBe brief.",
        ),
    ],
)
def test_system_becomes_first_message(system: Any, expected: str) -> None:
    out = chat({"model": "m", "system": system, "messages": [user("hi")]})
    assert out["messages"][0] == {"role": "system", "content": expected}
    assert out["messages"][1] == {"role": "user", "content": "hi"}


def test_user_blocks_text_and_images() -> None:
    out = chat(
        {
            "model": "m",
            "messages": [
                user(
                    [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA="},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                    ]
                )
            ],
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
            ],
        }
    ]


def test_documents_text_and_pdf() -> None:
    out = chat(
        {
            "model": "m",
            "messages": [
                user(
                    [
                        {"type": "document", "source": {"type": "text", "data": "plain doc"}},
                        {
                            "type": "document",
                            "title": "a.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBE",
                            },
                        },
                    ]
                )
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "plain doc"},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        },
    ]


def test_tool_use_and_tool_result_turns() -> None:
    out = chat(
        {
            "model": "m",
            "messages": [
                user("list files"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {"p": "."}},
                        {"type": "tool_use", "id": "toolu_2", "name": "pwd", "input": {}},
                    ],
                },
                user(
                    [
                        {"type": "text", "text": "here you go"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a\nb"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "denied"}],
                        },
                    ]
                ),
            ],
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "ls", "arguments": '{"p":"."}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "pwd", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a\nb"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "[tool error] denied"},
        {"role": "user", "content": "here you go"},
    ]


def test_tool_calls_only_assistant_has_null_content_and_results_only_user_no_user_message() -> None:
    out = chat(
        {
            "model": "m",
            "messages": [
                user("go"),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}],
                },
                user([{"type": "tool_result", "tool_use_id": "t1"}]),
            ],
        }
    )
    assert out["messages"][1]["content"] is None
    assert out["messages"][2:] == [{"role": "tool", "tool_call_id": "t1", "content": ""}]


def test_tool_result_images_follow_the_tool_messages() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "QQ=="}
    out = chat(
        {
            "model": "m",
            "messages": [
                user(
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "screenshot:"},
                                {"type": "image", "source": png},
                            ],
                        },
                        {"type": "text", "text": "what now?"},
                    ]
                )
            ],
        }
    )
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "screenshot:"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
                {"type": "text", "text": "what now?"},
            ],
        },
    ]


def test_assistant_with_only_thinking_is_left_out() -> None:
    thinking = {"type": "thinking", "thinking": "...", "signature": "s"}
    out = chat(
        {"model": "m", "messages": [user("a"), {"role": "assistant", "content": [thinking]}]}
    )
    assert out["messages"] == [{"role": "user", "content": "a"}]


def test_tools_and_tool_choice() -> None:
    tools = [
        {"name": "get", "description": "Get it", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "custom", "name": "put", "input_schema": {"type": "object", "required": ["a"]}},
    ]
    out = chat({"model": "m", "tools": tools, "messages": [user("x")]})
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "get", "description": "Get it", "parameters": {"type": "object"}},
        },
        {
            "type": "function",
            "function": {"name": "put", "parameters": {"type": "object", "required": ["a"]}},
        },
    ]
    assert "tool_choice" not in out
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get"}, {"type": "function", "function": {"name": "get"}}),
    ]
    for choice, expected in cases:
        assert (
            chat({"model": "m", "tools": tools, "tool_choice": choice, "messages": []})[
                "tool_choice"
            ]
            == expected
        )
    no_parallel = {"type": "auto", "disable_parallel_tool_use": True}
    out = chat({"model": "m", "tools": tools, "tool_choice": no_parallel, "messages": []})
    assert out["parallel_tool_calls"] is False


def test_only_server_tools_sends_no_tools() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    out = chat({"model": "m", "tools": tools, "tool_choice": {"type": "any"}, "messages": []})
    assert "tools" not in out
    assert "tool_choice" not in out


def test_a_system_message_among_the_messages_keeps_its_place() -> None:
    """Claude Code sometimes ends its messages with a role "system" turn."""
    out = chat(
        {
            "model": "m",
            "system": "be brief",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
            ],
        }
    )
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "reminder"},
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"messages": "x"}',
        b'{"messages": [{"role": "tool", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": 5}]}',
        b'{"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}',
        b'{"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "x"}]}]}',
    ],
)
def test_malformed_bodies_are_invalid_requests(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        messages_to_chat(body, "m")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
tool_calls = st.lists(
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12),
        st.text(min_size=1, max_size=10),
        st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    ),
    max_size=3,
    unique_by=lambda c: c[0],
)


@given(text=st.text(max_size=40), calls=tool_calls)
def test_reply_round_trip_keeps_text_ids_names_and_inputs(
    text: str, calls: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """A chat reply, translated to a message and sent back as the assistant turn, reaches the
    provider as the same text and tool calls (arguments equal as JSON)."""
    reply = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if calls else "stop",
                "message": {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": n, "arguments": json.dumps(a)},
                        }
                        for i, n, a in calls
                    ],
                },
            }
        ],
    }
    message = json.loads(chat_to_message(json.dumps(reply).encode(), "m"))
    out = chat({"model": "m", "messages": [user("q"), {"role": "assistant", **message}]})
    turns = out["messages"][1:]
    if not text and not calls:
        assert turns == []
        return
    (assistant,) = turns
    assert (assistant["content"] or "") == text
    got = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant.get("tool_calls", [])
    ]
    assert got == calls
