"""Chat completions stream -> Anthropic Messages stream (arbstr.apis.translate.stream)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from arbstr.apis.translate import ChatToMessagesStream

Event = tuple[str, dict[str, Any]]


@dataclass
class Script:
    """What a chat answer says, to build its stream (and, in the SDK tests, its JSON)."""

    text: list[str] = field(default_factory=list)  # text fragments, one chunk each
    tools: list[tuple[str, str, list[str]]] = field(default_factory=list)  # id, name, fragments
    finish: str = "stop"
    usage: dict[str, Any] | None = None
    chunk_id: str = "chatcmpl-1"

    def chunks(self) -> list[bytes]:
        """The stream's data payloads: role chunk, text, tool calls, finish, usage, [DONE]."""
        out = [self._chunk({"role": "assistant", "content": ""})]
        out += [self._chunk({"content": t}) for t in self.text]
        for index, (call_id, name, fragments) in enumerate(self.tools):
            first = {"index": index, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            out.append(self._chunk({"tool_calls": [first]}))
            for fragment in fragments:
                call = {"index": index, "function": {"arguments": fragment}}
                out.append(self._chunk({"tool_calls": [call]}))
        out.append(self._chunk({}, finish=self.finish))
        if self.usage is not None:
            usage = {"id": self.chunk_id, "object": "chat.completion.chunk", "choices": []}
            out.append(json.dumps({**usage, "usage": self.usage}).encode())
        return [*out, b"[DONE]"]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": self.chunk_id, "object": "chat.completion.chunk", "choices": [choice]}
        return json.dumps(body).encode()

    def completion(self) -> bytes:
        """The same answer as one chat completion JSON."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.tools:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": "".join(f)}}
                for i, n, f in self.tools
            ]
        choice = {"index": 0, "message": message, "finish_reason": self.finish}
        body: dict[str, Any] = {"id": self.chunk_id, "choices": [choice]}
        if self.usage is not None:
            body["usage"] = self.usage
        return json.dumps(body).encode()


def translate(chunks: list[bytes], model: str = "claude-x") -> bytes:
    stream = ChatToMessagesStream(model)
    out = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    assert stream.done
    return out


def events(raw: bytes) -> list[Event]:
    """Parse Anthropic SSE bytes, checking each event's name matches its data's type."""
    out: list[Event] = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        out.append((name, data))
    return out


def coalesced(evs: list[Event]) -> list[Event]:
    """Consecutive deltas of one block merged: what any split of the same content shares."""
    out: list[Event] = []
    for name, data in evs:
        if name == "content_block_delta" and out and out[-1][0] == name:
            prev = out[-1][1]
            if prev["index"] == data["index"] and prev["delta"]["type"] == data["delta"]["type"]:
                key = "text" if data["delta"]["type"] == "text_delta" else "partial_json"
                merged = {**prev["delta"], key: prev["delta"][key] + data["delta"][key]}
                out[-1] = (name, {**prev, "delta": merged})
                continue
        out.append((name, data))
    return out


USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 20},
}


def test_text_stream_events() -> None:
    evs = events(translate(Script(text=["Hel", "lo"], usage=USAGE).chunks()))
    assert [n for n, _ in evs] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = evs[0][1]["message"]
    assert start["id"] == "msg_chatcmpl-1"
    assert start["model"] == "claude-x"
    assert start["content"] == []
    assert evs[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert evs[2][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert evs[5][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "output_tokens": 9,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 0,
        },
    }


def test_message_start_at_the_first_chunk_and_each_content_chunk_at_once() -> None:
    stream = ChatToMessagesStream("m")
    chunks = Script(text=["a", "b"], tools=[("c1", "f", ['{"x"', ":1}"])]).chunks()
    first = events(stream.feed(chunks[0]))
    assert [n for n, _ in first] == ["message_start"]
    assert events(stream.feed(chunks[1]))[-1][1]["delta"] == {"type": "text_delta", "text": "a"}
    assert events(stream.feed(chunks[2]))[-1][1]["delta"] == {"type": "text_delta", "text": "b"}
    opened = events(stream.feed(chunks[3]))  # the tool call's first chunk closes the text
    assert [n for n, _ in opened] == ["content_block_stop", "content_block_start"]
    assert opened[1][1]["content_block"] == {
        "type": "tool_use",
        "id": "c1",
        "name": "f",
        "input": {},
    }
    delta = events(stream.feed(chunks[4]))
    assert delta == [
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"x"'},
            },
        )
    ]


def test_message_delta_waits_for_the_usage_chunk() -> None:
    stream = ChatToMessagesStream("m")
    chunks = Script(text=["hi"], usage=USAGE).chunks()
    for c in chunks[:-3]:
        stream.feed(c)
    at_finish = events(stream.feed(chunks[-3]))
    assert [n for n, _ in at_finish] == ["content_block_stop"]
    assert not stream.done
    at_usage = events(stream.feed(chunks[-2]))
    assert [n for n, _ in at_usage] == ["message_delta", "message_stop"]
    assert at_usage[0][1]["usage"]["input_tokens"] == 30
    assert stream.done
    assert stream.feed(b"[DONE]") == b""


def test_usage_before_the_finish_is_not_taken_as_final() -> None:
    """A provider that reports usage on every chunk still sends the final counts later."""
    stream = ChatToMessagesStream("m")
    early = {"prompt_tokens": 50, "completion_tokens": 1}
    first = {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": early}
    stream.feed(json.dumps(first).encode())
    stream.feed(b'{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    assert not stream.done
    out = events(stream.feed(json.dumps({"id": "x", "choices": [], "usage": USAGE}).encode()))
    assert out[0][1]["usage"]["output_tokens"] == 9
    assert stream.done


def test_usage_in_the_finish_chunk_ends_at_once() -> None:
    stream = ChatToMessagesStream("m")
    stream.feed(b'{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}')
    last = {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    out = events(stream.feed(json.dumps({**last, "usage": USAGE}).encode()))
    assert [n for n, _ in out] == ["content_block_stop", "message_delta", "message_stop"]
    assert out[1][1]["delta"]["stop_reason"] == "max_tokens"
    assert stream.done


def test_done_without_usage_or_finish() -> None:
    evs = events(
        translate([b'{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}', b"[DONE]"])
    )
    assert evs[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 0},
    }


def test_done_alone_is_a_whole_empty_message() -> None:
    assert [n for n, _ in events(translate([b"[DONE]"]))] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]


def test_finish_completes_only_after_a_finish_reason() -> None:
    cut = ChatToMessagesStream("m")
    cut.feed(b'{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}')
    assert cut.finish() == b""
    assert not cut.done
    ended = ChatToMessagesStream("m")
    for c in Script(text=["a"]).chunks()[:-1]:  # no [DONE]
        ended.feed(c)
    assert [n for n, _ in events(ended.finish())] == ["message_delta", "message_stop"]
    assert ended.done


def test_upstream_error_chunk() -> None:
    stream = ChatToMessagesStream("m")
    stream.feed(b'{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}')
    out = stream.feed(b'{"error":{"message":"overloaded","type":"server_error"}}')
    assert out == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"overloaded"}}'
        b"\n\n"
    )
    assert stream.error == "overloaded"
    assert not stream.done
    assert stream.feed(b"[DONE]") == b""
    assert stream.finish() == b""


def test_error_before_anything_has_no_message_start() -> None:
    stream = ChatToMessagesStream("m")
    assert [n for n, _ in events(stream.feed(b'{"error":"boom"}'))] == ["error"]


def test_junk_and_other_choices_are_ignored() -> None:
    stream = ChatToMessagesStream("m")
    assert stream.feed(b": keep-alive") == b""
    assert stream.feed(b"[1,2]") == b""
    stream.feed(b'{"id":"x","choices":[{"index":1,"delta":{"content":"other"}}]}')
    evs = events(stream.feed(b"[DONE]"))
    assert all(n != "content_block_start" for n, _ in evs)


def test_interleaved_parallel_tool_calls_keep_their_inputs() -> None:
    def frag(index: int, **fields: Any) -> bytes:
        return json.dumps(
            {
                "id": "x",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}],
            }
        ).encode()

    chunks = [
        frag(0, id="a", function={"name": "f", "arguments": '{"n":'}),
        frag(1, id="b", function={"name": "g", "arguments": '{"m":'}),
        frag(0, function={"arguments": "1}"}),
        frag(1, function={"arguments": "2}"}),
        b'{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        b"[DONE]",
    ]
    evs = events(translate(chunks))
    json_by_block: dict[int, str] = {}
    for name, data in evs:
        if name == "content_block_delta":
            json_by_block[data["index"]] = (
                json_by_block.get(data["index"], "") + data["delta"]["partial_json"]
            )
    assert {i: json.loads(j) for i, j in json_by_block.items()} == {0: {"n": 1}, 1: {"m": 2}}
    stops = [d["index"] for n, d in evs if n == "content_block_stop"]
    assert stops == [0, 1]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_arguments_before_the_name_wait_for_it_and_calls_without_index() -> None:
    chunks = [
        b'{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"arguments":"{\\"k\\""}}]}}]}',
        b'{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"name":"f","arguments":":1}"}}]}}]}',
        b'{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":{"z":2}}}]}}]}',
        b'{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        b"[DONE]",
    ]
    evs = coalesced(events(translate(chunks)))
    starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
    assert starts == [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "b", "name": "g", "input": {}},
    ]
    deltas = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"]
    assert deltas == ['{"k":1}', '{"z":2}']
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stop_sequence_named_by_the_provider() -> None:
    finish = {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}
    chunks = [b'{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}']
    evs = events(
        translate([*chunks, json.dumps({"id": "x", "choices": [finish]}).encode(), b"[DONE]"])
    )
    assert evs[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def splits(text: str) -> st.SearchStrategy[list[str]]:
    """``text`` cut into fragments at any points (empty fragments included)."""
    cuts = st.lists(st.integers(0, len(text)), max_size=6).map(sorted)
    return cuts.map(lambda c: [text[a:b] for a, b in zip([0, *c], [*c, len(text)], strict=True)])


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
inputs = st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=8) | st.booleans(), max_size=3
)


@st.composite
def split_scripts(draw: st.DrawFn) -> tuple[Script, Script]:
    """One tool-calling answer, streamed whole and streamed in arbitrary fragments."""
    text = draw(st.text(max_size=30))
    calls = draw(st.lists(st.tuples(names, inputs), max_size=3))
    usage = draw(st.none() | st.just(USAGE))
    whole = Script(
        text=[text] if text else [],
        tools=[(f"call_{i}", n, [json.dumps(a)]) for i, (n, a) in enumerate(calls)],
        finish="tool_calls" if calls else "stop",
        usage=usage,
    )
    cut = Script(
        text=draw(splits(text)),
        tools=[(i, n, draw(splits(f[0]))) for i, n, f in whole.tools],
        finish=whole.finish,
        usage=usage,
    )
    return whole, cut


@given(split_scripts())
def test_any_split_gives_the_same_events(scripts: tuple[Script, Script]) -> None:
    whole, cut = scripts
    assert coalesced(events(translate(cut.chunks()))) == coalesced(
        events(translate(whole.chunks()))
    )
