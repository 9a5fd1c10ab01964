"""`arbstr serve` loads only what it uses: not the mock providers (aiohttp's server), not Nostr
(coincurve), and not aiohttp at all until price discovery or a balances call needs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from arbstr.mock import MockProvider
from serving import free_port

UNUSED_BY_SERVE = (
    "arbstr.mock",
    "arbstr.routstr.discover",
    "arbstr.routstr.nostr",
    "coincurve",
    "aiohttp.web",
    "aiohttp",
)

# Runs `arbstr serve` (argv after the port) in this interpreter; a thread waits for it, sends
# the requests, prints which modules of UNUSED_BY_SERVE are loaded, then stops the proxy.
PROBE = r"""
import json, os, signal, sys, threading, time, urllib.request

port, paths, names = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
base = f"http://127.0.0.1:{port}"

def get(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()

def probe():
    deadline = time.monotonic() + 30
    while True:
        try:
            get("/health")
            break
        except OSError:
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.05)
    for path in paths:
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        get(path, chat if path.endswith("/completions") else None)
    print(json.dumps([n for n in names if n in sys.modules]), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["arbstr", *sys.argv[4:]]
from arbstr.cli import main
main()
"""


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARBSTR_CONFIG", "ARBSTR_DB", "ARBSTR_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_KEY", "sk-test")


async def loaded_while_serving(tmp_path: Path, paths: list[str], *args: str) -> list[str]:
    """Which of UNUSED_BY_SERVE a real `arbstr serve *args` has loaded after answering
    /health and ``paths``."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        str(port),
        json.dumps(paths),
        json.dumps(UNUSED_BY_SERVE),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        str(tmp_path / "log.db"),
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=45)
    assert proc.returncode == 0, err.decode()
    loaded: list[str] = json.loads(out.decode().strip().splitlines()[-1])
    return loaded


def write_config(tmp_path: Path, mock: MockProvider, *, discover: bool = False) -> str:
    """A provider with a key but no balance polling (which, like discovery, uses aiohttp)."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[[providers]]\nname = "a"\nurl = "{mock.url}"\napi_key = "${{TEST_KEY}}"\n'
        f'models = ["gpt-4o"]\ninput_rate = 1\noutput_rate = 2\n'
        f"discover = {str(discover).lower()}\nbalance_interval_s = 0\n"
    )
    path.chmod(0o600)
    return str(path)


def test_importing_what_serve_imports_loads_none_of_them() -> None:
    code = (
        "import json, sys\n"
        "import arbstr.cli, arbstr.config, arbstr.logs\n"
        "from arbstr.server import runner\n"
        f"print(json.dumps([n for n in {list(UNUSED_BY_SERVE)!r} if n in sys.modules]))\n"
    )
    out = subprocess.run(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert json.loads(out.stdout) == []


async def test_serving_chat_loads_none_of_them(
    tmp_path: Path, mock_providers: list[MockProvider]
) -> None:
    cfg = write_config(tmp_path, mock_providers[0])
    paths = ["/v1/models", "/providers", "/v1/chat/completions"]
    assert await loaded_while_serving(tmp_path, paths, "-c", cfg) == []


async def test_aiohttp_comes_with_discovery_or_balances_and_the_mock_with_mock(
    tmp_path: Path, mock_providers: list[MockProvider]
) -> None:
    """The other side of the tests above: the probe does see modules that are used."""
    cfg = write_config(tmp_path, mock_providers[0])
    assert await loaded_while_serving(tmp_path, ["/v1/balances"], "-c", cfg) == ["aiohttp"]
    cfg = write_config(tmp_path, mock_providers[0], discover=True)
    assert await loaded_while_serving(tmp_path, [], "-c", cfg) == ["aiohttp"]
    loaded = await loaded_while_serving(tmp_path, ["/v1/chat/completions"], "--mock")
    assert loaded == ["arbstr.mock", "aiohttp.web", "aiohttp"]
