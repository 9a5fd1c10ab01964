"""Reading the optional request fields the complexity scorer counts, shared by the APIs.

Each field is decoded by the parsers as ``msgspec.Raw`` (skipped, not built) and read here
only when present. Lenient: a field of an unexpected shape counts as absent, because arbstr
forwards the body as it came and the upstream judges it."""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.base import ResponseFormat


class _Typed(msgspec.Struct):
    type: Any = None
    mode: Any = None  # Responses {"type": "allowed_tools", "mode": ...}
    allowed_tools: Any = None  # chat {"type": "allowed_tools", "allowed_tools": {"mode": ...}}


_typed_decoder = msgspec.json.Decoder(_Typed)
_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_str_decoder = msgspec.json.Decoder(str)
# tool_choice object types that leave the model free not to call a tool
_OPTIONAL = frozenset({"auto", "none"})


def first_byte(raw: msgspec.Raw) -> int:
    """The first byte of a (non-empty) raw JSON value: ``[``, ``{``, ``"``..."""
    return memoryview(raw)[0]


def _typed(raw: msgspec.Raw) -> _Typed | None:
    try:
        return _typed_decoder.decode(raw)
    except msgspec.DecodeError:  # (ValidationError is one)
        return None


def count_items(raw: msgspec.Raw) -> int:
    """The length of a JSON array (0: absent, null or not an array)."""
    if not raw or first_byte(raw) != 0x5B:
        return 0
    try:
        return len(_list_decoder.decode(raw))
    except msgspec.DecodeError:
        return 0


def tool_choice_required(raw: msgspec.Raw) -> bool:
    """Whether a ``tool_choice`` makes the model call a tool: chat/Responses ``"required"``,
    a named function or tool, ``allowed_tools`` in mode ``required``; Messages ``any`` or
    ``tool``."""
    if not raw:
        return False
    if first_byte(raw) == 0x22:
        try:
            return _str_decoder.decode(raw) == "required"
        except msgspec.DecodeError:
            return False
    choice = _typed(raw)
    if choice is None or not isinstance(choice.type, str) or choice.type in _OPTIONAL:
        return False
    if choice.type == "allowed_tools":
        nested = choice.allowed_tools
        mode = nested.get("mode") if isinstance(nested, dict) else choice.mode
        return mode == "required"
    return True


def response_format(raw: msgspec.Raw) -> ResponseFormat | None:
    """The structured output a format object asks for (``{"type": "json_schema", ...}``)."""
    if not raw or first_byte(raw) != 0x7B:
        return None
    fmt = _typed(raw)
    kind = fmt.type if fmt is not None else None
    if kind == "json_schema":
        return "json_schema"
    if kind == "json_object":
        return "json_object"
    return None
