"""An in-memory :class:`~arbstr.upstream.protocol.HttpTransport` for driving
``UpstreamClient`` without sockets: each ``post`` takes the next scripted step.

    t = MemoryTransport(Fail(ConnectFailed("refused")), Answer(503), Answer(body=[b"{...}"]))
    client = UpstreamClient(connect_timeout_s=1, stream_idle_timeout_s=1, transport=t)

Steps:
- ``Fail(error)``: ``post`` raises ``error`` (``ConnectFailed``: never sent;
  ``ResponseBroken`` / ``TimeoutError``: sent, no answer).
- ``Answer(status, headers, body)``: ``post`` returns a response whose body is ``body``, one
  chunk per ``next_chunk``; an exception in ``body`` is raised when reading reaches it.

Every ``post`` is recorded in ``sent``, every response in ``responses``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec

from arbstr.upstream.protocol import Target, pump_by_reading

__all__ = ["Answer", "Fail", "MemoryResponse", "MemoryTransport", "Sent", "json_answer"]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-case
    body: Sequence[bytes | BaseException] = ()


@dataclass(frozen=True)
class Fail:
    error: BaseException


Step: TypeAlias = Answer | Fail


def json_answer(data: Any, status: int = 200, **headers: str) -> Answer:
    """An answer with a JSON body in one chunk."""
    hdrs = {
        "content-type": "application/json",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return Answer(status, hdrs, [msgspec.json.encode(data)])


@dataclass
class Sent:
    target: Target
    body: bytes
    extra_head: bytes
    connect_timeout_s: float
    timeout_s: float


class MemoryResponse:
    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers: dict[str, str] = dict(answer.headers)
        self._body: deque[bytes | BaseException] = deque(answer.body)
        self.idle_timeout_s: float | None = None  # set by stream_timeouts
        self.closed = False
        self.read_to_end = False

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        self.close()
        return b"".join(parts)

    async def next_chunk(self) -> bytes | None:
        await asyncio.sleep(0)  # a real read yields to the loop
        if not self._body:
            self.read_to_end = True
            return None
        item = self._body.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    def pump(self, sink: Callable[[bytes], bool]) -> Awaitable[bool]:
        return pump_by_reading(self.next_chunk, sink)

    def stream_timeouts(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s

    def close(self) -> None:
        self.closed = True


class MemoryTransport:
    def __init__(self, *steps: Step) -> None:
        self.script: deque[Step] = deque(steps)
        self.sent: list[Sent] = []
        self.responses: list[MemoryResponse] = []
        self.closed = False

    def push(self, *steps: Step) -> None:
        self.script.extend(steps)

    async def post(
        self,
        target: Target,
        body: bytes,
        extra_head: bytes,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> MemoryResponse:
        self.sent.append(Sent(target, body, extra_head, connect_timeout_s, timeout_s))
        if not self.script:
            raise AssertionError(f"no scripted answer left for request {len(self.sent)}")
        step = self.script.popleft()
        await asyncio.sleep(0)
        if isinstance(step, Fail):
            raise step.error
        response = MemoryResponse(step)
        self.responses.append(response)
        return response

    def close(self) -> None:
        self.closed = True
