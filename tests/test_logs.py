"""The log writer thread (arbstr.logs): line format, batching, flushing at stop."""

from __future__ import annotations

import io
import logging
import re
import threading
import time

import pytest

from arbstr import logs
from arbstr.batching import Pacer
from arbstr.records import RequestRecord

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) +(\S+)(?: request_id=(\S+))? (.*)$"
)


def record(**kw: object) -> RequestRecord:
    base: dict[str, object] = {
        "request_id": "rid-1",
        "timestamp": "2025-01-02T03:04:05.678Z",
        "model": "gpt-4o",
        "provider": "alpha",
        "policy": "default",
        "streaming": False,
        "input_tokens": 12,
        "output_tokens": 34,
        "cost_msats": 425,
        "provider_cost_msats": None,
        "latency_ms": 7,
        "ttft_ms": None,
        "stream_duration_ms": None,
        "success": True,
        "error_status": None,
        "error_message": None,
        "attempts": 2,
    }
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            self.writes += 1
            return super().write(s)


def test_request_message_has_the_summary_and_no_text() -> None:
    msg = logs.request_message(record())
    assert msg == (
        "chat ok model=gpt-4o provider=alpha policy=default stream=False tokens=12/34"
        " cost_sats=0.425 latency_ms=7 attempts=2 retries=0"
    )
    assert logs.request_message(record(), "1/alpha").endswith(" attempts=2 retries=1/alpha")
    err = logs.request_message(
        record(success=False, error_status=502, cost_msats=None, input_tokens=None)
    )
    assert err.startswith("chat error status=502 model=gpt-4o")
    assert "tokens=None/34 cost_sats=None latency_ms" in err


def test_request_message_costs_are_exact_millisats() -> None:
    big = logs.request_message(record(cost_msats=12_345_678_901_234_567_891))
    assert " cost_sats=12345678901234567.891 " in big  # no float rounding on the way
    maybe = logs.request_message(
        record(success=False, error_status=504, cost_msats=None, possibly_billed_msats=7)
    )
    assert " cost_sats=None possibly_billed_sats=0.007 latency_ms=7 " in maybe


def test_request_lines_and_log_records_share_one_writer(restore_logging: object) -> None:
    out = CountingStream()
    writer = logs.setup_logging("info", stream=out)
    logs.log_request(record(request_id="r-a"))
    logging.getLogger("arbstr.upstream").warning(
        "provider %s slow", "beta", extra={"request_id": "r-b"}
    )
    logging.getLogger("arbstr").debug("not shown at info")
    writer.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    m0, m1 = LINE.match(lines[0]), LINE.match(lines[1])
    assert m0 is not None and m1 is not None
    assert m0.groups() == (
        "INFO",
        "arbstr.chat",
        "r-a",
        logs.request_message(record(request_id="r-a")),
    )
    assert m1.groups() == ("WARNING", "arbstr.upstream", "r-b", "provider beta slow")


def test_a_burst_is_written_in_few_writes(restore_logging: object) -> None:
    out = CountingStream()
    writer = logs.setup_logging("info", stream=out)
    for i in range(2000):
        logs.log_request(record(request_id=f"r{i}"))
    writer.stop()
    text = out.getvalue()
    assert text.count("\n") == 2000
    assert [ln.split("request_id=")[1].split()[0] for ln in text.splitlines()] == [
        f"r{i}" for i in range(2000)
    ]
    assert out.writes <= 3  # one per linger window, not one per line


def test_request_lines_are_off_above_info(restore_logging: object) -> None:
    out = CountingStream()
    writer = logs.setup_logging("warning", stream=out)
    logs.log_request(record())
    logging.getLogger("arbstr").error("boom")
    writer.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" ERROR   arbstr boom")


def test_a_line_that_cannot_be_formatted_does_not_stop_logging(restore_logging: object) -> None:
    out = CountingStream()
    writer = logs.setup_logging("info", stream=out)
    logging.getLogger("arbstr").info("%d items", "not a number")
    logging.getLogger("arbstr").info("still logging")
    writer.stop()
    text = out.getvalue()
    assert "could not format a log line" in text
    assert text.rstrip().endswith("still logging")


def test_lines_appear_without_a_stop(restore_logging: object) -> None:
    out = CountingStream()
    writer = logs.setup_logging("info", stream=out)
    logs.log_request(record())
    deadline = time.monotonic() + 2
    while "chat ok" not in out.getvalue():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    writer.stop()


def test_without_setup_the_request_line_goes_through_logging(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "_writer", None)
    with caplog.at_level(logging.INFO, logger="arbstr.chat"):
        logs.log_request(record())
    assert [r.getMessage() for r in caplog.records] == [logs.request_message(record())]
    assert caplog.records[0].request_id == "rid-1"  # type: ignore[attr-defined]


def test_a_batch_is_formatted_in_slices_with_pauses() -> None:
    """The writer shares the proxy's core with the event loop: it formats a batch a few lines
    at a time and pauses in between (arbstr.batching.Pacer), then writes it in one call."""
    pauses: list[float] = []
    out = CountingStream()
    pacer = Pacer(4, pause_s=0.001, budget_s=1.0, sleep=pauses.append)
    writer = logs.LogWriter(out, pacer=pacer)
    items: list[object] = [(time.time(), record(request_id=f"r{i}"), None) for i in range(20)]
    assert writer._write(items) is False
    assert pauses == [0.001] * 4  # 5 slices of 4 lines
    assert out.writes == 1
    assert [ln.split("request_id=")[1].split()[0] for ln in out.getvalue().splitlines()] == [
        f"r{i}" for i in range(20)
    ]
