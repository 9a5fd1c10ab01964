"""``arbstr requests --follow``: a live tail of the request log. It prints the latest rows,
then each row as it is logged, one line each with its cost and the running total of the
rows logged since the follow began.

The cursor is the row ``id`` (the order rows are logged in), read with ``after_id`` and
``sort=id&order=asc``: rows of the same millisecond are neither repeated nor skipped, and a
request logged late (a long stream) still shows when it lands."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from arbstr.cli.fit import Need, Overhead, cut, fit
from arbstr.money import format_msats
from arbstr.storage.params import MAX_PER_PAGE
from arbstr.storage.payloads import RequestRow, RequestsPage

Read = Callable[[Mapping[str, str]], RequestsPage]
ID_CHARS = 12  # the random end of a UUIDv7: enough to tell a request apart and to grep for

# header, rank (0 = dropped last), natural width, narrowest, right-aligned
_COLS = (
    ("time (UTC)", 1, 14, 14, False),
    ("request", 0, ID_CHARS, ID_CHARS, False),
    ("model", 4, 22, 10, False),
    ("provider", 6, 14, 8, False),
    ("tokens", 8, 11, 11, True),
    ("ms", 7, 7, 7, True),
    ("sats", 2, 10, 10, True),
    ("total sats", 3, 12, 12, True),
    ("result", 5, 40, 6, False),
)
_GAP = Overhead(per_column=2, fixed=-2)  # two spaces between columns


def row_msats(row: RequestRow) -> int:
    """What the row cost, in whole millisats (unknown: 0)."""
    return 0 if row.cost.sats is None else round(row.cost.sats * 1000)


@dataclass(slots=True)
class Tail:
    """The lines of a follow, fitted to ``width`` once (rows to come are not known)."""

    width: int
    shown: int = 0  # rows logged since the follow began
    total_msats: int = 0
    _widths: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        needs = [Need(rank, nat, least) for _, rank, nat, least, _ in _COLS]
        self._widths = fit(needs, self.width, _GAP)

    def _line(self, cells: list[str]) -> str:
        parts = []
        for i, w in self._widths.items():
            text = cut(cells[i], w)
            parts.append(f"{text:>{w}}" if _COLS[i][4] else f"{text:<{w}}")
        return "  ".join(parts).rstrip()

    def header(self) -> str:
        return self._line([c[0] for c in _COLS])

    def row(self, r: RequestRow, *, new: bool) -> str:
        msats = row_msats(r)
        if new:
            self.shown += 1
            self.total_msats += msats
        if r.error is None:
            result = "ok"
        else:
            result = f"{r.error.status or 'error'} {r.error.message or ''}".rstrip()
        tokens = "-" if r.tokens.input is None else f"{r.tokens.input:,}"
        tokens += "/" + ("-" if r.tokens.output is None else f"{r.tokens.output:,}")
        cells = [
            r.timestamp[5:19].replace("T", " "),
            r.request_id[-ID_CHARS:],
            r.model or "-",
            r.provider or "-",
            tokens,
            "-" if r.timing.latency_ms is None else f"{r.timing.latency_ms:,}",
            "-" if r.cost.sats is None else format_msats(msats),
            format_msats(self.total_msats) if new else "",
            " ".join(result.split()),
        ]
        return self._line(cells)

    def summary(self) -> str:
        total = format_msats(self.total_msats)
        return f"{self.shown:,} request(s) since the follow began, {total} sats"


def follow(
    read: Read,
    filters: Mapping[str, str],
    write: Callable[[str], None],
    tail: Tail,
    *,
    latest: int = 10,
    interval_s: float = 0.5,
    stop: threading.Event | None = None,
    max_polls: int | None = None,
) -> None:
    """Print the ``latest`` rows matching ``filters``, then poll for new ones until ``stop``
    is set or ``max_polls`` polls were made; ``tail`` counts the new rows and their sats."""
    stop = stop or threading.Event()
    first = read({**filters, "sort": "id", "order": "desc", "per_page": str(latest)})
    write(tail.header())
    cursor = 0
    for r in reversed(first.data):
        write(tail.row(r, new=False))
        cursor = max(cursor, r.id)
    polls = 0
    while not stop.is_set() and (max_polls is None or polls < max_polls):
        polls += 1
        page = read(
            {
                **filters,
                "after_id": str(cursor),
                "sort": "id",
                "order": "asc",
                "per_page": str(MAX_PER_PAGE),
            }
        )
        for r in page.data:
            write(tail.row(r, new=True))
            cursor = max(cursor, r.id)
        if len(page.data) < MAX_PER_PAGE:  # a full page: more are waiting, read on now
            stop.wait(interval_s)
