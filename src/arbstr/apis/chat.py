"""The parts of an OpenAI chat request that arbstr reads (msgspec Structs ignore the rest).
Shared by the proxy's chat path and the built-in mock provider."""

from __future__ import annotations

import msgspec


class ContentPart(msgspec.Struct):
    text: str | None = None  # text parts; image and audio parts have none


class Message(msgspec.Struct):
    role: str = ""
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


def text_of(content: str | list[ContentPart] | None) -> str:
    """A message's text: the string, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if p.text)
