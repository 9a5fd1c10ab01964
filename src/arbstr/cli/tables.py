"""Rich tables for ``arbstr stats``, ``arbstr requests`` and ``arbstr providers``, built from
the same typed results that ``/v1/stats`` and ``/v1/requests`` return (see
:mod:`arbstr.storage.payloads`). Each table names its columns in order of importance and is
fitted to the terminal (:func:`arbstr.cli.fit.fit`): the least important are dropped, free
text is cut with an ellipsis, no cell wraps. ``width=None`` (``--wide``) keeps every column
whole. Imported only by those commands, so rich stays out of ``serve``'s start-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from arbstr.cli.fit import Need, Overhead, fit, hidden_note
from arbstr.storage.payloads import Costs, Counts, Performance, RequestsPage, Stats

SIMPLE = Overhead(per_column=2, fixed=0)  # box.SIMPLE_HEAD, pad_edge=False, collapse_padding
BOXED = Overhead(per_column=3, fixed=1)  # rich's default box, padding 1 each side


@dataclass(frozen=True, slots=True)
class Col:
    header: str
    rank: int  # 0 = most important: dropped last
    right: bool = False
    least: int | None = None  # free text: may be cut down to this width; None: never cut


@dataclass(slots=True)
class Fitted:
    """A table fitted to a width, and the line saying which columns it left out."""

    table: Table
    note: str = ""
    hidden: list[str] = field(default_factory=list)


def _cell_len(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text.from_markup(cell).cell_len


def fitted_table(
    cols: Sequence[Col],
    rows: Sequence[tuple[Sequence[str | Text], str | None]],
    width: int | None,
    *,
    section_before: int | None = None,
    overhead: Overhead = SIMPLE,
    **table_kw: Any,
) -> Fitted:
    """``rows``: (cells as Rich markup or Text, row style); ``section_before``: a rule above
    that row."""
    natural = [
        max([len(c.header), *(_cell_len(cells[i]) for cells, _ in rows)])
        for i, c in enumerate(cols)
    ]
    if width is None:
        widths: dict[int, int | None] = dict.fromkeys(range(len(cols)))
    else:
        needs = [
            Need(c.rank, n, n if c.least is None else min(n, max(c.least, len(c.header))))
            for c, n in zip(cols, natural, strict=True)
        ]
        widths = dict(fit(needs, width, overhead).items())
    if overhead is SIMPLE:
        table_kw = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True, **table_kw}
    table = Table(**table_kw)
    for i, w in widths.items():
        c = cols[i]
        table.add_column(
            c.header,
            justify="right" if c.right else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=w,
        )
    for n, (cells, style) in enumerate(rows):
        if n == section_before and n:
            table.add_section()
        table.add_row(*(cells[i] for i in widths), style=style)
    hidden = [c.header or "name" for i, c in enumerate(cols) if i not in widths]
    return Fitted(table, hidden_note(hidden, width or 0), hidden)


def _num(value: float | int | None, decimals: int = 0) -> str:
    if value is None:
        return "-"
    if decimals:
        return f"{value:,.{decimals}f}"
    return f"{value:,}"


def _stats_cells(name: str, c: Counts, k: Costs, p: Performance) -> list[str]:
    return [
        escape(name),
        _num(c.total),
        _num(c.success),
        _num(c.error),
        _num(c.streaming),
        _num(k.total_cost_sats, 3),
        _num(k.total_input_tokens),
        _num(k.total_output_tokens),
        _num(p.avg_latency_ms, 1),
        _num(p.p50_latency_ms),
        _num(p.p95_latency_ms),
    ]


# (header, rank) in display order; the group's name is cut before anything is dropped
_STATS_COLS = (
    ("reqs", 1),
    ("ok", 5),
    ("err", 3),
    ("stream", 10),
    ("sats", 2),
    ("in tok", 7),
    ("out tok", 8),
    ("avg", 9),
    ("p50", 4),
    ("p95", 6),
)


def stats_table(result: Stats, group_by: str | None, width: int | None = None) -> Fitted:
    since = result.since or "the beginning"
    until = result.until or "now"
    caption = "latency (ms) of successful requests; p50/p95 are nearest-rank"
    costs = result.costs
    if costs.possibly_billed_requests:
        caption += (
            f"\npossibly billed, not in the sats column: {costs.possibly_billed_requests:,}"
            f" request(s), about {costs.possibly_billed_sats:,.3f} sats\n(timeouts,"
            " disconnects, cut streams: a node may bill them in full)"
        )
    cols = [Col(group_by or "", 0, least=12)]
    cols += [Col(h, rank, right=True) for h, rank in _STATS_COLS]
    groups = result.groups or {}
    items = list(groups.items())
    if group_by not in ("hour", "day", "week"):  # time buckets stay in time order
        items.sort(key=lambda kv: (-kv[1].costs.total_cost_sats, kv[0]))
    rows: list[tuple[Sequence[str], str | None]] = [
        (_stats_cells(name, g.counts, g.costs, g.performance), None) for name, g in items
    ]
    total = _stats_cells("total", result.counts, result.costs, result.performance)
    rows.append((total, "bold"))
    return fitted_table(
        cols,
        rows,
        width,
        section_before=len(items) if groups else None,
        title=f"arbstr requests, {since} to {until}",
        caption=caption,
    )


def escalation_table(result: Stats, width: int | None = None) -> Fitted | None:
    """Re-asks one tier up, by hop and reason; None when there were none."""
    if not result.escalations:
        return None
    cols = [Col("tiers", 0), Col("reason", 1, least=10), Col("reqs", 2, right=True)]
    rows = [
        ((escape(hop), escape(reason), _num(n)), None)
        for hop, reasons in sorted(result.escalations.items())
        for reason, n in sorted(reasons.items())
    ]
    return fitted_table(cols, rows, width, title="escalations (answers re-asked one tier up)")


def provider_cost_table(result: Stats, width: int | None = None) -> Fitted | None:
    """Per provider, over its requests with both figures: what it charged next to what
    arbstr computed from its advertised prices, dearest surprise first; an overcharging
    provider's row is red and marked. None when no request has both."""
    groups = result.groups or {}
    found = [(n, g.costs.charged_vs_computed) for n, g in groups.items()]
    found = [(n, c) for n, c in found if c.requests]
    if not found:
        return None
    found.sort(key=lambda nc: (-nc[1].diff_sats, nc[0]))
    cols = [
        Col("provider", 0, least=12),
        Col("reqs", 6, right=True),
        Col("charged", 3, right=True),
        Col("computed", 4, right=True),
        Col("diff", 2, right=True),
        Col("diff %", 5, right=True),
        Col("", 1),
    ]
    rows: list[tuple[Sequence[str], str | None]] = []
    for name, c in found:
        over = c.diff_sats > 0
        pct = f"{c.diff_sats / c.computed_sats * 100:+,.1f}%" if c.computed_sats else "-"
        cells = (
            escape(name),
            _num(c.requests),
            _num(c.charged_sats, 3),
            _num(c.computed_sats, 3),
            f"{c.diff_sats:+,.3f}",
            pct,
            "!" if over else "",
        )
        rows.append((cells, "bold red" if over else None))
    return fitted_table(
        cols,
        rows,
        width,
        title="charged by the provider vs computed by arbstr (sats)",
        caption=(
            "over the requests where the provider reported its charge;\n"
            "! = charged more than its advertised prices imply"
        ),
    )


def _when(ts: str, short: bool) -> str:
    """``2024-05-01T12:00:00.123Z`` -> ``2024-05-01 12:00:00`` (short: ``05-01 12:00:00``)."""
    return ts[5 if short else 0 : 19].replace("T", " ")


SHORT_ID_CHARS = 8


def id_suffixes(ids: Sequence[str], at_least: int = SHORT_ID_CHARS) -> list[str]:
    """Each id by its distinguishing suffix: the shortest common length (``at_least`` or more)
    at which the ids' endings all differ. Request ids are time-ordered UUIDv7s, so their
    starts repeat within a minute while their random endings do not."""
    longest = max((len(i) for i in ids), default=0)
    n = at_least
    while n < longest and len({i[-n:] for i in ids}) < len(set(ids)):
        n += 1
    return [i[-n:] if len(i) > n else i for i in ids]


# the request log's columns, display order, with their rank (0 = dropped last)
REQUEST_COLS = (
    Col("time (UTC)", 1),
    Col("request", 0),
    Col("model", 3, least=12),
    Col("provider", 5, least=8),
    Col("policy", 8, least=8),
    Col("stream", 9),
    Col("tokens", 7, right=True),
    Col("sats", 2, right=True),
    Col("ms", 6, right=True),
    Col("result", 4, least=16),
)


def outcome(status: int | None, message: str | None, failed: bool) -> str:
    """``ok``, or the error's status and message (Rich markup)."""
    if not failed:
        return "ok"
    return f"[red]{status or 'error'}[/] {escape(message or '')}".rstrip()


def requests_table(
    result: RequestsPage, *, short_ids: bool = False, width: int | None = None
) -> Fitted:
    """``short_ids``: each request id by its distinguishing suffix (enough to grep the logs,
    and to give to ``--id``)."""
    shown = id_suffixes([r.request_id for r in result.data]) if short_ids else None
    rows: list[tuple[Sequence[str], str | None]] = []
    for i, r in enumerate(result.data):
        err = r.error
        cells = (
            _when(r.timestamp, short_ids),
            escape(shown[i] if shown is not None else r.request_id),
            escape(r.model or "-"),
            escape(r.provider or "-"),
            escape(r.policy or "-"),
            "yes" if r.streaming else "no",
            f"{_num(r.tokens.input)}/{_num(r.tokens.output)}",
            _num(r.cost.sats, 3),
            _num(r.timing.latency_ms),
            outcome(err.status if err else None, err.message if err else None, err is not None),
        )
        rows.append((cells, None))
    return fitted_table(
        REQUEST_COLS,
        rows,
        width,
        title="arbstr request log",
        caption=(
            f"page {result.page} of {result.total_pages}"
            f" ({result.per_page} per page), {result.total} request(s)"
        ),
    )
