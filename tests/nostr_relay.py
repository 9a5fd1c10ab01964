"""A real Nostr relay on loopback for tests: the ``nostr-relay`` package from PyPI (a dev extra).

:class:`NostrRelay` writes a config (SQLite database in a temp dir, a free 127.0.0.1 port),
starts ``nostr-relay serve --use-uvicorn`` as a subprocess with this interpreter, waits until
the port completes a websocket handshake, and stops the process (SIGTERM, then SIGKILL).

``verify_signatures=False`` drops the relay's own ``is_signed`` validator so that it stores
events with bad signatures or ids: a lax relay, to check that clients verify for themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import aiohttp

from arbstr.routstr.nostr import Event
from serving import free_port

_RUN_RELAY = "import sys; from nostr_relay.cli import main; sys.exit(main())"


def websocket_handshake_ok(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Does ``ws://host:port/`` complete an RFC 6455 opening handshake (HTTP 101)?"""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(request.encode())
            head = sock.recv(1024)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 101")


class NostrRelay:
    """One relay process. ``start()`` = ``launch()`` + ``wait_ready()``; launch several first and
    wait for them together to start them in parallel."""

    def __init__(self, workdir: Path, *, verify_signatures: bool = True) -> None:
        self.workdir = workdir
        self.verify_signatures = verify_signatures
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "relay.log"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _write_config(self) -> Path:
        validators = ["nostr_relay.validators.is_not_too_large", "nostr_relay.validators.is_recent"]
        if self.verify_signatures:
            validators.append("nostr_relay.validators.is_signed")
        lines = [
            "DEBUG: false",
            "relay_name: arbstr test relay",
            "storage:",
            f"  sqlalchemy.url: sqlite+aiosqlite:///{self.workdir / 'relay.sqlite3'}",
            "  validators:",
            *(f"    - {v}" for v in validators),
            "gunicorn:",
            f"  bind: {self.host}:{self.port}",
            "  workers: 1",
            "  loglevel: warning",
            "verification:",
            "  nip05_verification: disabled",
            "authentication:",
            "  enabled: false",
            "logging:",
            "  version: 1",
            "  disable_existing_loggers: false",
            "  root: {level: WARNING}",
        ]
        path = self.workdir / "relay.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self._write_config()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                [sys.executable, "-c", _RUN_RELAY, "-c", str(config), "serve", "--use-uvicorn"],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nostr-relay exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if websocket_handshake_ok(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nostr-relay not ready within {timeout_s} s:\n{self.log_tail()}")

    def start(self, timeout_s: float = 30.0) -> NostrRelay:
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> NostrRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def publish(url: str, events: Sequence[Event], timeout_s: float = 10.0) -> dict[str, bool]:
    """Send each event to the relay and wait for its ``OK``: event id -> accepted."""
    results: dict[str, bool] = {}
    async with (
        asyncio.timeout(timeout_s),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        for ev in events:
            await ws.send_str(json.dumps(["EVENT", ev.to_json()]))
            while ev.id not in results:
                frame = json.loads(await ws.receive_str())
                # nostr-relay answers a rejected event with an empty id (and throttles the
                # connection for 2 s): one event is in flight at a time, so any OK is its answer
                if frame[0] == "OK" and frame[1] in (ev.id, ""):
                    results[ev.id] = bool(frame[2])
    return results
