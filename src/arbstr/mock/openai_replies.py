"""The mock's OpenAI embeddings (``/v1/embeddings``: deterministic unit vectors from a hash
of each input, as floats or base64 float32) and legacy completions (``/v1/completions``:
``text_completion`` JSON, or a stream ending in ``[DONE]``). Pure.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from arbstr.mock.common import (
    DONE,
    FINGERPRINT,
    Answer,
    Ctx,
    Plan,
    StreamFrames,
    bad_request,
    cost_msats,
    decode_object,
    encode,
    model_of,
    opt_int,
    plan_text,
    sse,
    text_tokens,
)

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 4096


def _inputs(value: Any, field: str) -> list[str | list[int]]:
    """A string, a token array, or a non-empty list of either."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [list(value)]
        if all(isinstance(v, str | list) for v in value):
            return list(value)
    raise bad_request(f"'{field}' must be a string, a token array or a non-empty array of them")


def _tokens(item: str | list[int]) -> int:
    return text_tokens(len(item)) if isinstance(item, str) else max(1, len(item))


def embedding(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for one input, in float32 precision (so floats and base64
    carry the same numbers)."""
    seed = (model + "\0" + (item if isinstance(item, str) else encode(item).decode())).encode()
    raw = b""
    counter = 0
    while len(raw) < dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    values = [b / 127.5 - 1.0 for b in raw[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def answer_embeddings(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/embeddings``."""
    body = decode_object(raw)
    model = model_of(body)
    items = _inputs(body.get("input"), "input")
    dimensions = opt_int(body, "dimensions") or DEFAULT_DIMENSIONS
    if dimensions > MAX_DIMENSIONS:
        raise bad_request(f"'dimensions' must be at most {MAX_DIMENSIONS}")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'")
    ctx.opening(model)
    data: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        vector = embedding(model, item, dimensions)
        value: Any = vector
        if fmt == "base64":
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    n_prompt = sum(_tokens(item) for item in items)
    total_msats = cost_msats(ctx.spec, n_prompt, 0)
    usage = {
        "prompt_tokens": n_prompt,
        "total_tokens": n_prompt,
        "cost_sats": total_msats / 1000,
        "cost": {"total_msats": total_msats},
    }
    reply = {"object": "list", "data": data, "model": model, "usage": usage}
    return Answer(body=encode(reply), total_msats=total_msats)


def _usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        **plan.cost_fields(),
    }


def _chunk(cmpl_id: str, created: int, model: str, choices: list[Any]) -> dict[str, Any]:
    return {
        "id": cmpl_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def answer_completions(ctx: Ctx, raw: bytes) -> Answer:
    """``POST /v1/completions``: one choice echoing the start of the prompt."""
    body = decode_object(raw)
    model = model_of(body)
    prompts = _inputs(body.get("prompt"), "prompt")
    limit = opt_int(body, "max_tokens")
    opening = ctx.opening(model)
    said = " ".join(p for p in prompts if isinstance(p, str))
    n_prompt = sum(_tokens(p) for p in prompts)
    plan = plan_text(ctx.spec, opening, said, n_prompt, limit)
    finish = "length" if plan.truncated else "stop"
    cmpl_id = ctx.new_id("cmpl-")
    created = ctx.created()
    if body.get("stream") is not True:
        reply = _chunk(cmpl_id, created, model, [_choice(plan.text, finish)])
        reply["usage"] = _usage(plan)
        return Answer(body=encode(reply), total_msats=plan.total_msats)
    paced = [sse(None, _chunk(cmpl_id, created, model, [_choice(t, None)])) for t in plan.tokens]
    paced.append(sse(None, _chunk(cmpl_id, created, model, [_choice("", finish)])))
    rest = [DONE]
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        usage_chunk = _chunk(cmpl_id, created, model, [])
        usage_chunk["usage"] = _usage(plan)
        rest.insert(0, sse(None, usage_chunk))
    frames = StreamFrames(paced[0], paced[1:], rest)
    return Answer(frames=frames, total_msats=plan.total_msats)
