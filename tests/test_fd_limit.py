"""`arbstr serve` raises its own soft open-file limit: with the usual 1024, a thousand streams
(a client and an upstream socket each) would fail to accept or connect."""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from arbstr.server.runner import FD_LIMIT_TARGET, fd_limit_target
from serving import free_port as _free_port

INF = resource.RLIM_INFINITY
limits = st.integers(min_value=16, max_value=1 << 22)


@given(soft=limits, hard=limits | st.just(INF), want=limits)
def test_target_is_want_capped_by_hard_and_never_lower(soft: int, hard: int, want: int) -> None:
    if hard != INF and soft > hard:
        soft = hard
    got = fd_limit_target(soft, hard, want)
    cap = want if hard == INF else min(want, hard)
    assert got == (cap if cap > soft else None)


def test_target_examples() -> None:
    assert fd_limit_target(1024, 524288) == FD_LIMIT_TARGET
    assert fd_limit_target(1024, 4096) == 4096
    assert fd_limit_target(1024, INF) == FD_LIMIT_TARGET
    assert fd_limit_target(1024, 1024) is None
    assert fd_limit_target(INF, INF) is None
    assert fd_limit_target(100_000, 200_000) is None  # already higher: left alone


# Lowers the soft limit to 1024 (the usual default), runs `arbstr serve`; a thread waits for
# /health, prints the soft limit then in force, and stops the proxy.
PROBE = r"""
import os, resource, signal, sys, threading, time, urllib.request

_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
port = int(sys.argv[1])

def probe():
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.05)
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["arbstr", *sys.argv[2:]]
from arbstr.cli import main
main()
"""


async def test_serve_raises_a_low_soft_limit(tmp_path: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        str(port),
        "serve",
        "--mock",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        str(tmp_path / "log.db"),
        "--log-level",
        "debug",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=45)
    assert proc.returncode == 0, err.decode()
    soft, hard = (int(x) for x in out.decode().split())
    want = FD_LIMIT_TARGET if hard == INF else min(FD_LIMIT_TARGET, hard)
    assert soft == max(want, min(1024, hard))
    if want > 1024:
        assert f"open file limit raised from 1024 to {want}" in err.decode()
