"""What the reply and stream translations share: stop reasons, usage, ids, SSE framing. Pure."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from arbstr.records import MAX_TOKENS

encode = msgspec.json.Encoder().encode
decode_any = msgspec.json.Decoder().decode

# chat completions finish_reason -> Anthropic stop_reason
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def stop_reason(finish_reason: object, has_tool_calls: bool) -> str:
    """The Anthropic stop_reason for a chat finish_reason. A turn that called tools ends in
    ``tool_use`` even when the provider said ``stop`` (several do), since that is what
    makes an agent run the tools; a cut-off (``length``) stays ``max_tokens``."""
    reason = _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else ""
    if has_tool_calls and reason in ("end_turn", "", "tool_use"):
        return "tool_use"
    return reason or "end_turn"


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop sequence the provider says it hit, when it says (vLLM ``stop_reason``,
    SGLang ``matched_stop``; an integer there is a stop token id, not a sequence)."""
    for key in ("stop_reason", "matched_stop"):
        value = choice.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return 0


def usage_of(usage: object) -> dict[str, int] | None:
    """Anthropic usage from chat usage: input_tokens excludes cached prompt tokens, which are
    cache_read_input_tokens (chat counts them inside prompt_tokens). None when absent; a
    count that is not a sane integer reads as 0."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


EMPTY_USAGE = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}


def message_id(chat_id: object) -> str:
    """``msg_`` plus the provider's completion id (so a reply and its log line match), made
    safe; a fixed placeholder when the provider gave none."""
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + _ID_UNSAFE.sub("_", chat_id)[:128]
    return "msg_arbstr"


def tool_use_id(call_id: object, message: str, position: int) -> str:
    """The tool call's own id; one derived from the message id and position when absent, so
    the client can still answer it with a tool_result."""
    if isinstance(call_id, str) and call_id:
        return call_id
    return f"toolu_{message.removeprefix('msg_')}_{position}"


def sse(event: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic SSE event."""
    return b"event: " + event.encode() + b"\ndata: " + encode(payload) + b"\n\n"
