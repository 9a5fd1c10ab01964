"""The real Claude Code and Codex CLI (installed by `make` into .clients/, see package.json)
talking to `arbstr serve --mock`, configured only by what `arbstr connect` prints or writes.
Each must finish its one-turn task, and arbstr's request log must show the API it used."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".clients" / "node_modules" / ".bin"
CLIENT_TIMEOUT_S = 90

pytestmark = pytest.mark.timeout(240)


def client(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} missing: run `make clients` (make test does)"
    return str(path)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: no keys or settings of the person running the tests leak in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.update(extra)
    return env


def arbstr(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "arbstr", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def exports(text: str) -> dict[str, str]:
    """The variables of `export K=V` lines (V shell-quoted, as `arbstr connect` prints)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            (out[key],) = shlex.split(value)
    return out


class Arbstr:
    def __init__(self, root: Path, config: Path | None = None) -> None:
        """``arbstr serve --mock`` in ``root``, or ``serve -c config`` when one is given."""
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (root / "serve.log").open("w+", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_")}
        self.config = config
        source = ["--mock"] if config is None else ["-c", str(config)]
        args = ["serve", *source, "--listen", f"127.0.0.1:{self.port}", "--db", "arbstr.db"]
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, "-m", "arbstr", *args],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "arbstr did not become healthy"
            time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def rows(self, api: str, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """The request-log rows of one API (the log is written in the background: waited for)."""
        deadline = time.monotonic() + wait_s
        while True:
            url = f"{self.base}/v1/requests?per_page=100"
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310
                data = json.loads(r.read())["data"]
            rows = [row for row in data if row.get("api") == api]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Arbstr]:
    srv = Arbstr(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def chat_only_server(tmp_path: Path) -> Iterator[Arbstr]:
    """An arbstr whose providers serve chat completions only (``apis = ["chat"]``): the mock
    providers of a ``serve --mock`` started beside it, so Messages must be translated."""
    mocks_dir = tmp_path / "mocks"
    mocks_dir.mkdir()
    mocks = Arbstr(mocks_dir)
    try:
        urls = dict(re.findall(r"(mock-\w+)=(http://\S+?)[,\s]", mocks.output() + " "))
        assert urls, mocks.output()
        blocks = [
            f'[[providers]]\nname = "{name}"\nurl = "{url}"\napi_key = "sk-mock-{name}"\n'
            f'models = ["claude-3.5-sonnet", "gpt-4o"]\ninput_rate = 5\noutput_rate = 15\n'
            f'apis = ["chat"]\nbalance_interval_s = 0\n'
            for name, url in sorted(urls.items())
        ]
        config = tmp_path / "chat-only.toml"
        config.write_text("\n".join(blocks), encoding="utf-8")
        config.chmod(0o600)
        srv = Arbstr(tmp_path, config)
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        mocks.stop()


def run_client(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the pinned client binaries)
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


def run_claude(server: Arbstr, tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    # connect reads the config the server runs (serve --mock: none), as a user would
    config = [] if server.config is None else ["-c", str(server.config)]
    connect = arbstr(
        "connect", "claude-code", "--listen", f"127.0.0.1:{server.port}", *config,
        cwd=work, env=clean_env(home),
    )  # fmt: skip
    settings = exports(connect)
    assert settings["ANTHROPIC_BASE_URL"] == server.base
    env = clean_env(
        home,
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_MAX_RETRIES="0",
        **settings,
    )
    done = run_client(
        [client("claude"), "-p", "say hi", "--output-format", "json"],
        cwd=work,
        env=env,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.output()}"
    result = json.loads(done.stdout)
    assert result["is_error"] is False, result
    assert result["result"], result

    rows = server.rows("messages")
    assert rows, server.output()
    assert all(row["success"] for row in rows), rows
    assert {row["provider"] for row in rows} <= {"mock-alpha", "mock-beta"}


def test_claude_code_print_mode(server: Arbstr, tmp_path: Path) -> None:
    run_claude(server, tmp_path)


def test_claude_code_on_chat_completions_only_providers(
    chat_only_server: Arbstr, tmp_path: Path
) -> None:
    """Claude Code on providers that speak only OpenAI chat completions: arbstr translates."""
    run_claude(chat_only_server, tmp_path)
    rows = chat_only_server.rows("messages")
    assert all(row["cost"]["sats"] for row in rows), rows  # the chat usage, priced


def test_codex_exec(server: Arbstr, tmp_path: Path) -> None:
    home = tmp_path / "home"
    codex_home = tmp_path / "codex"
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(home, CODEX_HOME=str(codex_home))
    written = arbstr(
        "connect", "codex", "--write", "--listen", f"127.0.0.1:{server.port}",
        cwd=work, env=env,
    )  # fmt: skip
    assert f"{codex_home / 'config.toml'}: written" in written
    done = run_client(
        [
            client("codex"), "exec", "--skip-git-repo-check", "--sandbox", "read-only",
            "--ephemeral", "--color", "never",
            "-c", "analytics.enabled=false",
            "-c", "model_providers.arbstr.request_max_retries=0",
            "-c", "model_providers.arbstr.stream_max_retries=0",
            "say hi",
        ],
        cwd=work,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.output()}"
    assert done.stdout.strip(), done.stderr

    rows = server.rows("responses")
    assert rows, server.output()
    assert all(row["success"] for row in rows), rows
    assert all(row["streaming"] for row in rows), rows
