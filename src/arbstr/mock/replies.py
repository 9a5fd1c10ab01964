"""The mock's chat completions: request parsing, the reply (text, or a tool call when asked),
the JSON completion and the SSE frames of a stream. Pure (see :mod:`.server` for the I/O).

Text streams are built from pre-encoded byte pieces: the mock must stay cheap next to the
proxy.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.chat import Message, StreamOptions, text_of
from arbstr.mock.common import (
    DONE,
    FINGERPRINT,
    Answer,
    Ctx,
    Plan,
    StreamFrames,
    bad_request,
    encode,
    plan_call,
    plan_text,
    text_tokens,
    tool_said,
)
from arbstr.mock.spec import MockSpec
from arbstr.mock.tools import ANY_TOOL, Tool, asked_tool, example_args


class ChatRequest(msgspec.Struct):
    """Only the fields the mock needs; unknown fields are ignored."""

    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None


_decoder = msgspec.json.Decoder(ChatRequest)


def parse_chat(raw: bytes) -> ChatRequest:
    try:
        req = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise bad_request(f"Invalid request body: {exc}") from None
    if not req.messages:
        raise bad_request("'messages' must be a non-empty array")
    for field, value in (
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ):
        if value is not None and value < 1:
            raise bad_request(f"'{field}' must be at least 1")
    return req


def prompt_tokens(req: ChatRequest) -> int:
    chars = sum(len(text_of(m.content)) for m in req.messages)
    if req.tools:
        chars += len(encode(req.tools))
    return text_tokens(chars) + 3 * len(req.messages)


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return text_of(message.content)
    return text_of(messages[-1].content)


def opening_words(spec: MockSpec, model: str) -> tuple[str, ...]:
    """The fixed start of every text reply of this provider for this model."""
    return ("Hello", "from", spec.name, f"({model})!", "You", "said:")


def models_body(spec: MockSpec) -> bytes:
    """The ``GET /v1/models`` document, with Routstr's ``sats_pricing`` (sats per token)."""
    return encode(
        {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": 1700000000,
                    "owned_by": spec.name,
                    "sats_pricing": {
                        "prompt": spec.input_rate / 1000,
                        "completion": spec.output_rate / 1000,
                        "request": spec.base_fee,
                    },
                }
                for model in spec.models
            ],
        }
    )


def _tools(req: ChatRequest) -> list[Tool]:
    tools: list[Tool] = []
    for entry in req.tools or ():
        fn = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools.append(Tool(fn["name"], fn.get("parameters")))
    return tools


def _forced(choice: Any) -> str | None:
    if choice == "required":
        return ANY_TOOL
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    return None


def plan_reply(ctx: Ctx, opening: tuple[str, ...], req: ChatRequest) -> Plan:
    """A tool call when one is asked for and no tool result just came; else text."""
    n_prompt = prompt_tokens(req)
    last = req.messages[-1]
    if last.role == "tool":
        said = text_of(last.content)
        return plan_text(ctx.spec, tool_said(opening), said, n_prompt, _limit(req))
    tools = _tools(req)
    if tools and req.tool_choice != "none":
        tool = asked_tool(tools, _last_user_text(req.messages), _forced(req.tool_choice))
        if tool is not None:
            args = example_args(tool.schema)
            return plan_call(ctx.spec, ctx.new_id("call_"), tool.name, args, n_prompt)
    said = _last_user_text(req.messages)
    return plan_text(ctx.spec, opening, said, n_prompt, _limit(req))


def _limit(req: ChatRequest) -> int | None:
    return req.max_completion_tokens or req.max_tokens


def usage_of(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        **plan.cost_fields(),
    }


def finish_reason(plan: Plan) -> str:
    if plan.call is not None:
        return "tool_calls"
    return "length" if plan.truncated else "stop"


def completion_body(completion_id: str, created: int, model: str, plan: Plan) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None}
    if plan.call is not None:
        call = plan.call
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
        ]
    return encode(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(plan),
                }
            ],
            "usage": usage_of(plan),
            "system_fingerprint": FINGERPRINT,
        }
    )


def stream_frames(
    completion_id: str, created: int, model: str, plan: Plan, include_usage: bool
) -> StreamFrames:
    head = b"".join(
        (
            b'data: {"id":',
            encode(completion_id),
            b',"object":"chat.completion.chunk","created":',
            str(created).encode(),
            b',"model":',
            encode(model),
            b',"system_fingerprint":"',
            FINGERPRINT.encode(),
            b'","choices":[{"index":0,"delta":',
        )
    )
    usage_null = b',"usage":null' if include_usage else b""
    tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    call = plan.call
    if call is None:
        first = head + b'{"role":"assistant","content":"","refusal":null}' + tail
        paced = [head + b'{"content":' + encode(token) + b"}" + tail for token in plan.tokens]
    else:
        opening_call: dict[str, Any] = {
            "index": 0,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        first = (
            head + encode({"role": "assistant", "content": None, "tool_calls": [opening_call]})
        ) + tail
        paced = [
            head + encode({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}) + tail
            for piece in call.pieces
        ]
    paced.append(
        head
        + b'{},"logprobs":null,"finish_reason":"'
        + finish_reason(plan).encode()
        + b'"}]'
        + usage_null
        + b"}\n\n"
    )
    rest = [DONE]
    if include_usage:
        usage_event = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage_of(plan),
        }
        rest.insert(0, b"data: " + encode(usage_event) + b"\n\n")
    return StreamFrames(first, paced, rest)


def answer_chat(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/chat/completions``."""
    req = parse_chat(raw)
    opening = ctx.opening(req.model)
    plan = plan_reply(ctx, opening, req)
    completion_id = ctx.new_id("chatcmpl-")
    created = ctx.created()
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        frames = stream_frames(completion_id, created, req.model, plan, include_usage)
        return Answer(frames=frames, total_msats=plan.total_msats)
    body = completion_body(completion_id, created, req.model, plan)
    return Answer(body=body, total_msats=plan.total_msats)
