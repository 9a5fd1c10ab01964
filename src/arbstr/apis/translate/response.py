"""A chat completion answer rewritten as an Anthropic message. Pure.

The first choice becomes one assistant message: its text as a text block (none when empty),
then one ``tool_use`` block per tool call. A call's ``input`` is its arguments parsed as a
JSON object; arguments that are empty, not JSON or not an object give ``{}`` and nothing
else: the raw text is not turned into a text block, which the client would show as the
model's words and send back as such, while ``{}`` makes the tool report the missing input
to the model on the next turn. Usage and stop reasons as in :mod:`.common`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.translate.common import (
    EMPTY_USAGE,
    decode_any,
    encode,
    matched_stop,
    message_id,
    stop_reason,
    tool_use_id,
    usage_of,
)
from arbstr.upstream.usage import NotACompletion

Json = dict[str, Any]


def content_text(content: object) -> str:
    """A chat message's text: the string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def tool_input(arguments: object) -> Json:
    """A tool call's arguments as the tool_use ``input`` object (``{}`` when unusable)."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            parsed = decode_any(arguments)
        except msgspec.DecodeError:
            return {}
        if isinstance(parsed, dict):
            return parsed
    return {}


def _tool_blocks(calls: object, msg_id: str) -> list[Json]:
    if not isinstance(calls, list):
        return []
    blocks: list[Json] = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.get("id"), msg_id, position),
                "name": name if isinstance(name, str) else "",
                "input": tool_input(function.get("arguments")),
            }
        )
    return blocks


def chat_to_message(body: bytes, model: str) -> bytes:
    """The Anthropic message for a chat completion body, naming ``model``. Raises
    :class:`~arbstr.upstream.usage.NotACompletion` when the body is not a JSON object."""
    try:
        obj = decode_any(body)
    except msgspec.DecodeError:
        raise NotACompletion("upstream answer is not JSON") from None
    if not isinstance(obj, dict):
        raise NotACompletion("upstream answer is not a JSON object")
    msg_id = message_id(obj.get("id"))
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[Json] = []
    text = content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    tools = _tool_blocks(message.get("tool_calls"), msg_id)
    content.extend(tools)
    reason = stop_reason(choice.get("finish_reason"), bool(tools))
    sequence = matched_stop(choice) if reason == "end_turn" else None
    if sequence is not None:
        reason = "stop_sequence"
    return encode(
        {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage_of(obj.get("usage")) or dict(EMPTY_USAGE),
        }
    )
