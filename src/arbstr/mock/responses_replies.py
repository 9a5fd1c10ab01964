"""The mock's OpenAI Responses API (``/v1/responses``): ``input`` as a string or an item list,
``instructions``, ``max_output_tokens``, function ``tools``; the JSON ``response`` object and
the SSE event sequence the openai SDK and Codex CLI read (``response.created`` …
``response.completed``, each event with ``type`` and ``sequence_number``). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbstr.mock.common import (
    Answer,
    Ctx,
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

_TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    body: dict[str, Any]  # echoed back: instructions, tools, tool_choice, ...
    model: str
    stream: bool
    max_output_tokens: int | None
    prompt_tokens: int
    user_text: str
    tool_result: str | None  # the output of a tool call the input ends with
    tools: list[Tool]
    forced: str | None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _item_chars(item: dict[str, Any]) -> int:
    kind = item.get("type", "message")
    if kind == "message":
        return len(_text(item.get("content")))
    if kind == "function_call":
        return len(str(item.get("arguments") or "")) + len(str(item.get("name") or ""))
    if kind in _TOOL_OUTPUTS:
        return len(_text(item.get("output")))
    if kind == "reasoning":
        return len(_text(item.get("summary")))
    return 0


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and value:
        return [item for item in value if isinstance(item, dict)]
    raise bad_request("'input' must be a string or a non-empty array of input items")


def _forced(choice: Any) -> str | None:
    if choice == "required":
        return ANY_TOOL
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    return None


def parse_responses(raw: bytes) -> ResponsesRequest:
    body = decode_object(raw)
    model = model_of(body)
    items = _items(body.get("input"))
    instructions = body.get("instructions")
    chars = len(instructions) if isinstance(instructions, str) else 0
    chars += sum(_item_chars(item) for item in items)
    raw_tools = body.get("tools")
    tools = [
        Tool(t["name"], t.get("parameters"))
        for t in (raw_tools if isinstance(raw_tools, list) else ())
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]
    if raw_tools:
        chars += len(encode(raw_tools))
    messages = [i for i in items if i.get("type", "message") == "message"]
    user_text = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    last = items[-1] if items else {}
    tool_result = _text(last.get("output")) if last.get("type") in _TOOL_OUTPUTS else None
    choice = body.get("tool_choice")
    return ResponsesRequest(
        body=body,
        model=model,
        stream=body.get("stream") is True,
        max_output_tokens=opt_int(body, "max_output_tokens"),
        prompt_tokens=text_tokens(chars) + 3 * len(items),
        user_text=user_text,
        tool_result=tool_result,
        tools=[] if choice == "none" else tools,
        forced=_forced(choice),
    )


def plan_reply(ctx: Ctx, opening: tuple[str, ...], req: ResponsesRequest) -> Plan:
    limit = req.max_output_tokens
    if req.tool_result is not None:
        return plan_text(ctx.spec, tool_said(opening), req.tool_result, req.prompt_tokens, limit)
    tool = asked_tool(req.tools, req.user_text, req.forced)
    if tool is not None:
        args = example_args(tool.schema)
        return plan_call(ctx.spec, ctx.new_id("call_"), tool.name, args, req.prompt_tokens)
    return plan_text(ctx.spec, opening, req.user_text, req.prompt_tokens, limit)


def usage_of(plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        **plan.cost_fields(),
    }


@dataclass(frozen=True, slots=True)
class _Ids:
    response: str
    item: str
    created: int


def _item(ids: _Ids, plan: Plan, done: bool) -> dict[str, Any]:
    status = ("incomplete" if plan.truncated else "completed") if done else "in_progress"
    if plan.call is not None:
        call = plan.call
        return {
            "id": ids.item,
            "type": "function_call",
            "status": status,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments if done else "",
        }
    return {
        "id": ids.item,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_part(plan)] if done else [],
    }


def _part(plan: Plan, text: str | None = None) -> dict[str, Any]:
    body = plan.text if text is None else text
    return {"type": "output_text", "text": body, "annotations": [], "logprobs": []}


def _response(ids: _Ids, req: ResponsesRequest, plan: Plan, done: bool) -> dict[str, Any]:
    body = req.body
    status = ("incomplete" if plan.truncated else "completed") if done else "in_progress"
    return {
        "id": ids.response,
        "object": "response",
        "created_at": ids.created,
        "status": status,
        "error": None,
        "incomplete_details": (
            {"reason": "max_output_tokens"} if done and plan.truncated else None
        ),
        "instructions": body.get("instructions"),
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": [_item(ids, plan, True)] if done else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage_of(plan) if done else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def stream_frames(ids: _Ids, req: ResponsesRequest, plan: Plan) -> StreamFrames:
    head: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(ids, req, plan, False)},
        {"type": "response.in_progress", "response": _response(ids, req, plan, False)},
        {"type": "response.output_item.added", "output_index": 0, "item": _item(ids, plan, False)},
    ]
    at = {"item_id": ids.item, "output_index": 0}
    at_part = {**at, "content_index": 0}
    call = plan.call
    if call is not None:
        deltas = [
            {"type": "response.function_call_arguments.delta", **at, "delta": piece}
            for piece in call.pieces
        ]
        tail: list[dict[str, Any]] = [
            {"type": "response.function_call_arguments.done", **at, "arguments": call.arguments}
        ]
    else:
        head.append({"type": "response.content_part.added", **at_part, "part": _part(plan, "")})
        deltas = [
            {"type": "response.output_text.delta", **at_part, "delta": token, "logprobs": []}
            for token in plan.tokens
        ]
        tail = [
            {"type": "response.output_text.done", **at_part, "text": plan.text, "logprobs": []},
            {"type": "response.content_part.done", **at_part, "part": _part(plan)},
        ]
    final = "response.incomplete" if plan.truncated else "response.completed"
    item_done = {"type": "response.output_item.done", "output_index": 0}
    tail.append({**item_done, "item": _item(ids, plan, True)})
    tail.append({"type": final, "response": _response(ids, req, plan, True)})
    events = [*head, *deltas, *tail]
    frames = [
        sse(event["type"], {"type": event["type"], "sequence_number": n, **event})
        for n, event in enumerate(events)
    ]
    first = b"".join(frames[: len(head)])
    paced = frames[len(head) : len(head) + len(deltas)]
    return StreamFrames(first, paced, frames[len(head) + len(deltas) :])


def answer_responses(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/responses``."""
    req = parse_responses(raw)
    plan = plan_reply(ctx, ctx.opening(req.model), req)
    item_prefix = "fc_" if plan.call is not None else "msg_"
    ids = _Ids(ctx.new_id("resp_"), ctx.new_id(item_prefix), ctx.created())
    if req.stream:
        return Answer(frames=stream_frames(ids, req, plan), total_msats=plan.total_msats)
    body = encode(_response(ids, req, plan, True))
    return Answer(body=body, total_msats=plan.total_msats)
