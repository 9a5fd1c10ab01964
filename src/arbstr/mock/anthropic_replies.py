"""The mock's Anthropic Messages API: ``/v1/messages`` (JSON, and the SSE event sequence the
``anthropic`` SDK reads) and ``/v1/messages/count_tokens``. Pure.

Usage carries ``input_tokens`` / ``output_tokens`` (cache fields 0) and Routstr's reported
charge (``cost.total_msats``, ``cost_sats``); in a stream the final ``message_delta`` has it all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbstr.mock.common import (
    Answer,
    Ctx,
    MockError,
    Plan,
    StreamFrames,
    bad_request,
    decode_object,
    encode,
    model_of,
    opt_int,
    plan_call,
    plan_text,
    sse,
    text_tokens,
    tool_said,
)
from arbstr.mock.tools import ANY_TOOL, Tool, asked_tool, example_args

# HTTP status -> Anthropic error type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(exc: MockError) -> bytes:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return encode({"type": "error", "error": {"type": kind, "message": exc.message}})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    stream: bool
    max_tokens: int | None
    prompt_tokens: int
    user_text: str  # the last user turn's text blocks
    tool_result: str | None  # the text of a tool result the last turn carries
    tools: list[Tool]
    forced: str | None
    no_tools: bool  # tool_choice none


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _text(content: Any) -> str:
    return "".join(str(b.get("text") or "") for b in _blocks(content) if b.get("type") == "text")


def _chars(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text") or ""))
    if kind == "thinking":
        return len(str(block.get("thinking") or ""))
    if kind == "tool_use":
        return len(encode(block.get("input"))) + len(str(block.get("name") or ""))
    if kind == "tool_result":
        return sum(_chars(b) for b in _blocks(block.get("content")))
    return 0


def parse_messages(raw: bytes, *, need_max_tokens: bool) -> MessagesRequest:
    body = decode_object(raw)
    model = model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: must be a non-empty array")
    if not all(isinstance(m, dict) for m in messages):
        raise bad_request("messages: each message must be an object")
    max_tokens = opt_int(body, "max_tokens")
    if need_max_tokens and max_tokens is None:
        raise bad_request("max_tokens: Field required")
    chars = sum(_chars(b) for b in _blocks(body.get("system")))
    for message in messages:
        chars += sum(_chars(b) for b in _blocks(message.get("content")))
    raw_tools = body.get("tools")
    tools = [
        Tool(t["name"], t.get("input_schema"))
        for t in (raw_tools if isinstance(raw_tools, list) else ())
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    if raw_tools:
        chars += len(encode(raw_tools))
    user_text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            user_text = _text(message.get("content"))
            break
    last = messages[-1]
    results = [b for b in _blocks(last.get("content")) if b.get("type") == "tool_result"]
    tool_result = None
    if last.get("role") == "user" and results:
        content = results[-1].get("content")
        tool_result = content if isinstance(content, str) else _text(content)
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    forced: str | None = None
    if choice.get("type") == "any":
        forced = ANY_TOOL
    elif choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        forced = choice["name"]
    return MessagesRequest(
        model=model,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        prompt_tokens=text_tokens(chars) + 3 * len(messages),
        user_text=user_text,
        tool_result=tool_result,
        tools=tools,
        forced=forced,
        no_tools=choice.get("type") == "none",
    )


def plan_reply(ctx: Ctx, opening: tuple[str, ...], req: MessagesRequest) -> Plan:
    if req.tool_result is not None:
        return plan_text(
            ctx.spec, tool_said(opening), req.tool_result, req.prompt_tokens, req.max_tokens
        )
    if not req.no_tools:
        tool = asked_tool(req.tools, req.user_text, req.forced)
        if tool is not None:
            args = example_args(tool.schema)
            return plan_call(ctx.spec, ctx.new_id("toolu_"), tool.name, args, req.prompt_tokens)
    return plan_text(ctx.spec, opening, req.user_text, req.prompt_tokens, req.max_tokens)


def _stop_reason(plan: Plan) -> str:
    if plan.call is not None:
        return "tool_use"
    return "max_tokens" if plan.truncated else "end_turn"


def _usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _content(plan: Plan) -> dict[str, Any]:
    if plan.call is not None:
        call = plan.call
        return {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
    return {"type": "text", "text": ""}


def _message(msg_id: str, model: str, plan: Plan) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(plan, 1),
    }


def message_body(msg_id: str, model: str, plan: Plan) -> bytes:
    block = _content(plan)
    if plan.call is not None:
        block["input"] = plan.call.args
    else:
        block["text"] = plan.text
    message = _message(msg_id, model, plan)
    message["content"] = [block]
    message["stop_reason"] = _stop_reason(plan)
    message["usage"] = {**_usage(plan, plan.completion_tokens), **plan.cost_fields()}
    return encode(message)


def stream_frames(msg_id: str, model: str, plan: Plan) -> StreamFrames:
    start = {"type": "message_start", "message": _message(msg_id, model, plan)}
    first = b"".join(
        (
            sse("message_start", start),
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": _content(plan)},
            ),
            sse("ping", {"type": "ping"}),
        )
    )
    if plan.call is not None:
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in plan.call.pieces]
    else:
        deltas = [{"type": "text_delta", "text": t} for t in plan.tokens]
    paced = [
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    ]
    final_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
        "usage": {**_usage(plan, plan.completion_tokens), **plan.cost_fields()},
    }
    rest = [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("message_delta", final_delta),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return StreamFrames(first, paced, rest)


def answer_messages(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/messages``."""
    req = parse_messages(raw, need_max_tokens=True)
    plan = plan_reply(ctx, ctx.opening(req.model), req)
    msg_id = ctx.new_id("msg_")
    if req.stream:
        return Answer(frames=stream_frames(msg_id, req.model, plan), total_msats=plan.total_msats)
    return Answer(body=message_body(msg_id, req.model, plan), total_msats=plan.total_msats)


def answer_count_tokens(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/messages/count_tokens``: the ``input_tokens`` a message request would bill."""
    req = parse_messages(raw, need_max_tokens=False)
    ctx.opening(req.model)
    return Answer(body=encode({"input_tokens": req.prompt_tokens}))
