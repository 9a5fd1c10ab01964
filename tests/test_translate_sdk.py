"""The official anthropic SDK reads the translated answers: a loopback server plays a Messages
endpoint backed by scripted chat completions (request translated and checked, answer and
stream translated), the SDK client points at it with base_url."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings

from arbstr.apis.translate import ChatToMessagesStream, chat_to_message, messages_to_chat
from test_translate_stream import USAGE, Script, split_scripts


class MessagesServer(ThreadingHTTPServer):
    """Answers each ``POST /v1/messages`` with the next script, translated from chat."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scripts: deque[Script] = deque()
        self.chat_bodies: list[dict[str, Any]] = []  # the translated requests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: MessagesServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        chat = json.loads(messages_to_chat(body, "routed/model"))
        self.server.chat_bodies.append(chat)
        script = self.server.scripts.popleft()
        model = json.loads(body)["model"]
        self.send_response(200)
        if not chat.get("stream"):
            reply = chat_to_message(script.completion(), model)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        stream = ChatToMessagesStream(model)
        for data in script.chunks():
            self.wfile.write(stream.feed(data))
            self.wfile.flush()
        self.wfile.write(stream.finish())


@pytest.fixture(scope="module")
def server() -> Iterator[MessagesServer]:
    srv = MessagesServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def client(server: MessagesServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as c:
        yield c


MODEL = "claude-sonnet-4-5"
TOOLS: list[anthropic.types.ToolParam] = [
    {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object"}}
]


def streamed(client: anthropic.Anthropic) -> tuple[anthropic.types.Message, list[str]]:
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}], tools=TOOLS
    ) as stream:
        kinds: list[str] = [event.type for event in stream]
        return stream.get_final_message(), kinds


def created(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}], tools=TOOLS
    )


def test_text_stream_through_the_sdk(server: MessagesServer, client: anthropic.Anthropic) -> None:
    server.scripts.append(Script(text=["Hello", ", ", "world"], usage=USAGE))
    with client.messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Hello", ", ", "world"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello, world"
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert message.usage.input_tokens == 30
    assert message.usage.cache_read_input_tokens == 20
    assert message.usage.output_tokens == 9
    sent = server.chat_bodies[-1]
    assert sent["model"] == "routed/model"
    assert sent["stream_options"] == {"include_usage": True}


def test_tool_use_stream_through_the_sdk(
    server: MessagesServer, client: anthropic.Anthropic
) -> None:
    server.scripts.append(
        Script(
            text=["Reading."],
            tools=[("call_1", "read_file", ['{"pa', 'th": "a.py"}']), ("call_2", "ls", [])],
            finish="tool_calls",
            usage=USAGE,
        )
    )
    message, kinds = streamed(client)
    assert kinds.count("input_json") == 2  # the SDK saw each argument fragment
    blocks = [b.to_dict() for b in message.content]
    assert blocks == [
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a.py"}},
        {"type": "tool_use", "id": "call_2", "name": "ls", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert server.chat_bodies[-1]["tools"][0]["function"]["name"] == "read_file"


def test_non_streaming_through_the_sdk(server: MessagesServer, client: anthropic.Anthropic) -> None:
    server.scripts.append(Script(text=["ok"], finish="length", usage=USAGE))
    message = created(client)
    assert message.content[0].type == "text"
    assert message.content[0].text == "ok"
    assert message.stop_reason == "max_tokens"
    assert message.id == "msg_chatcmpl-1"


def test_upstream_error_mid_stream_raises_in_the_sdk(
    server: MessagesServer, client: anthropic.Anthropic
) -> None:
    class Failing(Script):
        def chunks(self) -> list[bytes]:
            return [super().chunks()[1], b'{"error":{"message":"upstream fell over"}}']

    server.scripts.append(Failing(text=["partial"]))
    with pytest.raises(anthropic.APIStatusError, match="upstream fell over"):
        streamed(client)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scripts=split_scripts())
def test_sdk_stream_equals_the_non_streaming_message(
    server: MessagesServer, client: anthropic.Anthropic, scripts: tuple[Script, Script]
) -> None:
    """The SDK's accumulation of the translated stream (content cut anywhere) is the
    translated JSON answer for the same content: blocks, ids, inputs, stop reason, usage."""
    whole, cut = scripts
    server.scripts.append(cut)
    from_stream, _ = streamed(client)
    server.scripts.append(whole)
    # None fields dropped: the stream's ParsedMessage has a few more, all None here
    expected = created(client).model_dump(exclude_none=True)
    assert from_stream.model_dump(exclude_none=True) == expected
