"""The JSON answer a buffered stream amounts to, for judging it with
:func:`arbstr.routing.escalation.signal`: chat chunks (delta content, tool calls assembled
by index from their argument fragments, finish_reason, usage) and Anthropic Messages events
(text blocks, tool_use input from its ``input_json_delta`` fragments, stop_reason, usage).
Pure; events that do not decode are skipped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from arbstr.apinames import ApiName

JUDGED_STREAMS: tuple[ApiName, ...] = ("chat", "messages")


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _decode(data: bytes) -> dict[str, Any]:
    try:
        return _d(msgspec.json.decode(data))
    except (msgspec.DecodeError, RecursionError):
        return {}


def chat_answer(datas: Iterable[bytes]) -> dict[str, Any]:
    """A chat completion object from the ``data:`` payloads of a chunk stream (first choice)."""
    text: list[str] = []
    refusal: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: object = None
    usage: object = None
    for data in datas:
        if data.strip() == b"[DONE]":
            break
        obj = _decode(data)
        if obj.get("usage") is not None:
            usage = obj["usage"]
        for choice in obj.get("choices") or ():
            c = _d(choice)
            if c.get("index", 0) != 0:
                continue
            delta = _d(c.get("delta"))
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                refusal.append(delta["refusal"])
            for tc in delta.get("tool_calls") or ():
                t = _d(tc)
                i = t.get("index", 0)
                call = calls.setdefault(i if type(i) is int else 0, {"arguments": ""})
                fn = _d(t.get("function"))
                if isinstance(fn.get("name"), str):
                    call["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call["arguments"] += fn["arguments"]
            if c.get("finish_reason") is not None:
                finish = c["finish_reason"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if refusal:
        message["refusal"] = "".join(refusal)
    if calls:
        message["tool_calls"] = [{"type": "function", "function": calls[i]} for i in sorted(calls)]
    out: dict[str, Any] = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def messages_answer(datas: Iterable[bytes]) -> dict[str, Any]:
    """A Messages object from the ``data:`` payloads of an Anthropic event stream."""
    blocks: dict[int, dict[str, Any]] = {}
    stop: object = None
    usage: dict[str, Any] = {}
    for data in datas:
        obj = _decode(data)
        kind = obj.get("type")
        i = obj.get("index", 0)
        i = i if type(i) is int else 0
        if kind == "message_start":
            usage.update(_d(_d(obj.get("message")).get("usage")))
        elif kind == "content_block_start":
            b = dict(_d(obj.get("content_block")))
            if b.get("type") == "tool_use":
                b["partial"] = ""
            blocks[i] = b
        elif kind == "content_block_delta":
            b = blocks.setdefault(i, {"type": "text", "text": ""})
            delta = _d(obj.get("delta"))
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                b["text"] = str(b.get("text", "")) + delta["text"]
            elif delta.get("type") == "input_json_delta":
                part = delta.get("partial_json")
                b["partial"] = str(b.get("partial", "")) + (part if isinstance(part, str) else "")
        elif kind == "message_delta":
            stop = _d(obj.get("delta")).get("stop_reason", stop)
            usage.update(_d(obj.get("usage")))
    content = []
    for i in sorted(blocks):
        b = blocks[i]
        partial = b.pop("partial", None)
        if isinstance(partial, str) and partial.strip():
            b["input"] = _decode_any(partial)
        content.append(b)
    return {"type": "message", "content": content, "stop_reason": stop, "usage": usage}


def _decode_any(text: str) -> object:
    """Tool input as sent: decoded when it is JSON, else the raw text (judged as bad args)."""
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return text


def stream_answer(api: ApiName, datas: Iterable[bytes]) -> bytes | None:
    """The answer of a stream of ``api`` as a JSON body (None: an API not judged as a stream)."""
    if api == "chat":
        return msgspec.json.encode(chat_answer(datas))
    if api == "messages":
        return msgspec.json.encode(messages_answer(datas))
    return None
