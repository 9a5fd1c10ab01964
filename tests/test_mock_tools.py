"""When the mock calls a tool, and the arguments it builds from the tool's schema."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from arbstr.mock.tools import ANY_TOOL, Tool, asked_tool, example_args

TOOLS = [Tool("Bash", {}), Tool("get_weather", {}), Tool("Todo.Write", {})]


def test_asked_tool_by_phrase() -> None:
    assert asked_tool(TOOLS, "please use the bash tool to list files", None) == TOOLS[0]
    assert asked_tool(TOOLS, "Call the `get_weather` tool", None) == TOOLS[1]
    assert asked_tool(TOOLS, "run the Todo.Write tool", None) == TOOLS[2]
    assert asked_tool(TOOLS, "use the TodoXWrite tool", None) is None  # '.' is literal
    assert asked_tool(TOOLS, "what is bash?", None) is None
    assert asked_tool(TOOLS, None, None) is None
    assert asked_tool([], "use the bash tool", ANY_TOOL) is None


def test_system_reminders_do_not_ask() -> None:
    text = "<system-reminder>\nuse the Bash tool if needed\n</system-reminder>\nhello"
    assert asked_tool(TOOLS, text, None) is None
    assert asked_tool(TOOLS, text + " use the get_weather tool", None) == TOOLS[1]


def test_forced_choice() -> None:
    assert asked_tool(TOOLS, "hi", "get_weather") == TOOLS[1]
    assert asked_tool(TOOLS, "hi", "missing") is None
    assert asked_tool(TOOLS, "hi", ANY_TOOL) == TOOLS[0]
    assert asked_tool(TOOLS, "use the get_weather tool", ANY_TOOL) == TOOLS[1]


def test_example_args_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "e": {"enum": ["x", "y"]},
            "c": {"const": 7},
            "a": {"type": "array", "items": {"type": "string"}},
            "o": {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]},
            "u": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "t": {"type": ["null", "number"]},
            "optional": {"type": "string"},
        },
        "required": ["s", "i", "n", "b", "e", "c", "a", "o", "u", "t", "undeclared"],
    }
    assert example_args(schema) == {
        "s": "mock",
        "i": 1,
        "n": 1,
        "b": True,
        "e": "x",
        "c": 7,
        "a": ["mock"],
        "o": {"k": 1},
        "u": True,
        "t": 1,
        "undeclared": "mock",
    }
    assert example_args(None) == {}
    assert example_args({"type": "string"}) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
schema_keys = st.sampled_from(
    ["type", "properties", "required", "items", "enum", "anyOf", "oneOf", "allOf", "const"]
)
schemas = st.recursive(
    json_values,
    lambda inner: (
        st.dictionaries(schema_keys, inner, max_size=5)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(schemas)
def test_example_args_never_fail_and_encode(schema: Any) -> None:
    args = example_args(schema)
    assert isinstance(args, dict)
    msgspec.json.encode(args)
