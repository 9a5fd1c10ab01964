"""The mid-stream error events of the Responses and Messages APIs, as the official SDKs see
them: the bytes arbstr would send are served from a loopback server and read with the real
openai and anthropic clients."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import msgspec
import openai
import pytest

from arbstr.apis.messages import MESSAGES
from arbstr.apis.responses import RESPONSES


class _Server:
    """Answers every POST with 200 and ``body`` as an event stream, then closes."""

    def __init__(self) -> None:
        self.body = b""
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    thread.join()


def _types(events: Iterable[Any], into: list[str]) -> None:
    for event in events:
        into.append(event.type)


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


_RESP = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
_RESPONSES_START = _event(
    "response.created", {"type": "response.created", "sequence_number": 0, "response": _RESP}
) + _event(
    "response.output_text.delta",
    {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hel",
    },
)


def test_openai_sdk_raises_on_the_responses_stream_error(server: _Server) -> None:
    server.body = _RESPONSES_START + RESPONSES.stream_error(
        "upstream_error", "upstream_error", "the provider went away"
    )
    seen: list[str] = []
    with openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as client:
        stream = client.responses.create(model="gpt-4o", input="hi", stream=True)
        with pytest.raises(openai.APIError, match="the provider went away") as info:
            _types(stream, seen)
    assert seen == ["response.created", "response.output_text.delta"]  # the text came first
    assert info.value.body == {
        "type": "upstream_error",
        "code": "upstream_error",
        "message": "the provider went away",
        "param": None,
    }
    assert server.paths[-1] == "/v1/responses"


def test_openai_sdk_only_yields_a_bare_response_failed(server: _Server) -> None:
    """Without the error event the SDK does not raise: the iteration yields the failed event
    (status failed, the error in it) and ends. Hence stream_error sends the error event first."""
    failed = {
        "type": "response.failed",
        "sequence_number": 2,
        "response": {**_RESP, "status": "failed", "error": {"code": "x", "message": "it broke"}},
    }
    server.body = _RESPONSES_START + _event("response.failed", failed)
    with openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as client:
        events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed"
    assert last.response.error is not None and last.response.error.message == "it broke"


def test_responses_stream_error_events_read_back_as_an_error() -> None:
    reader = RESPONSES.stream_reader("p", "r")
    blob = RESPONSES.stream_error("upstream_error", "upstream_timeout", "too slow")
    for raw in blob.split(b"\n\n")[:-1]:
        name, data = raw.split(b"\n")
        reader.read(name.removeprefix(b"event: "), data.removeprefix(b"data: "))
    assert reader.upstream_error == "too slow"
    assert not reader.done


def _messages_start() -> bytes:
    message: dict[str, object] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    return (
        _event("message_start", {"type": "message_start", "message": message})
        + _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        )
    )


def test_anthropic_sdk_raises_on_the_messages_stream_error(server: _Server) -> None:
    server.body = _messages_start() + MESSAGES.stream_error(
        "upstream_error", "upstream_error", "the provider went away"
    )
    seen: list[str] = []
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0) as client:
        stream = client.messages.create(
            model="claude-x",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        with pytest.raises(anthropic.APIStatusError, match="the provider went away") as info:
            _types(stream, seen)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert info.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "the provider went away"},
    }
    assert server.paths[-1] == "/v1/messages"


def test_anthropic_sdk_stream_helper_raises_too(server: _Server) -> None:
    server.body = _messages_start() + MESSAGES.stream_error(
        "overloaded_error", "x", "busy, try later"
    )
    with (
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.APIError, match="busy, try later"),
        client.messages.stream(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
