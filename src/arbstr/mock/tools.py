"""When a mock answers with a tool call, and with which arguments. Pure.

A request that offers tools gets a tool call only when asked: its ``tool_choice`` forces one,
or the user's own text says "use the NAME tool" (also "call"/"run"). Coding agents offer many
tools on every turn and inject ``<system-reminder>`` text naming them, so nothing else
triggers a call. Arguments follow the tool's JSON schema: required fields only, strings
``"mock"``, numbers 1, booleans true, arrays of one item.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arbstr.mock.common import clean_user_text

ANY_TOOL = "*"  # a tool_choice that forces some tool, not a named one
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: Any  # the JSON schema of its arguments


def asked_tool(tools: Sequence[Tool], user_text: str | None, forced: str | None) -> Tool | None:
    """The tool to call, or None to answer with text. ``forced``: the name ``tool_choice``
    forces, or :data:`ANY_TOOL` (the tool the text asks for, else the first)."""
    if not tools:
        return None
    if forced is not None and forced != ANY_TOOL:
        return next((t for t in tools if t.name == forced), None)
    text = clean_user_text(user_text or "")
    for tool in tools:
        quoted = re.escape(tool.name)
        pattern = rf"\b(?:use|call|run)\s+the\s+[`'\"]?{quoted}[`'\"]?\s+tool\b"
        if re.search(pattern, text, re.IGNORECASE):
            return tool
    return tools[0] if forced == ANY_TOOL else None


def example_args(schema: Any) -> dict[str, Any]:
    """Plausible arguments for a tool with this parameters schema (always an object)."""
    value = example_value(schema, 0) if isinstance(schema, dict) else {}
    return value if isinstance(value, dict) else {}


def example_value(schema: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return "mock"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_value((usable or options)[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: example_value(props.get(name), depth + 1) for name in names}
    if kind == "array":
        items = schema.get("items")
        return [example_value(items, depth + 1)] if isinstance(items, dict) else []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "mock"
