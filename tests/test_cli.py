"""The real command line, run in a subprocess: check, providers, serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serving import free_port

ALPHA_KEY = "sk-alpha-secret-0123456789"
BETA_KEY = "sk-beta-secret-9876543210"
GAMMA_KEY = "shortkey1"  # literal in the file, too short for a prefix
SECRETS = (ALPHA_KEY, BETA_KEY, GAMMA_KEY)

CONFIG = f"""\
[server]
listen = "127.0.0.1:8080"

[[providers]]
name = "alpha"
url = "https://alpha.example/v1"
api_key = "${{ALPHA_KEY}}"
balance_interval_s = 0
models = ["gpt-4o", "gpt-4o-mini"]
input_rate = 10
output_rate = 30
base_fee = 1

[providers.model_rates."gpt-4o-mini"]
input_rate = 1.5
output_rate = 6
cache_read_rate = 0.15

[[providers]]
name = "beta-2"
url = "https://beta.example/v1"
balance_interval_s = 0
models = ["claude-3.5-sonnet"]
input_rate = 0.0000001
output_rate = 12.345678

[[providers]]
name = "gamma"
url = "http://127.0.0.1:9/v1"
api_key = "{GAMMA_KEY}"

[[providers]]
name = "delta"
url = "http://127.0.0.1:9/v1"
models = ["[bold]odd-model"]

[[policies.rules]]
name = "code_generation"
keywords = ["code"]
"""


# variables that would make Rich treat the pipe as a terminal or resize its output
_RICH_ENV = {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES"}


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_") and k not in _RICH_ENV
    }
    env.update({"ALPHA_KEY": ALPHA_KEY, "ARBSTR_BETA_2_API_KEY": BETA_KEY, "NO_COLOR": "1"})
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def spawn(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "arbstr", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Cli:
    """Every command these tests need, started at once (each is a fresh interpreter that
    mostly spends its time importing) and collected when first asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "arbstr.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.config.chmod(0o600)
        self.bad = root / "bad.toml"
        self.bad.write_text(
            '[[providers]]\nname = "a"\nurl = "http://a"\n'
            '[[providers]]\nname = "b"\nurl = "http://b"\noutput_rate = -1\n',
            encoding="utf-8",
        )
        self.markup = root / "markup.toml"
        self.markup.write_text('[[providers]]\nname = "a"\nurl = "ftp://[/x]"\n', "utf-8")
        self.empty_dir = root / "empty"
        self.empty_dir.mkdir()
        cfg = str(self.config)
        jobs: dict[str, tuple[list[str], dict[str, str]]] = {
            "check": (["check", "-c", cfg], base_env()),
            "check_bad": (["check", "-c", str(self.bad)], base_env()),
            "check_markup": (["check", "-c", str(self.markup)], base_env()),
            "check_no_file": (["check"], base_env()),
            "check_env": (["check"], base_env(ARBSTR_CONFIG=cfg)),
            "providers": (["providers", "-c", cfg, "--wide"], base_env()),
            "providers_80": (["providers", "-c", cfg], base_env(COLUMNS="80")),
            "serve_public": (["serve", "--mock", "--listen", "0.0.0.0:18080"], base_env()),
            "serve_bad_listen": (["serve", "--mock", "--listen", "127.0.0.1:²"], base_env()),
        }
        # the proxy first: it takes longest to come up
        self.port = free_port()
        self.serve_log = (root / "serve.log").open("w+")
        listen = f"127.0.0.1:{self.port}"
        db = str(root / "arbstr.db")
        self.server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, "-m", "arbstr", "serve", "--mock", "--listen", listen, "--db", db],
            cwd=self.empty_dir,
            env=base_env(),
            stdout=self.serve_log,
            stderr=subprocess.STDOUT,
        )
        self._procs = {name: spawn(a, self.empty_dir, e) for name, (a, e) in jobs.items()}
        self._runs: dict[str, Run] = {}

    def __getitem__(self, name: str) -> Run:
        if name not in self._runs:
            proc = self._procs[name]
            out, err = proc.communicate(timeout=30)
            self._runs[name] = Run(proc.returncode, out, err)
        return self._runs[name]

    def close(self) -> None:
        procs: list[subprocess.Popen[Any]] = [*self._procs.values(), self.server]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.serve_log.close()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = Cli(tmp_path_factory.mktemp("cli"))
    try:
        yield c
    finally:
        c.close()


def assert_no_secret(*outputs: str) -> None:
    for out in outputs:
        for secret in SECRETS:
            assert secret not in out


# --- check ---------------------------------------------------------------------------------


def test_check_valid_config(cli: Cli) -> None:
    res = cli["check"]
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"{cli.config} is valid" in out
    assert "listen 127.0.0.1:8080, auth off, 4 provider(s), 1 rule(s)" in out
    assert "provider alpha: key from env ${ALPHA_KEY} (sk-alp…***); gpt-4o, gpt-4o-mini" in out
    assert "provider beta-2: key from env ARBSTR_BETA_2_API_KEY (sk-bet…***)" in out
    assert "provider gamma: key from config file (literal) ([REDACTED]); any model" in out
    assert "provider delta: key from none (set ARBSTR_DELTA_API_KEY); [bold]odd-model" in out
    # the literal key warns on stderr, without the key
    assert "providers[2].api_key is written literally" in res.stderr
    assert_no_secret(res.stdout, res.stderr)


def test_check_invalid_config_names_file_field_and_reason(cli: Cli) -> None:
    res = cli["check_bad"]
    assert res.returncode == 1
    assert res.stdout == ""
    err = " ".join(res.stderr.split())  # the terminal may wrap long lines
    assert f"error: {cli.bad}: providers[1].output_rate: Expected `float` >= 0.0" in err
    assert "Traceback" not in res.stderr


def test_check_error_text_is_not_taken_for_markup(cli: Cli) -> None:
    res = cli["check_markup"]
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "providers[0].url: must be an http:// or https:// URL, got 'ftp://[/x]'" in res.stderr


def test_check_without_a_config_file(cli: Cli) -> None:
    res = cli["check_no_file"]  # no -c, no $ARBSTR_CONFIG, no ./config.toml
    assert res.returncode == 1
    assert "error: config.toml: config file not found" in res.stderr
    assert "Traceback" not in res.stderr


def test_arbstr_config_env_is_honoured(cli: Cli) -> None:
    res = cli["check_env"]
    assert res.returncode == 0, res.stderr
    assert f"{cli.config} is valid" in res.stdout
    # (-c beating $ARBSTR_CONFIG: test_config.test_resolve_config_path)


# --- providers -----------------------------------------------------------------------------


def test_providers_table(cli: Cli) -> None:
    res = cli["providers"]
    assert res.returncode == 0, res.stderr
    rows = {}
    for line in res.stdout.splitlines():
        cells = [c.strip() for c in line[1:-1].split("│")]
        if line.startswith("│") and len(cells) == 11:
            rows[(cells[0], cells[2])] = cells
    # provider, url, model, in/1k, cached/1k, out/1k, base fee, key, key source, prices,
    # funds; nothing cut short
    assert rows[("alpha", "gpt-4o")] == [
        "alpha",
        "https://alpha.example/v1",
        "gpt-4o",
        "10.0",
        "10.0",  # the cache-read rate: the input rate unless given
        "30.0",
        "1.0",
        "sk-alp…***",
        "env ${ALPHA_KEY}",
        "configured",
        "unknown (not polled)",
    ]
    assert rows[("", "gpt-4o-mini")][3:7] == ["1.5", "0.15", "6.0", "1.0"]  # per-model override
    assert rows[("beta-2", "claude-3.5-sonnet")][3:9] == [
        "0.0000001",
        "0.0000001",
        "12.345678",
        "0.0",
        "sk-bet…***",
        "env ARBSTR_BETA_2_API_KEY",
    ]
    assert rows[("gamma", "(any)")][7:9] == ["[REDACTED]", "config file (literal)"]
    assert rows[("gamma", "(any)")][10].startswith("unknown: ")  # nothing listens on port 9
    assert rows[("delta", "[bold]odd-model")][7:9] == ["(none)", "none (set ARBSTR_DELTA_API_KEY)"]
    assert rows[("delta", "[bold]odd-model")][10] == "unknown (no key)"
    assert_no_secret(res.stdout, res.stderr)


def test_providers_table_fits_80_columns(cli: Cli) -> None:
    """Without --wide the least important columns go and long text is cut, never wrapped."""
    res = cli["providers_80"]
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "provider" in line and "┃" in line)
    cells = [c.strip() for c in header.strip("┃").split("┃")]
    assert cells[:4] == ["provider", "model", "in/1k", "out/1k"]
    assert "key source" not in cells and "url" not in cells  # the least important
    assert any(line.startswith("│ alpha") and "10.0" in line for line in lines)
    assert any("hidden" in line and "--wide shows all" in line for line in lines)
    assert_no_secret(res.stdout, res.stderr)


# --- serve ---------------------------------------------------------------------------------


def test_serve_refuses_a_public_listen_without_auth_token(cli: Cli) -> None:
    res = cli["serve_public"]
    assert res.returncode == 1
    err = " ".join(res.stderr.split())
    assert "refusing to listen on 0.0.0.0:18080" in err
    assert "--insecure" in err


def test_serve_rejects_a_bad_listen(cli: Cli) -> None:
    res = cli["serve_bad_listen"]  # "²".isdigit() but int("²") raises: more in test_config
    assert res.returncode == 1
    assert "--listen: expected HOST:PORT" in res.stderr
    assert "Traceback" not in res.stderr


def chat(base: str, messages: list[dict[str, str]]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        f"{base}/v1/chat/completions",
        data=json.dumps({"model": "gpt-4o", "messages": messages}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (http://127.0.0.1)
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def test_serve_mock_starts_serves_and_stops_on_sigterm(cli: Cli) -> None:
    proc = cli.server
    base = f"http://127.0.0.1:{cli.port}"
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, "serve exited early"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "serve did not become healthy"
        time.sleep(0.05)

    status, headers, body = chat(base, [{"role": "user", "content": "hello there"}])
    assert status == 200
    assert headers["x-arbstr-provider"] == "mock-alpha"  # the cheaper mock
    assert headers["x-arbstr-model"] == "gpt-4o"
    cost = headers["x-arbstr-cost-sats"]
    first_id = headers["x-arbstr-request-id"]
    assert len(cost.split(".")[1]) == 3
    assert float(cost) > 0
    reply = json.loads(body)
    assert reply["model"] == "gpt-4o"
    assert reply["choices"][0]["message"]["content"]

    # keywords are looked for in the last user message only
    _, h, _ = chat(
        base,
        [
            {"role": "user", "content": "write some code"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert h["x-arbstr-policy"] == "default"
    _, h, _ = chat(
        base,
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "now write some CODE"},
        ],
    )
    assert h["x-arbstr-policy"] == "code_generation"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=8) == 0  # graceful: not killed by the signal (-15)
    cli.serve_log.seek(0)
    output = cli.serve_log.read()
    assert "Traceback" not in output, output
    assert "Shutting down" in output
    # one summary line per request, written by the log thread before exit
    line = next(x for x in output.splitlines() if f"request_id={first_id}" in x)
    assert " INFO    arbstr.chat " in line
    assert "chat ok model=gpt-4o provider=mock-alpha policy=default stream=False" in line
    assert f"cost_sats={cost} " in line
    assert output.count(" chat ok ") == 3
    assert list(cli.empty_dir.iterdir()) == []  # --db was honoured: no ./arbstr.db
