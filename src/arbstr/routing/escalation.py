"""Whether a tiered answer failed in a way a stronger model may not: the failure signal that
makes an ``escalate = true`` rule re-ask it one tier up. Pure; never raises on any body.

Signals (reason codes), first match wins:

- ``refusal``: chat ``message.refusal`` non-empty or finish_reason ``content_filter``;
  Messages stop_reason ``refusal``; a Responses refusal part or ``content_filter`` cut.
- ``truncated``: cut for length (chat finish_reason ``length``, Messages stop_reason
  ``max_tokens``, Responses ``incomplete`` for ``max_output_tokens``) while the client's
  ``max_tokens`` was not set or not reached by the answer's completion tokens.
- ``empty``: no text (blank counts as none) and no tool call.
- ``no_tool_call``: the request required a tool call and the answer has none.
- ``bad_tool_args``: a tool call whose arguments are not a JSON object (empty: no arguments).
- ``invalid_json``: the request asked for ``json_object`` / ``json_schema`` output and the
  text does not parse as JSON.

Only the first choice of a chat answer is judged. Other APIs (embeddings, completions) and
bodies that are not JSON objects give no signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import ApiRequest
from arbstr.config import TIER_NAMES

REASONS = ("refusal", "truncated", "empty", "no_tool_call", "bad_tool_args", "invalid_json")


def next_tier(tier: str | None) -> str | None:
    """The tier above ``tier`` (None: frontier, or no tier)."""
    if tier not in TIER_NAMES:
        return None
    i = TIER_NAMES.index(tier)
    return TIER_NAMES[i + 1] if i + 1 < len(TIER_NAMES) else None


@dataclass(slots=True)
class Answer:
    """What the signals read of one answer, whichever API gave it."""

    text: str = ""
    tool_args: list[object] = field(default_factory=list)  # each call's arguments (raw)
    refused: bool = False
    cut: bool = False  # stopped for length
    output_tokens: int | None = None


def signal(api: ApiName, body: bytes, request: ApiRequest) -> str | None:
    """The failure signal of a non-streaming 2xx answer ``body`` of ``api``, or None."""
    try:
        obj = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    answer = read_answer(api, obj)
    return None if answer is None else judge(answer, request)


def read_answer(api: ApiName, obj: object) -> Answer | None:
    """The answer in a decoded body of ``api`` (None: not an answer this module reads)."""
    if not isinstance(obj, dict):
        return None
    if api == "chat":
        return _chat(obj)
    if api == "messages":
        return _messages(obj)
    if api == "responses":
        return _responses(obj)
    return None


def judge(a: Answer, request: ApiRequest) -> str | None:
    if a.refused:
        return "refusal"
    limit = request.max_tokens
    if a.cut and (limit is None or a.output_tokens is None or a.output_tokens < limit):
        return "truncated"
    has_text = bool(a.text.strip())
    if not has_text and not a.tool_args:
        return "empty"
    features = request.features
    if features.tool_choice_required and not a.tool_args:
        return "no_tool_call"
    if any(not _json_object(args) for args in a.tool_args):
        return "bad_tool_args"
    if features.response_format is not None and not a.tool_args and not _parses(a.text):
        return "invalid_json"
    return None


def _json_object(args: object) -> bool:
    """Tool arguments: a JSON object, as a string (chat, Responses) or decoded (Messages)."""
    if isinstance(args, dict):
        return True
    if not isinstance(args, str):
        return False
    if not args.strip():
        return True  # a call without arguments
    try:
        return isinstance(msgspec.json.decode(args), dict)
    except (msgspec.DecodeError, RecursionError):
        return False


def _parses(text: str) -> bool:
    try:
        msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _text_of(content: object) -> str:
    """Chat content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    return "".join(
        p["text"] for p in _l(content) if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _chat(obj: dict[str, Any]) -> Answer | None:
    choices = _l(obj.get("choices"))
    if not choices:
        return None
    choice = _d(choices[0])
    message = _d(choice.get("message"))
    finish = choice.get("finish_reason")
    refusal = message.get("refusal")
    calls = [_d(_d(c).get("function")).get("arguments", "") for c in _l(message.get("tool_calls"))]
    return Answer(
        text=_text_of(message.get("content")),
        tool_args=calls,
        refused=bool(isinstance(refusal, str) and refusal.strip()) or finish == "content_filter",
        cut=finish == "length",
        output_tokens=_int(_d(obj.get("usage")).get("completion_tokens")),
    )


def _messages(obj: dict[str, Any]) -> Answer:
    text: list[str] = []
    calls: list[object] = []
    for block in _l(obj.get("content")):
        b = _d(block)
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            text.append(b["text"])
        elif b.get("type") == "tool_use":
            calls.append(b.get("input"))
    stop = obj.get("stop_reason")
    return Answer(
        text="".join(text),
        tool_args=calls,
        refused=stop == "refusal",
        cut=stop == "max_tokens",
        output_tokens=_int(_d(obj.get("usage")).get("output_tokens")),
    )


def _responses(obj: dict[str, Any]) -> Answer:
    text: list[str] = []
    calls: list[object] = []
    refused = False
    for item in _l(obj.get("output")):
        it = _d(item)
        if it.get("type") == "function_call":
            calls.append(it.get("arguments", ""))
        elif it.get("type") == "message":
            for part in _l(it.get("content")):
                p = _d(part)
                if p.get("type") == "output_text" and isinstance(p.get("text"), str):
                    text.append(p["text"])
                elif p.get("type") == "refusal" and p.get("refusal"):
                    refused = True
    why = _d(obj.get("incomplete_details")).get("reason")
    incomplete = obj.get("status") == "incomplete"
    return Answer(
        text="".join(text),
        tool_args=calls,
        refused=refused or (incomplete and why == "content_filter"),
        cut=incomplete and why == "max_output_tokens",
        output_tokens=_int(_d(obj.get("usage")).get("output_tokens")),
    )
