"""For tests that run real ``arbstr serve`` processes (or other servers) on loopback: a free
port, and waiting until a server answers ``/health``."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiohttp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(proc: subprocess.Popen[str], url: str, timeout_s: float = 15.0) -> None:
    """Until ``url``'s ``/health`` answers 200; fails with the process's output if it exits."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("arbstr serve did not come up")
