"""Structured logging off the event loop.

Everything that logs puts an item on one queue; a single writer thread formats the items and
writes whatever has accumulated in one ``write`` call, so a slow terminal or pipe never
blocks a request. Each line carries the request id; configured secrets are taken out of
every line.

The per-request summary line is the hot one: :func:`log_request` queues the
:class:`~arbstr.records.RequestRecord` the request path builds anyway, and its text is made on
the writer thread, instead of paying for a ``logging.LogRecord`` on the event loop.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import TextIO

import msgspec

from arbstr.batching import Pacer, Poller
from arbstr.money import format_msats
from arbstr.records import RequestRecord
from arbstr.redact import NO_SECRETS, Redactor
from arbstr.timefmt import IsoStamper

LEVELS = ("debug", "info", "warning", "error")
_INTERVAL_S = 0.02  # the writer takes what is queued every 20 ms: a burst is one write
_REQUEST_LOGGER = "arbstr.chat"
_STOP = object()

_Item = logging.LogRecord | tuple[float, RequestRecord, str | None] | object


_timestamp = IsoStamper()  # used on the log thread only
_encode_json = msgspec.json.Encoder().encode
_redactor: Redactor = NO_SECRETS


def set_redactor(redactor: Redactor) -> None:
    """Secrets to take out of every log line from now on (the configured provider keys)."""
    global _redactor
    _redactor = redactor


def format_line(created: float, level: str, logger: str, request_id: str | None, msg: str) -> str:
    """``2025-01-02T03:04:05.678Z INFO    arbstr.chat request_id=… message``."""
    rid = f" request_id={request_id}" if request_id else ""
    return f"{_timestamp(created)} {level:<7} {logger}{rid} {msg}"


def logfmt_value(value: object) -> str:
    """A value for a ``key=value`` line: as it is, or double-quoted with JSON escapes when it
    is empty or holds a space, ``=``, a quote, a backslash or a control character (so that
    ``model="a provider=x"`` stays one key)."""
    text = str(value)
    if (
        text
        and text.isprintable()
        and " " not in text
        and "=" not in text
        and '"' not in text
        and "\\" not in text
    ):
        return text
    return _encode_json(text).decode()


def request_message(r: RequestRecord, retries: str | None = None) -> str:
    """The summary of one chat request, ``key=value``; no prompt or completion text.
    ``retries`` is the ``x-arbstr-retries`` value (failed attempts per provider), if any."""
    outcome = "ok" if r.success else f"error status={r.error_status}"
    cost = None if r.cost_msats is None else format_msats(r.cost_msats)
    billed = r.possibly_billed_msats
    maybe = "" if billed is None else f" possibly_billed_sats={format_msats(billed)}"
    v = logfmt_value
    return (
        f"{r.api} {outcome} model={v(r.model)} provider={v(r.provider)} policy={v(r.policy)}"
        f" stream={r.streaming} tokens={r.input_tokens}/{r.output_tokens} cost_sats={cost}"
        f"{maybe} latency_ms={r.latency_ms} attempts={r.attempts} retries={v(retries or 0)}"
    )


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = format_line(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "request_id", None),
            record.getMessage(),
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LogWriter:
    """The thread that formats and writes every log line (see the module docstring)."""

    def __init__(
        self, stream: TextIO, interval_s: float = _INTERVAL_S, pacer: Pacer | None = None
    ) -> None:
        self._stream = stream
        self._pacer = pacer or Pacer()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._poller = Poller(self._queue, interval_s, stop=_STOP)
        self._formatter = _Formatter()
        self._thread = threading.Thread(target=self._run, name="arbstr-log", daemon=True)
        self.requests_enabled = True  # whether the per-request line is wanted (info level)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def put(self, item: _Item) -> None:
        self._queue.put(item)

    def _run(self) -> None:
        while not self._write(self._poller.next_batch()):
            pass

    def _write(self, items: list[_Item]) -> bool:
        lines: list[str] = []
        stop = False
        for part in self._pacer.slices(items):  # formatting is ~10 µs a line: in short slices
            for item in part:
                if item is _STOP:
                    stop = True
                elif (line := self._line(item)) is not None:
                    lines.append(line)
        if lines:
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone (closed pipe): nothing sensible left to do with a log line
        return stop

    def _line(self, item: _Item) -> str | None:
        """One queued item as its log line (``None``: not a log item)."""
        try:
            if isinstance(item, logging.LogRecord):
                return _redactor.text(self._formatter.format(item))
            if isinstance(item, tuple):
                created, rec, retries = item
                msg = request_message(rec, retries)
                return _redactor.text(
                    format_line(created, "INFO", _REQUEST_LOGGER, rec.request_id, msg)
                )
        except Exception as exc:  # a bad log call must not end logging
            return f"(could not format a log line: {type(exc).__name__}: {exc})"
        return None


class _QueueHandler(logging.Handler):
    """Hands the record itself to the writer thread, which formats it."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.put(record)


_writer: LogWriter | None = None
_request_log = logging.getLogger(_REQUEST_LOGGER)


def log_request(record: RequestRecord, retries: str | None = None) -> None:
    """Log one chat request's summary at info level (the text is made on the log thread)."""
    w = _writer
    if w is not None:
        if w.requests_enabled:
            w.put((time.time(), record, retries))
    elif _request_log.isEnabledFor(logging.INFO):
        msg = request_message(record, retries)
        _request_log.info(msg, extra={"request_id": record.request_id})


def setup_logging(level: str = "info", stream: TextIO | None = None) -> LogWriter:
    """Route the ``arbstr`` and ``uvicorn`` loggers through the writer thread to stderr. Call
    ``stop()`` on the result at exit: it writes what is still queued."""
    global _writer
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    # Per-record work the formatter never shows, skipped as the logging HOWTO's "Optimization"
    # section describes: the caller's file/line (a stack walk), thread and process details.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    writer = LogWriter(stream if stream is not None else sys.stderr)
    writer.requests_enabled = lvl <= logging.INFO
    handler = _QueueHandler(writer)
    for name in ("arbstr", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(lvl)
        lg.propagate = False
    if _writer is not None:
        _writer.stop()
    _writer = writer
    writer.start()
    return writer
