"""Rich tables for ``arbstr stats`` and ``arbstr requests``, built from the same typed
results that ``/v1/stats`` and ``/v1/requests`` return (see :mod:`arbstr.storage.payloads`).
Imported only by those commands, so rich stays out of ``serve``'s start-up."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from arbstr.storage.payloads import Costs, Counts, Performance, RequestsPage, Stats


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


def stats_table(result: Stats, group_by: str | None) -> Table:
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
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"arbstr requests, {since} to {until}",
        caption=caption,
    )
    table.add_column(group_by or "", no_wrap=True)
    for col in ("reqs", "ok", "err", "stream", "sats", "in tok", "out tok", "avg", "p50", "p95"):
        table.add_column(col, justify="right", no_wrap=True)
    groups = result.groups or {}
    rows = list(groups.items())
    if group_by not in ("hour", "day", "week"):  # time buckets stay in time order
        rows.sort(key=lambda kv: (-kv[1].costs.total_cost_sats, kv[0]))
    for name, g in rows:
        table.add_row(*_stats_cells(name, g.counts, g.costs, g.performance))
    if groups:
        table.add_section()
    total = _stats_cells("total", result.counts, result.costs, result.performance)
    table.add_row(*total, style="bold")
    return table


def escalation_table(result: Stats) -> Table | None:
    """Re-asks one tier up, by hop and reason; None when there were none."""
    if not result.escalations:
        return None
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title="escalations (answers re-asked one tier up)",
    )
    table.add_column("tiers", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("reqs", justify="right", no_wrap=True)
    for hop, reasons in sorted(result.escalations.items()):
        for reason, n in sorted(reasons.items()):
            table.add_row(escape(hop), escape(reason), _num(n))
    return table


def provider_cost_table(result: Stats) -> Table | None:
    """Per provider, over its requests with both figures: what it charged next to what
    arbstr computed from its advertised prices, dearest surprise first; an overcharging
    provider's row is red and marked. None when no request has both. Fits 80 columns."""
    groups = result.groups or {}
    rows = [(n, g.costs.charged_vs_computed) for n, g in groups.items()]
    rows = [(n, c) for n, c in rows if c.requests]
    if not rows:
        return None
    rows.sort(key=lambda nc: (-nc[1].diff_sats, nc[0]))
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title="charged by the provider vs computed by arbstr (sats)",
        caption=(
            "over the requests where the provider reported its charge;\n"
            "! = charged more than its advertised prices imply"
        ),
    )
    table.add_column("provider", overflow="fold", max_width=24)
    for col in ("reqs", "charged", "computed", "diff", "diff %"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for name, c in rows:
        over = c.diff_sats > 0
        pct = f"{c.diff_sats / c.computed_sats * 100:+,.1f}%" if c.computed_sats else "-"
        table.add_row(
            escape(name),
            _num(c.requests),
            _num(c.charged_sats, 3),
            _num(c.computed_sats, 3),
            f"{c.diff_sats:+,.3f}",
            pct,
            "!" if over else "",
            style="bold red" if over else None,
        )
    return table


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


def requests_table(result: RequestsPage, *, short_ids: bool = False) -> Table:
    """``short_ids``: each request id by its distinguishing suffix (enough to grep the logs)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title="arbstr request log",
        caption=(
            f"page {result.page} of {result.total_pages}"
            f" ({result.per_page} per page), {result.total} request(s)"
        ),
    )
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("request", no_wrap=True)
    for col in ("model", "provider", "policy"):
        table.add_column(col, overflow="fold")
    table.add_column("stream", no_wrap=True)
    for col in ("tokens", "sats", "ms"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("result")
    shown = id_suffixes([r.request_id for r in result.data]) if short_ids else None
    for i, r in enumerate(result.data):
        err = r.error
        if err is None:
            outcome = "ok"
        else:
            status = err.status or "error"
            message = err.message or ""
            outcome = f"[red]{status}[/] {escape(message)}".rstrip()
        table.add_row(
            _when(r.timestamp, short_ids),
            escape(shown[i] if shown is not None else r.request_id),
            escape(r.model or "-"),
            escape(r.provider or "-"),
            escape(r.policy or "-"),
            "yes" if r.streaming else "no",
            f"{_num(r.tokens.input)}/{_num(r.tokens.output)}",
            _num(r.cost.sats, 3),
            _num(r.timing.latency_ms),
            outcome,
        )
    return table
