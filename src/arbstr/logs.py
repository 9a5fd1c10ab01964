"""Structured logging off the event loop: records go through a queue to a listener thread,
so a slow terminal or pipe never blocks a request. Each line carries the request id."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time

LEVELS = ("debug", "info", "warning", "error")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        ts = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z"
        )
        line = f"{ts} {record.levelname:<7} {record.name}"
        if rid:
            line += f" request_id={rid}"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _ThreadQueueHandler(logging.handlers.QueueHandler):
    """Puts the record itself on the queue: the listener thread formats it. (The standard
    ``prepare`` formats the message and copies the record on the calling thread, so that it
    could be pickled for another process; for a thread that only doubles the event loop's
    cost of a log line. The arguments arbstr logs are immutable.)"""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def setup_logging(level: str = "info") -> logging.handlers.QueueListener:
    """Route the ``arbstr`` and ``uvicorn`` loggers through a background thread to stderr."""
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(_Formatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, stream, respect_handler_level=False)
    # Per-record work the formatter never shows, skipped as the logging HOWTO's "Optimization"
    # section describes: the caller's file/line (a stack walk), thread and process details.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _ThreadQueueHandler(q)
    for name in ("arbstr", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(lvl)
        lg.propagate = False
    listener.start()
    return listener
