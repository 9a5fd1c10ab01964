"""What the stack itself costs: the floor under arbstr's numbers (``python -m bench.floor``).

Two do-nothing forwarders, each a plain ASGI app on uvicorn (httptools, uvloop) configured as
``arbstr serve`` configures it, that read the body, POST it upstream and return the answer:

* ``aiohttp`` — the upstream call made the way ``arbstr.upstream.client`` makes it (one
  ``ClientSession``, keep-alive pool, per-request timeout);
* ``protocol`` — the upstream call made on a bare ``asyncio.Protocol`` keep-alive pool with
  pre-encoded request heads and httptools' response parser.

They are measured like arbstr in ``make bench`` (proxy alone on one core, wrk -c64 and the
alternating c=1 client on the other). The gap between the two is what replacing aiohttp on the
hot path could win; the gap between ``aiohttp`` and arbstr is what arbstr's own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import uvicorn

from bench import aio
from bench.clients import latency_pairs
from bench.run import (
    CHAT_PATH,
    HOST,
    choose_pinning,
    ensure_wrk,
    free_port,
    pct,
    request_body,
    run_wrk,
    upstream_argv,
    wait_http,
)

Scope = dict[str, Any]


class _Conn(asyncio.Protocol):
    """One keep-alive upstream connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, body))


class _ProtocolClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: collections.deque[_Conn] = collections.deque()
        self.head = (
            f"POST /alpha{CHAT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Content-Type: application/json\r\nAuthorization: Bearer sk-floor\r\n"
            "Content-Length: "
        ).encode()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        conn: _Conn | None = None
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                break
            conn = None
        if conn is None:
            _, conn = await loop.create_connection(_Conn, HOST, self.port)
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        conn.transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        result = await conn.waiter
        self.idle.append(conn)
        return result


def make_app(client: str, upstream_port: int) -> Any:
    url = f"http://{HOST}:{upstream_port}/alpha{CHAT_PATH}"
    state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    if client == "aiohttp":
                        state["session"] = aiohttp.ClientSession(
                            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256),
                            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                            auto_decompress=False,
                            skip_auto_headers=("User-Agent",),
                        )
                    else:
                        state["pool"] = _ProtocolClient(upstream_port)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if "session" in state:
                        await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = (await receive())["body"]
        if client == "aiohttp":
            headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}
            timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
            async with state["session"].post(
                url, data=body, headers=headers, timeout=timeout
            ) as resp:
                status, data = resp.status, await resp.read()
        else:
            status, data = await state["pool"].post(body)
        headers_out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers_out})
        await send({"type": "http.response.body", "body": data})

    return app


def serve(client: str, port: int, upstream_port: int) -> None:
    config = uvicorn.Config(
        make_app(client, upstream_port),
        host=HOST,
        port=port,
        http="httptools",
        loop="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_config=None,
    )
    aio.run(uvicorn.Server(config).serve())


def measure() -> None:
    wrk = ensure_wrk()
    pin = choose_pinning()
    pin.pin_this_process()
    tmp = Path(tempfile.mkdtemp(prefix="arbstr-floor-"))
    body_file = tmp / "body.json"
    body_file.write_bytes(request_body(False))
    up_port = free_port()
    up = subprocess.Popen(
        pin.wrap(pin.load, upstream_argv(up_port)),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(up_port, 10, up)
        print(f"pinning: {pin.describe()}")
        print("| forwarder | c=64 req/s | added p50, c=1 | added p99, c=1 |")
        print("|---|---:|---:|---:|")
        for client in ("aiohttp", "protocol"):
            port = free_port()
            argv = [sys.executable, "-m", "bench.floor", "serve", client, str(port), str(up_port)]
            px = subprocess.Popen(pin.wrap(pin.proxy, argv))
            try:
                wait_http(port, 20, px)
                url = f"http://{HOST}:{port}{CHAT_PATH}"
                run_wrk(wrk, pin, url, body_file, 64, 2)
                w = run_wrk(wrk, pin, url, body_file, 64, 8)
                lat = latency_pairs(
                    (HOST, up_port),
                    f"/alpha{CHAT_PATH}",
                    (HOST, port),
                    request_body(False),
                    pairs=5000,
                    warmup=200,
                )
                added = [(pct(lat.proxy_us, q) - pct(lat.direct_us, q)) / 1000.0 for q in (50, 99)]
                print(
                    f"| uvicorn + {client} | {w.rps:,.0f} ({w.errors} errors)"
                    f" | {added[0]:.3f} ms | {added[1]:.3f} ms |",
                    flush=True,
                )
            finally:
                px.send_signal(signal.SIGTERM)
                px.wait(timeout=20)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=20)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="run one forwarder (used by the measurement)")
    s.add_argument("client", choices=("aiohttp", "protocol"))
    s.add_argument("port", type=int)
    s.add_argument("upstream_port", type=int)
    a = p.parse_args(argv)
    if a.cmd == "serve":
        serve(a.client, a.port, a.upstream_port)
    else:
        measure()


if __name__ == "__main__":
    main()
