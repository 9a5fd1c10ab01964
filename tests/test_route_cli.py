"""``arbstr route FILE|-``: the dry run offline, as a table within 80 columns or the
endpoint's JSON; errors exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIG = """
[[providers]]
name = "alpha"
url = "http://127.0.0.1:9"
api_key = "${ALPHA_KEY}"
models = ["tiny", "small-but-with-a-rather-long-model-name-indeed"]
input_rate = 1
output_rate = 2
[providers.model_info."tiny"]
context_length = 8192

[[tiers]]
name = "economy"
models = ["tiny", "small-but-with-a-rather-long-model-name-indeed"]
"""


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    cfg.chmod(0o600)
    return subprocess.run(  # noqa: S603 (our own command line)
        [sys.executable, "-m", "arbstr", "route", *args, "-c", str(cfg)],
        input=stdin,
        capture_output=True,
        text=True,
        env={"ALPHA_KEY": "sk-alpha-0123456789", "COLUMNS": "80", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def body(text: str, model: str = "arbstr/economy") -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


def test_a_file_as_a_table_within_80_columns(tmp_path: Path) -> None:
    f = tmp_path / "req.json"
    f.write_text(body("word " * 80_000))
    done = run(tmp_path, str(f))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "api chat, policy default, tier economy"
    assert all(len(line) <= 80 for line in lines), lines
    assert any("tiny" in line and "context_length" in line for line in lines)
    assert any(line.startswith(" 1  alpha") and "small-but" in line for line in lines)


def test_stdin_as_json_like_the_endpoint(tmp_path: Path) -> None:
    done = run(tmp_path, "-", "--json", "--tier", "economy", stdin=body("hi", "auto"))
    assert done.returncode == 0, done.stderr
    a = json.loads(done.stdout)
    assert a["api"] == "chat" and a["tier"] == "economy" and a["complexity"] is not None
    assert {c["model"] for c in a["candidates"]} == {
        "tiny",
        "small-but-with-a-rather-long-model-name-indeed",
    }


def test_errors_exit_1(tmp_path: Path) -> None:
    done = run(tmp_path, "-", "--json", stdin=body("hi", "gpt-x"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "no_provider"
    done = run(tmp_path, "-", "--policy", "nope", stdin=body("hi"))
    assert done.returncode == 1 and "unknown_policy" in done.stderr
    done = run(tmp_path, str(tmp_path / "missing.json"))
    assert done.returncode == 1 and "cannot read" in done.stderr
