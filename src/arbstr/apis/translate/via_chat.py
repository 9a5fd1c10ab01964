"""Anthropic Messages served through chat completions: the :class:`~arbstr.apis.base.Translator`
the pipeline uses for providers whose ``apis`` lack ``messages``."""

from __future__ import annotations

from arbstr.apis.base import ApiRequest
from arbstr.apis.translate.request import messages_to_chat
from arbstr.apis.translate.response import chat_to_message
from arbstr.apis.translate.stream import ChatToMessagesStream


class _Stream:
    """One chat stream turned into Anthropic events (the ``event:`` name of a chat event is
    not used: chat streams carry only ``data``)."""

    __slots__ = ("_out",)

    def __init__(self, model: str) -> None:
        self._out = ChatToMessagesStream(model)

    def feed(self, event: bytes | None, data: bytes) -> bytes:
        return self._out.feed(data)

    def finish(self) -> bytes:
        return self._out.finish()


class MessagesViaChat:
    def translate_request(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return messages_to_chat(body, model)

    def translate_reply(self, body: bytes, model: str) -> bytes:
        return chat_to_message(body, model)

    def stream_translator(self, model: str) -> _Stream:
        return _Stream(model)


MESSAGES_VIA_CHAT = MessagesViaChat()
