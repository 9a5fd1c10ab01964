"""`arbstr requests` and `arbstr stats` as a terminal shows them: snapshots at 80 and 120
columns, --wide, --id by a prefix or a suffix, and --follow against a running proxy.

Snapshots live in tests/snapshots/; ARBSTR_UPDATE_SNAPSHOTS=1 rewrites them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbstr import storage
from arbstr.cli import app
from arbstr.cli.follow import Tail, follow
from arbstr.records import RequestRecord
from arbstr.storage import Store
from harness import ProxyThread, make_config
from logdata import record

SNAPSHOTS = Path(__file__).parent / "snapshots"
DAY = ("--since", "2024-05-01T00:00:00Z", "--until", "2024-05-01T23:59:59Z")
LONG_ERROR = "upstream answered 502 Bad Gateway: " + "the node could not reach its backend " * 3


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for var in ("ARBSTR_DB", "ARBSTR_CONFIG", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def fixed_records() -> list[RequestRecord]:
    """Deterministic rows of one day; ids of one minute share their start, as UUIDv7s do."""
    rows = [
        ("gpt-4o", "alpha", "default", 1250, 1300, None, 100, False),
        ("gpt-4o", "beta-provider-with-a-long-name", "default", 2001, 2001, None, 300, True),
        ("claude-3.5-sonnet", "alpha", "code_generation", 333, 300, None, 200, False),
        ("gpt-4o-mini", None, None, None, None, LONG_ERROR, 5, False),
        ("gpt-4o-mini", "beta-provider-with-a-long-name", "cheap", 12, None, None, 80, True),
    ]
    out = []
    for n, (model, provider, policy, computed, charged, error, ms, stream) in enumerate(rows):
        out.append(
            record(
                request_id=f"018f3a7c-{n:04x}-7000-8000-00000{n}a1b2c{n}",
                timestamp=f"2024-05-01T12:0{n}:00.000Z",
                model=model,
                provider=provider,
                policy=policy,
                cost_msats=charged if charged is not None else computed,
                computed_cost_msats=computed,
                provider_cost_msats=charged,
                possibly_billed_msats=40 if error else None,
                latency_ms=ms,
                streaming=stream,
                success=error is None,
                error_status=502 if error else None,
                error_message=error,
                input_tokens=None if error else 1000 + n,
                output_tokens=None if error else 20 * n,
            )
        )
    return out


def fill(path: Path, recs: list[RequestRecord]) -> None:
    s = Store.open(str(path))
    for r in recs:
        s.submit(r)
    s.close()


def show(runner: CliRunner, columns: int, *args: str) -> str:
    result = runner.invoke(app, [*args, "--db", "log.db"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("ARBSTR_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed"


@pytest.mark.parametrize("columns", [80, 120])
def test_snapshots(runner: CliRunner, tmp_path: Path, columns: int) -> None:
    fill(tmp_path / "log.db", fixed_records())
    for name, args in (
        ("requests", ("requests", *DAY)),
        ("stats", ("stats", *DAY, "-g", "provider")),
        ("stats_model", ("stats", *DAY, "-g", "model")),
    ):
        text = show(runner, columns, *args)
        assert max(len(line) for line in text.splitlines()) <= columns
        check_snapshot(f"{name}_{columns}.txt", text)


def test_narrow_tables_drop_the_least_important_columns(runner: CliRunner, tmp_path: Path) -> None:
    fill(tmp_path / "log.db", fixed_records())
    text = show(runner, 80, "requests", *DAY)
    header = next(line for line in text.splitlines() if "request" in line and "sats" in line)
    assert header.split()[:3] == ["time", "(UTC)", "request"]
    for kept in ("model", "sats", "result"):
        assert kept in header
    assert "stream" not in header and "policy" not in header
    assert "columns hidden (" in text and "--wide shows all" in text
    assert "a1b2c3" in text  # ids by their distinguishing end
    assert "…" in text and LONG_ERROR not in text  # the message is cut, not wrapped
    wide = show(runner, 80, "requests", *DAY, "--wide")
    lines = wide.splitlines()
    header = next(line for line in lines if "request" in line and "sats" in line)
    for col in ("policy", "stream", "tokens", "ms", "provider", "result"):
        assert col in header
    assert "hidden" not in wide
    assert LONG_ERROR.strip() in wide  # whole, on one line
    assert "018f3a7c-0003-7000-8000-000003a1b2c3" in wide  # whole ids
    assert max(len(line) for line in lines) > 120
    stats = show(runner, 80, "stats", *DAY, "-g", "model", "--wide")
    assert "stream" in stats and "avg" in stats and "hidden" not in stats


def _id_result(runner: CliRunner, given: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["requests", "--db", "log.db", "--id", given], env={"COLUMNS": "80"}
    )
    return result.exit_code, " ".join(result.output.split())


def test_id_by_prefix_or_suffix(runner: CliRunner, tmp_path: Path) -> None:
    fill(tmp_path / "log.db", fixed_records())
    full = "018f3a7c-0003-7000-8000-000003a1b2c3"
    for given in ("018f3a7c-0003", "3a1b2c3", "018f3a7c-0003-7000-8000-000003a1b2c3"):
        code, out = _id_result(runner, given)
        assert code == 0, out
        assert f"request {full}" in out and "model gpt-4o-mini" in out
        assert LONG_ERROR.strip() in out  # the detail shows the whole message
    code, out = _id_result(runner, "018f3a7c")  # every id of that minute
    assert code == 1
    assert "5 request ids start or end with '018f3a7c'" in out
    for n in range(5):
        assert f"0{n}a1b2c{n}" in out  # each by its distinguishing end
    assert "give more characters" in out
    code, out = _id_result(runner, "ffffffff")
    assert code == 1 and "no request id starts or ends with 'ffffffff'" in out
    code, out = _id_result(runner, "0a1")
    assert code == 1 and "--id: expected 4 to 200 characters" in out
    result = runner.invoke(app, ["requests", "--db", "log.db", "--id", "c3", "--follow"])
    assert result.exit_code == 1 and "--follow: not with --id" in result.output
    page = json.loads(show(runner, 80, "requests", "--id", "a1b2c4", "--json"))
    assert [d["request_id"] for d in page["data"]] == ["018f3a7c-0004-7000-8000-000004a1b2c4"]


def test_after_id_neither_repeats_nor_skips_rows_of_one_millisecond(tmp_path: Path) -> None:
    same_ms = "2024-05-01T12:00:00.000Z"
    recs = [record(timestamp=same_ms, cost_msats=n) for n in range(7)]
    fill(tmp_path / "log.db", recs)
    seen: list[str] = []
    cursor = 0
    while True:
        q = storage.parse_requests_params(
            {"after_id": str(cursor), "sort": "id", "order": "asc", "per_page": "3"}
        )
        page = storage.read_requests(str(tmp_path / "log.db"), q)
        if not page.data:
            break
        seen += [r.request_id for r in page.data]
        cursor = page.data[-1].id
    assert seen == [r.request_id for r in recs]


def _chat(url: str, model: str) -> None:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(  # noqa: S310 - a loopback proxy of this test
        url + "/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        assert r.status == 200


def tail_ids(lines: list[str]) -> list[str]:
    return [line.split()[2] for line in lines[1:]]


def test_follow_shows_new_requests_and_their_running_total(tmp_path: Path) -> None:
    db = str(tmp_path / "log.db")
    fill(tmp_path / "log.db", [record(model="gpt-4o-mini", cost_msats=5000)])  # an older row
    store = Store.open(db)
    lines: list[str] = []
    stop = threading.Event()

    def read(params: object) -> storage.RequestsPage:
        assert isinstance(params, dict)
        return storage.read_requests(db, storage.parse_requests_params(params))

    tail = Tail(120)
    with ProxyThread(make_config({}), sink=store, with_mocks=True) as proxy:
        follower = threading.Thread(
            target=follow,
            args=(read, {"model": "gpt-4o-mini"}, lines.append, tail),
            kwargs={"latest": 5, "interval_s": 0.05, "stop": stop, "max_polls": 200},
        )
        follower.start()
        for _ in range(3):
            _chat(proxy.url, "gpt-4o-mini")
        _chat(proxy.url, "gpt-4o")  # another model: not followed
        store.flush()
        for _ in range(100):
            if tail.shown >= 3:
                break
            stop.wait(0.05)
        stop.set()
        follower.join(5)
        last = tail_ids(lines)[-1]
        with urllib.request.urlopen(  # noqa: S310 - the same filters over HTTP
            f"{proxy.url}/v1/requests?request_id={last}&after_id=1&sort=id", timeout=10
        ) as r:
            served = json.loads(r.read())
    store.close()
    assert [d["request_id"][-12:] for d in served["data"]] == [last]
    assert not follower.is_alive()
    rows = sqlite3.connect(db).execute(
        "SELECT request_id, ROUND(cost_sats * 1000) FROM requests"
        " WHERE model = 'gpt-4o-mini' ORDER BY id"
    )
    logged = [(rid, int(msats)) for rid, msats in rows]
    new = logged[1:]
    assert len(new) == 3 and tail.shown == 3
    assert lines[0].split()[:3] == ["time", "(UTC)", "request"]
    assert logged[0][0][-12:] in lines[1]  # the latest row before the follow, no total
    body = lines[2:]
    assert [rid[-12:] for rid, _ in new] == [line.split()[2] for line in body]
    running = 0
    for line, (_, msats) in zip(body, new, strict=True):
        running += msats
        assert f"{running // 1000}.{running % 1000:03d}" in line.split()
    assert tail.total_msats == running
    assert tail.summary() == (
        f"3 request(s) since the follow began, {running // 1000}.{running % 1000:03d} sats"
    )


def test_ctrl_c_ends_a_follow_cleanly(tmp_path: Path) -> None:
    fill(tmp_path / "log.db", fixed_records())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_")}
    env.update(COLUMNS="100", NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arbstr", "requests", "--db", "log.db", "-f", "--per-page", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(3)]  # the header and the latest 2 rows
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""  # no traceback
    assert "03a1b2c3" in first[1] and "04a1b2c4" in first[2]  # oldest first, as a tail reads
    assert out.strip() == "0 request(s) since the follow began, 0.000 sats"
