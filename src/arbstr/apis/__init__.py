"""The client APIs arbstr serves, each read into what routing needs and rewritten only where
arbstr must (today: OpenAI chat completions, ``chat``)."""

from arbstr.apis.chat import ChatRequest, parse_chat, upstream_body

__all__ = ["ChatRequest", "parse_chat", "upstream_body"]
