"""A chat completions stream rewritten, event by event, as an Anthropic Messages stream. Pure.

Each upstream chunk yields its Anthropic events at once: the first one brings
``message_start``, text becomes ``text_delta`` in a text block, tool call argument fragments
become ``input_json_delta`` in one ``tool_use`` block per tool call index. A text block is
closed when the first tool call starts; tool blocks stay open until the finish_reason, so
providers that interleave fragments of parallel calls still give each block its whole
input (Anthropic clients address deltas by index). The finish_reason closes the blocks, but
``message_delta`` (stop reason, usage) and ``message_stop`` wait for the usage, which chat
streams send in a later chunk, or for ``[DONE]``. Reasoning deltas are dropped (chat has no
signed thinking to give back). Same content and stop reason mapping as :mod:`.response`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from arbstr.apis.translate.common import (
    EMPTY_USAGE,
    decode_any,
    encode,
    matched_stop,
    message_id,
    sse,
    stop_reason,
    tool_use_id,
    usage_of,
)
from arbstr.apis.translate.response import content_text

Json = dict[str, Any]


@dataclass(slots=True)
class _Tool:
    position: int  # order of appearance, for an id when the provider gave none
    id: str = ""
    name: str = ""
    block: int | None = None  # the Anthropic block index once started
    pending: list[str] = field(default_factory=list)  # arguments before the name came


class ChatToMessagesStream:
    """Feed it the ``data`` of each chat SSE event (``b"[DONE]"`` included); it returns the
    Anthropic SSE bytes to send. ``done`` once ``message_stop`` was emitted; ``error`` holds
    the message of an upstream error chunk (then translated to an ``error`` event)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self.error: str | None = None
        self._started = False
        self._msg_id = message_id(None)
        self._next = 0  # the next Anthropic block index
        self._text: int | None = None  # the open text block
        self._tools: dict[int, _Tool] = {}
        self._last_tool: int | None = None
        self._positions = 0  # tool calls seen
        self._had_tools = False
        self._finish: str | None = None
        self._finished = False
        self._sequence: str | None = None
        self._usage: dict[str, int] | None = None

    def feed(self, data: bytes) -> bytes:
        """One chat SSE event's data; the Anthropic events it gives (maybe none)."""
        if self.done or self.error is not None:
            return b""
        if data.strip() == b"[DONE]":
            return self._end()
        try:
            chunk = decode_any(data)
        except msgspec.DecodeError:
            return b""  # not a chunk (a provider's comment or keep-alive): nothing to say
        if not isinstance(chunk, dict):
            return b""
        if chunk.get("error"):
            return self._error(chunk["error"])
        out: list[bytes] = []
        if not self._started:
            out.append(self._start(chunk))
        usage = usage_of(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index") in (0, None):
                self._choice(choice, out)
        if self._finished and usage is not None:  # usage given with or after the finish
            out.append(self._end())
        return b"".join(out)

    def finish(self) -> bytes:
        """The upstream ended without ``[DONE]``: the message is completed when a
        finish_reason came; otherwise nothing is emitted and ``done`` stays False, so the
        caller reports the cut stream."""
        if self.done or self.error is not None or not self._finished:
            return b""
        return self._end()

    def _start(self, chunk: Json) -> bytes:
        self._started = True
        self._msg_id = message_id(chunk.get("id"))
        message: Json = {
            "id": self._msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_of(chunk.get("usage")) or dict(EMPTY_USAGE),
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: Json, out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = content_text(delta.get("content"))
            if text:
                self._text_delta(text, out)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_delta(call, out)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason and not self._finished:
            self._finished = True
            self._finish = reason
            self._sequence = matched_stop(choice)
            self._close_all(out)

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        if self._text is None:
            self._text = self._open({"type": "text", "text": ""}, out)
        delta = {"type": "text_delta", "text": text}
        out.append(self._delta(self._text, delta))

    def _tool_key(self, call: Json) -> int:
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        call_id = call.get("id")  # no index: a new id is a new call, else the last call
        known = any(t.id == call_id for t in self._tools.values())
        if self._last_tool is None or (isinstance(call_id, str) and call_id and not known):
            return max(self._tools, default=-1) + 1
        return self._last_tool

    def _tool_delta(self, call: Json, out: list[bytes]) -> None:
        key = self._tool_key(call)
        self._last_tool = key
        tool = self._tools.get(key)
        if tool is None:
            tool = self._tools[key] = _Tool(position=self._positions)
            self._positions += 1
            self._had_tools = True
        if isinstance(call.get("id"), str) and not tool.id:
            tool.id = call["id"]
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if isinstance(name, str) and name and not tool.name:
            tool.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a provider that sends the whole input at once
            arguments = encode(arguments).decode()
        if isinstance(arguments, str) and arguments:
            tool.pending.append(arguments)
        if tool.block is None and tool.name:
            self._open_tool(tool, out)
        self._flush(tool, out)

    def _open_tool(self, tool: _Tool, out: list[bytes]) -> None:
        self._close_text(out)
        block = {
            "type": "tool_use",
            "id": tool_use_id(tool.id, self._msg_id, tool.position),
            "name": tool.name,
            "input": {},
        }
        tool.block = self._open(block, out)

    def _open(self, block: Json, out: list[bytes]) -> int:
        index = self._next
        self._next += 1
        event = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(sse("content_block_start", event))
        return index

    def _delta(self, index: int, delta: Json) -> bytes:
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return sse("content_block_delta", event)

    def _stop(self, index: int) -> bytes:
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _close_text(self, out: list[bytes]) -> None:
        if self._text is not None:
            out.append(self._stop(self._text))
            self._text = None

    def _close_all(self, out: list[bytes]) -> None:
        self._close_text(out)
        for tool in self._tools.values():
            if tool.block is None:  # never named: still a tool_use block, with its input
                self._open_tool(tool, out)
                self._flush(tool, out)
        for index in sorted(t.block for t in self._tools.values() if t.block is not None):
            out.append(self._stop(index))
        self._tools.clear()

    def _flush(self, tool: _Tool, out: list[bytes]) -> None:
        if tool.block is not None and tool.pending:
            partial = "".join(tool.pending)
            tool.pending.clear()
            out.append(
                self._delta(tool.block, {"type": "input_json_delta", "partial_json": partial})
            )

    def _end(self) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._start({}))
        self._close_all(out)
        reason = stop_reason(self._finish, self._had_tools)
        sequence = self._sequence if reason == "end_turn" else None
        if sequence is not None:
            reason = "stop_sequence"
        usage: Json = dict(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
        }
        out.append(sse("message_delta", {**delta, "usage": usage}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.done = True
        return b"".join(out)

    def _error(self, error: object) -> bytes:
        message = error.get("message") if isinstance(error, dict) else error
        self.error = message if isinstance(message, str) and message else "upstream error"
        payload = {"type": "error", "error": {"type": "api_error", "message": self.error}}
        return sse("error", payload)
