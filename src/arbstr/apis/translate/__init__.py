"""Anthropic Messages on chat completions providers: the request, the JSON answer and the
stream translated, so a client of ``/v1/messages`` (Claude Code) can use a provider that
serves only ``/chat/completions``. Pure: bytes in, bytes out."""

from arbstr.apis.translate.request import messages_to_chat
from arbstr.apis.translate.response import chat_to_message
from arbstr.apis.translate.stream import ChatToMessagesStream

__all__ = ["ChatToMessagesStream", "chat_to_message", "messages_to_chat"]
