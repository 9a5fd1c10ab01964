"""``arbstr requests --id X``: one request found by a prefix or a suffix of its id, shown
field by field. Pure: the rows come from ``/v1/requests?request_id=X``."""

from __future__ import annotations

from arbstr.cli.tables import id_suffixes
from arbstr.storage.payloads import RequestRow, RequestsPage


def _sats(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def detail(r: RequestRow) -> list[str]:
    """Every field of the row, one ``name  value`` line each."""
    err = r.error
    tokens = f"{_text(r.tokens.input)} in, {_text(r.tokens.output)} out"
    fields = [
        ("request", r.request_id),
        ("time (UTC)", r.timestamp),
        ("api", r.api),
        ("model", r.model),
        ("provider", _text(r.provider)),
        ("policy", _text(r.policy)),
        ("tier", _text(r.tier)),
        ("complexity", _text(r.complexity)),
        ("streaming", "yes" if r.streaming else "no"),
        ("result", "ok" if err is None else f"{err.status or 'error'} {err.message or ''}"),
        ("tokens", tokens),
        ("sats", f"{_sats(r.cost.sats)} ({r.cost.source or 'unknown'})"),
        ("computed sats", _sats(r.cost.computed_sats)),
        ("charged sats", _sats(r.cost.provider_sats)),
        ("possibly billed", _sats(r.cost.possibly_billed_sats)),
        ("latency ms", _text(r.timing.latency_ms)),
        ("stream ms", _text(r.timing.stream_duration_ms)),
        ("escalated from", _text(r.escalated_from)),
        ("escalation", _text(r.escalation)),
    ]
    label = max(len(name) for name, _ in fields)
    return [f"{name:<{label}}  {value.rstrip()}" for name, value in fields]


def match_error(given: str, page: RequestsPage) -> str | None:
    """None when exactly one request matched; else what to tell the user."""
    if page.total == 1:
        return None
    if page.total == 0:
        return f"no request id starts or ends with {given!r}"
    rows = page.data
    parts = id_suffixes([r.request_id for r in rows])
    listed = "; ".join(
        f"{p} ({r.timestamp[:19].replace('T', ' ')}, {r.model})"
        for p, r in zip(parts, rows, strict=True)
    )
    more = f"; and {page.total - len(rows):,} more" if page.total > len(rows) else ""
    return (
        f"{page.total:,} request ids start or end with {given!r}: {listed}{more}"
        " (give more characters)"
    )
