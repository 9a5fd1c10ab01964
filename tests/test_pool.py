"""The transport's connection pool against a loopback server that counts connections: the
per-origin limit, waiting for a free connection, keep-alive expiry, connections the server
closed or spoke on while idle."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientSession

from arbstr.config import config_from_data
from arbstr.errors import ConfigError
from arbstr.upstream.connection import SERVER_KEEPALIVE_MARGIN_S, server_keepalive_s
from arbstr.upstream.protocol import ConnectFailed, Target
from arbstr.upstream.transport import Transport
from fake_upstream import Completion, FakeUpstream
from harness import ProxyThread, make_config, provider

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Counting:
    """What the server saw: connections opened, open at once (at most), closed by the peer."""

    port: int = 0
    delay_s: float = 0.0  # before each answer
    answer: bytes = OK
    after_answer: bytes = b""  # written this long after each answer, unasked
    after_answer_s: float = 0.05
    close_after_answer: bool = False  # close the connection after_answer_s after answering
    hang: bool = False  # read requests but never answer
    opened: int = 0
    open_now: int = 0
    max_open: int = 0
    closed_by_peer: int = 0
    requests: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.hang:
                    continue
                await asyncio.sleep(self.delay_s)
                writer.write(self.answer)
                if self.after_answer or self.close_after_answer:
                    await asyncio.sleep(self.after_answer_s)
                    if self.close_after_answer:
                        break
                    writer.write(self.after_answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer += 1
        finally:
            self.open_now -= 1
            writer.close()

    def target(self) -> Target:
        return Target.for_url(f"http://127.0.0.1:{self.port}/v1/chat/completions", {})


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    c = Counting()
    srv = await asyncio.start_server(c.handle, "127.0.0.1", 0)
    c.port = srv.sockets[0].getsockname()[1]
    yield c
    for w in c.writers:
        w.close()
    srv.close()


async def fetch(t: Transport, c: Counting, connect_timeout_s: float = 5.0) -> bytes:
    r = await t.post(c.target(), b"{}", b"", connect_timeout_s, 5.0)
    return await r.read()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


# --- the per-origin limit ------------------------------------------------------------------


async def test_fifty_concurrent_requests_share_four_connections(counting: Counting) -> None:
    counting.delay_s = 0.02
    t = Transport(max_connections_per_origin=4)
    answers = await asyncio.gather(*(fetch(t, counting) for _ in range(50)))
    assert answers == [b"ok"] * 50
    assert counting.max_open <= 4
    assert counting.opened <= 4
    assert counting.requests == 50
    pool = t.pool(counting.target())
    assert pool.open_connections == pool.idle_connections <= 4
    t.close()


async def test_a_request_waits_for_a_free_connection_up_to_the_connect_timeout(
    counting: Counting,
) -> None:
    counting.hang = True
    t = Transport(max_connections_per_origin=1)
    busy = asyncio.create_task(fetch(t, counting))
    await wait_for(lambda: counting.requests == 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectFailed, match=r"no free connection .* within 0\.2 s \(1 in use\)"):
        await fetch(t, counting, connect_timeout_s=0.2)
    assert 0.15 <= loop.time() - t0 < 1.5
    assert counting.opened == 1  # the waiting request never opened a connection of its own
    busy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await busy
    assert t.pool(counting.target()).open_connections == 0
    t.close()


async def test_a_freed_connection_goes_to_the_waiter(counting: Counting) -> None:
    counting.delay_s = 0.1
    t = Transport(max_connections_per_origin=1)
    first = asyncio.create_task(fetch(t, counting))
    await wait_for(lambda: counting.requests == 1)
    assert await fetch(t, counting, connect_timeout_s=2.0) == b"ok"  # waited ~0.1 s
    assert await first == b"ok"
    assert counting.opened == 1
    t.close()


async def test_a_closed_busy_connection_passes_its_slot_to_a_waiter(counting: Counting) -> None:
    counting.hang = True
    t = Transport(max_connections_per_origin=1)
    busy = asyncio.create_task(fetch(t, counting))
    await wait_for(lambda: counting.requests == 1)
    waiting = asyncio.create_task(fetch(t, counting, connect_timeout_s=3.0))
    await asyncio.sleep(0.05)
    counting.hang = False
    busy.cancel()  # its connection is dropped: the waiter opens a new one in its slot
    assert await waiting == b"ok"
    assert counting.opened == 2
    assert t.pool(counting.target()).open_connections == 1
    t.close()


async def test_cancelled_waiters_leak_no_slot(counting: Counting) -> None:
    counting.delay_s = 0.1
    t = Transport(max_connections_per_origin=1)
    pool = t.pool(counting.target())
    first = await t.post(counting.target(), b"{}", b"", 5, 5)
    # a waiter cancelled while waiting
    gone = asyncio.create_task(fetch(t, counting))
    await asyncio.sleep(0.02)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    # a waiter cancelled right after being handed the connection, before it ran
    handed = asyncio.create_task(fetch(t, counting))
    await asyncio.sleep(0.02)
    assert await first.read() == b"ok"  # hands the connection to `handed`
    handed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handed
    assert (pool.open_connections, pool.idle_connections) == (1, 1)
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 1
    t.close()


async def test_a_failed_connect_frees_its_slot() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    t = Transport(max_connections_per_origin=1)
    tgt = Target.for_url(f"http://127.0.0.1:{port}/", {})
    for _ in range(2):  # the second is refused too, not left waiting for a slot
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await t.post(tgt, b"{}", b"", 2, 2)
    assert t.pool(tgt).open_connections == 0
    t.close()


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Transport(max_connections_per_origin=0)


# --- keep-alive expiry ---------------------------------------------------------------------


async def test_idle_connections_are_reused_until_they_expire_then_closed(
    counting: Counting,
) -> None:
    t = Transport(keepalive_expiry_s=0.3)
    assert await fetch(t, counting) == b"ok"
    await asyncio.sleep(0.05)
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 1  # reused within the expiry
    # the idle connection is closed by the pool soon after it expires, with no request
    await wait_for(lambda: counting.closed_by_peer == 1, timeout_s=2.0)
    assert t.pool(counting.target()).open_connections == 0
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 2  # a new connection
    t.close()


async def test_an_expired_connection_is_not_reused_even_before_the_sweep(
    counting: Counting,
) -> None:
    t = Transport(keepalive_expiry_s=0.15)
    assert await fetch(t, counting) == b"ok"
    time_passes = asyncio.get_running_loop().time() + 0.3
    while asyncio.get_running_loop().time() < time_passes:
        pass  # block the loop: the sweep timer cannot run
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 2
    t.close()


async def test_zero_expiry_never_keeps_idle_connections(counting: Counting) -> None:
    t = Transport(keepalive_expiry_s=0)
    assert await fetch(t, counting) == b"ok"
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 2
    assert t.pool(counting.target()).open_connections == 0
    t.close()


async def test_a_shorter_server_keep_alive_timeout_is_honoured(counting: Counting) -> None:
    counting.answer = (
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=100\r\nContent-Length: 2\r\n\r\nok"
    )
    t = Transport(keepalive_expiry_s=30)
    assert await fetch(t, counting) == b"ok"
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 1
    await asyncio.sleep(1 - SERVER_KEEPALIVE_MARGIN_S + 0.2)
    assert await fetch(t, counting) == b"ok"
    assert counting.opened == 2
    t.close()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("timeout=5, max=100", 5 - SERVER_KEEPALIVE_MARGIN_S),
        ("max=100, Timeout = 2", 2 - SERVER_KEEPALIVE_MARGIN_S),
        ("timeout=0", 0.0),
        ("max=3", math.inf),
        ("timeout=soon", math.inf),
        ("", math.inf),
    ],
)
def test_keep_alive_header(value: str, seconds: float) -> None:
    assert server_keepalive_s(value) == seconds


# --- connections the server closed or spoke on while idle ----------------------------------


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    counting: Counting,
) -> None:
    counting.close_after_answer = True
    t = Transport()
    assert await fetch(t, counting) == b"ok"
    await wait_for(lambda: counting.open_now == 0)
    await asyncio.sleep(0.05)
    assert await fetch(t, counting) == b"ok"  # not a "closed before any response"
    assert counting.opened == 2
    t.close()


async def test_a_connection_the_server_spoke_on_while_idle_is_not_reused(
    counting: Counting,
) -> None:
    counting.after_answer = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    t = Transport()
    assert await fetch(t, counting) == b"ok"
    await asyncio.sleep(0.15)  # the stray 408 has arrived; the server keeps the socket open
    r = await t.post(counting.target(), b"{}", b"", 5, 5)
    assert (r.status, await r.read()) == (200, b"ok")
    assert counting.opened == 2
    t.close()


# --- the settings --------------------------------------------------------------------------


def test_server_settings_defaults_and_bounds() -> None:
    s = config_from_data({}, source="<t>", env={}).server
    assert (s.max_connections_per_provider, s.keepalive_expiry_s) == (1024, 5.0)
    with pytest.raises(ConfigError, match="max_connections_per_provider"):
        config_from_data({"server": {"max_connections_per_provider": 0}}, source="<t>", env={})
    with pytest.raises(ConfigError, match="keepalive_expiry_s"):
        config_from_data({"server": {"keepalive_expiry_s": -1}}, source="<t>", env={})


async def test_the_proxy_keeps_to_max_connections_per_provider() -> None:
    async with FakeUpstream(default=Completion(delay_s=0.05)) as up:
        data = {
            "server": {"max_connections_per_provider": 2},
            "providers": [provider("alpha", up.url)],
        }
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        with ProxyThread(make_config(data)) as proxy:
            async with ClientSession() as s:

                async def one() -> int:
                    async with s.post(f"{proxy.url}/v1/chat/completions", json=body) as r:
                        await r.read()
                        return r.status

                statuses = await asyncio.gather(*(one() for _ in range(12)))
        assert statuses == [200] * 12
        assert len(up.chat_requests) == 12
        assert up.connection_count <= 2
