"""The OpenAI embeddings API (``EMBEDDINGS``): ``POST /v1/embeddings``, JSON answers only;
usage is ``prompt_tokens`` and no output tokens. Pure."""

from __future__ import annotations

import msgspec

from arbstr.apinames import ApiName
from arbstr.apis.base import ApiRequest, Translator
from arbstr.apis.chat import require_model, rewrite_model
from arbstr.apis.openai import OpenAIChunkReader, openai_error, openai_stream_error
from arbstr.apis.prompts import decode_error, read_prompt
from arbstr.errors import InvalidRequest
from arbstr.upstream.usage import ABSENT, Usage, completion_usage


class _View(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET
    input: msgspec.Raw = ABSENT
    stream: msgspec.Raw = ABSENT


_decode_view = msgspec.json.Decoder(_View).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class EmbeddingsApi:
    name: ApiName = "embeddings"
    path = "/v1/embeddings"
    upstream_path = "/embeddings"
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
        if view.stream:
            raise InvalidRequest("embeddings do not stream: remove 'stream'", code="invalid_stream")
        chars, last = read_prompt(view.input, "input")
        return ApiRequest(
            api="embeddings",
            model=model,
            stream=False,
            text_chars=chars,
            last_user_text=last,
            max_tokens=None,
            estimate_output=False,
        )

    def upstream_body(self, body: bytes, req: ApiRequest, model: str) -> bytes:
        return rewrite_model(body, req, model)

    def reply_usage(self, body: bytes, provider: str, request_id: str) -> Usage | None:
        usage = completion_usage(body, provider=provider, request_id=request_id)
        if usage is None or usage.completion_tokens is not None:
            return usage
        return msgspec.structs.replace(usage, completion_tokens=0)

    def stream_reader(self, provider: str, request_id: str) -> OpenAIChunkReader:
        return OpenAIChunkReader(provider, request_id)  # (never used: no streams)

    def error_body(self, status: int, type: str, code: str | None, message: str) -> bytes:
        return openai_error(status, type, code, message)

    def stream_error(self, type: str, code: str, message: str) -> bytes:
        return openai_stream_error(type, code, message)


EMBEDDINGS = EmbeddingsApi()
