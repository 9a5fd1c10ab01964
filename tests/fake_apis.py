"""What tests/fake_upstream.py answers a ``Completion`` action with on the other API paths
(``/embeddings``, ``/completions``): realistic OpenAI bodies and streams."""

from __future__ import annotations

from typing import Any

API_SUFFIXES = (
    "/chat/completions",
    "/messages/count_tokens",
    "/embeddings",
    "/completions",
    "/responses",
    "/messages",
)


def api_of(path: str) -> str | None:
    """The API suffix a request path ends with (chat before legacy completions)."""
    return next((s for s in API_SUFFIXES if path.endswith(s)), None)


def _usage(prompt: int, completion: int | None, cost_msats: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt}
    if completion is not None:
        usage["completion_tokens"] = completion
    usage["total_tokens"] = prompt + (completion or 0)
    if cost_msats is not None:
        usage["cost_sats"] = cost_msats / 1000
        usage["cost"] = {"total_msats": cost_msats}
    return usage


def embeddings_json(
    model: str, n_inputs: int, prompt_tokens: int, cost_msats: int | None
) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), -0.2, 0.3]}
        for i in range(n_inputs)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": _usage(prompt_tokens, None, cost_msats),
    }


def text_completion_json(
    content: str, model: str, prompt: int, completion: int, cost_msats: int | None
) -> dict[str, Any]:
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"text": content, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(prompt, completion, cost_msats),
    }


def text_chunk(
    text: str | None, model: str, *, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    """A legacy ``text_completion`` stream chunk (with ``usage``: the usage-only one)."""
    base: dict[str, Any] = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": 1700000000,
        "model": model,
    }
    if usage is not None:
        base["choices"] = []
        base["usage"] = usage
    else:
        base["choices"] = [
            {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
        ]
    return base


def text_completion_chunks(
    content: str,
    model: str,
    prompt: int,
    completion: int,
    cost_msats: int | None,
    include_usage: bool,
) -> list[dict[str, Any]]:
    words = content.split(" ")
    parts = [w + " " for w in words[:-1]] + [words[-1]]
    chunks = [text_chunk(p, model) for p in parts]
    chunks.append(text_chunk("", model, finish="stop"))
    if include_usage:
        chunks.append(text_chunk(None, model, usage=_usage(prompt, completion, cost_msats)))
    return chunks
