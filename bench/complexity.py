"""Microseconds per complexity score (``python -m bench.complexity``): chat and Messages
bodies of about 1k, 8k and 32k prompt tokens (code, file paths, a question), parsed once and
scored many times. Prints the best of several rounds."""

from __future__ import annotations

import sys
import timeit

import msgspec

from arbstr.apis.base import ApiRequest
from arbstr.apis.chat import parse_chat
from arbstr.apis.messages import parse_messages
from arbstr.config.complexity import ComplexitySettings
from arbstr.routing.complexity import score

SIZES = (1_000, 8_000, 32_000)  # prompt tokens (≈ 4 characters each)
_CHUNK = (
    "The handler in src/arbstr/server/pipeline.py calls `route()` for each attempt;\n"
    "```python\ndef attempt(req, provider):\n    return provider.send(req)\n```\n"
    "Some prose about what the code does, why it retries, and what it logs.\n"
)
_TOOLS = [{"name": f"tool_{i}", "description": "a tool", "input_schema": {}} for i in range(8)]


def prompt(tokens: int) -> str:
    chars = tokens * 4
    text = _CHUNK * (chars // len(_CHUNK) + 1)
    return text[:chars] + "\nWhy does this fail? Analyze it step by step."


def chat_request(text: str) -> ApiRequest:
    tools = [{"type": "function", "function": t} for t in _TOOLS]
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "tools": tools}
    return parse_chat(msgspec.json.encode(body))


def messages_request(text: str) -> ApiRequest:
    body = {
        "model": "m",
        "max_tokens": 1024,
        "system": "You are a careful reviewer.",
        "tools": _TOOLS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    return parse_messages(msgspec.json.encode(body))


def micros(req: ApiRequest, settings: ComplexitySettings, number: int = 2000) -> float:
    best = min(timeit.repeat(lambda: score(req, settings), number=number, repeat=7))
    return best / number * 1e6


def main() -> int:
    settings = ComplexitySettings()
    for tokens in SIZES:
        text = prompt(tokens)
        for shape, build in (("chat", chat_request), ("messages", messages_request)):
            req = build(text)
            result = score(req, settings)
            print(
                f"{shape:9} {tokens // 1000:>3}k tokens: {micros(req, settings):7.1f} µs/score"
                f"  ({result.tier}, {result.score:.2f}: {', '.join(result.reasons)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
