"""The client APIs arbstr serves, each an :class:`~arbstr.apis.base.Api` read into what
routing needs and rewritten only where arbstr must; :mod:`arbstr.apis.registry` lists them."""

from arbstr.apis.base import ApiRequest
from arbstr.apis.chat import CHAT, ChatRequest, parse_chat, upstream_body

__all__ = ["CHAT", "ApiRequest", "ChatRequest", "parse_chat", "upstream_body"]
