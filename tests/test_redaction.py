"""Provider keys never leave arbstr: not in answers, log lines or the request log, even when an
upstream echoes them (whole or masked)."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.logs import setup_logging
from arbstr.redact import REDACTED, Redactor
from arbstr.storage import Store
from fake_upstream import FakeUpstream, Reply, Stream, chunk, sse
from harness import ProxyThread, make_config, provider

KEY = "sk-live-3f9a7c21d4e8b6059a1c2d3e4f5a6b7c"
TOKEN = "arbstr-client-token-0123456789"
CHAT = "/v1/chat/completions"
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


# --- the redactor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "echo",
    [
        KEY,
        "sk-liv************************************6b7c",  # OpenAI's masked form
        "sk-live-3f…6b7c",
        "sk-live-3f9a***",
        "sk-live\\u2026b7c",  # JSON-escaped ellipsis
        "sk-live-3f9a7c21\u2022\u2022\u2022\u2022\u2022",
    ],
)
def test_whole_and_masked_forms_are_redacted(echo: str) -> None:
    r = Redactor([KEY])
    text = f"Incorrect API key provided: {echo}. See https://x"
    assert r.text(text) == f"Incorrect API key provided: {REDACTED}. See https://x"
    assert (
        r.bytes(text.encode()) == f"Incorrect API key provided: {REDACTED}. See https://x".encode()
    )


@pytest.mark.parametrize(
    "text",
    [
        "ask-me anything",
        "sk-other***abcd",  # a masked form of another key
        "sk-live-zzzz***",  # visible start that is not this key's
        "sk-liv****zzzz",  # visible end that is not this key's
        "no secrets here",
    ],
)
def test_other_text_is_left_alone(text: str) -> None:
    r = Redactor([KEY])
    assert r.text(text) == text
    assert r.bytes(text.encode()) == text.encode()


def test_short_or_missing_secrets_are_not_patterns() -> None:
    r = Redactor([None, "", "abc"])
    assert not r.active
    assert r.text("abc abc") == "abc abc"


@given(before=st.text(), after=st.text())
def test_a_key_anywhere_in_any_text_is_gone(before: str, after: str) -> None:
    r = Redactor([KEY, TOKEN])
    assert KEY not in r.text(before + KEY + after)
    assert TOKEN.encode() not in r.bytes((before + TOKEN + after).encode("utf-8", "replace"))


# --- end to end ----------------------------------------------------------------------------


def files_containing(folder: Path, needle: bytes) -> list[str]:
    return [f.name for f in folder.iterdir() if needle in f.read_bytes()]


@pytest.fixture
def log_stream(restore_logging: None) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    writer = setup_logging("debug", stream)
    yield stream
    writer.stop()


async def test_an_echoed_key_reaches_no_answer_log_line_or_row(
    fake_upstream: FakeUpstream, tmp_path: Path, log_stream: io.StringIO
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_key"}}
    masked = {"error": {"message": "Incorrect API key: sk-liv********6b7c", "type": "x"}}
    fake_upstream.push(
        Reply(status=401, json=echo),  # passed through
        Reply(status=500, json=echo),  # retried, then 502 naming the last error
        Reply(status=500, json=masked),
        Reply(status=500, json=echo),
        Stream(events=[sse(chunk("hi")), sse(echo)], then_reset=True),  # mid-stream error
    )
    db = str(tmp_path / "log.db")
    store = Store.open(db)
    data = {
        "server": {"auth_token": TOKEN},
        "retry": {"backoff_base_ms": 1, "backoff_max_ms": 2, "breaker_failures": 10},
        "providers": [provider("alpha", fake_upstream.url, api_key=KEY)],
    }
    answers: list[bytes] = []
    with ProxyThread(make_config(data), sink=store) as proxy:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as s:
            for payload in (HI, HI, {**HI, "stream": True}):
                async with s.post(proxy.url + CHAT, json=payload, headers=auth) as r:
                    answers.append(json.dumps(dict(r.headers)).encode() + await r.read())
    assert fake_upstream.last_request.headers["authorization"] == f"Bearer {KEY}"
    store.close()
    for answer in answers:
        assert KEY.encode() not in answer and b"sk-liv****" not in answer
    assert REDACTED.encode() in answers[0] and REDACTED.encode() in answers[1]
    assert REDACTED.encode() in answers[2]  # the forwarded error event
    logged = log_stream.getvalue()
    assert "request_id=" in logged
    assert KEY not in logged and TOKEN not in logged and "sk-liv****" not in logged
    assert not files_containing(tmp_path, KEY.encode())  # the database and any WAL left
    rows = sqlite3.connect(db).execute("SELECT error_message FROM requests").fetchall()
    assert len(rows) == 3
    assert [REDACTED in m for (m,) in rows] == [True, True, True]  # the last: the error event
    assert not any(KEY in m for (m,) in rows)


async def test_a_key_stored_by_an_older_arbstr_is_not_served_by_v1_requests(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = str(tmp_path / "old.db")
    store = Store.open(db)
    store.close()
    with sqlite3.connect(db) as conn:  # a row as an arbstr before redaction wrote it
        conn.execute(
            "INSERT INTO requests (request_id, timestamp, model, streaming, latency_ms, success,"
            " error_status, error_message) VALUES ('r', '2026-01-01T00:00:00.000Z', 'm', 0, 1,"
            " 0, 401, ?)",
            (f"alpha answered HTTP 401: Incorrect API key provided: {KEY}",),
        )
    store = Store.open(db)
    data = {"providers": [provider("alpha", fake_upstream.url, api_key=KEY)]}
    with ProxyThread(make_config(data), sink=store) as proxy:
        async with aiohttp.ClientSession() as s, s.get(proxy.url + "/v1/requests") as r:
            body = await r.read()
    store.close()
    assert r.status == 200
    assert KEY.encode() not in body and REDACTED.encode() in body
