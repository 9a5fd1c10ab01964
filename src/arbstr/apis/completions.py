"""The legacy OpenAI completions API (``COMPLETIONS``): ``POST /v1/completions``. Streams
are ``text_completion`` chunks ending ``data: [DONE]``, relayed like chat's (usage asked for
on the client's behalf and hidden unless it asked too) but without arbstr's trailer. Pure."""

from __future__ import annotations

import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import ApiRequest, Translator
from arbstr.apis.chat import StreamOptions, require_model, upstream_body
from arbstr.apis.openai import OpenAIChunkReader, openai_error, openai_stream_error
from arbstr.apis.prompts import decode_error, read_prompt
from arbstr.upstream.usage import ABSENT, Usage, completion_usage


class _View(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    prompt: msgspec.Raw = ABSENT
    stream: bool | None = None
    max_tokens: int | None = None
    stream_options: StreamOptions | msgspec.UnsetType | None = msgspec.UNSET


_decode_view = msgspec.json.Decoder(_View).decode


class CompletionsApi:
    name: ApiName = "completions"
    path = "/v1/completions"
    upstream_path = "/completions"
    accepts_x_api_key = False
    forward_headers: tuple[str, ...] = ()
    translated_via: ApiName | None = None
    translator: Translator | None = None

    def parse(self, body: bytes) -> ApiRequest:
        try:
            view = _decode_view(body)
        except msgspec.DecodeError as exc:
            raise decode_error(exc) from None
        model = require_model(view.model)
        chars, last = read_prompt(view.prompt, "prompt")
        so = view.stream_options
        return ApiRequest(
            api="completions",
            model=model,
            stream=bool(view.stream),
            text_chars=chars,
            last_user_text=last,
            max_tokens=view.max_tokens,
            client_wants_usage=isinstance(so, StreamOptions) and so.include_usage is True,
            stream_options_given=so is not msgspec.UNSET,
        )

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return upstream_body(body, req, model)

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        return completion_usage(body, provider=provider, request_id=request_id)

    def stream_reader(self, provider: str, request_id: str) -> OpenAIChunkReader:
        return OpenAIChunkReader(provider, request_id)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return openai_error(status, type, code, message)

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        return openai_stream_error(type, code, message)


COMPLETIONS = CompletionsApi()
