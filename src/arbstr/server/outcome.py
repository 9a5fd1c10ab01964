"""How a chat request ended, as its row: tokens, exact costs, what may have been billed."""

from __future__ import annotations

from dataclasses import dataclass

from arbstr.money import Rates
from arbstr.records import RequestRecord
from arbstr.redact import Redactor
from arbstr.routing import Route, cost_msats
from arbstr.server.exchange import Exchange
from arbstr.upstream import Usage


@dataclass(slots=True)
class Outcome:
    success: bool
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_msats: int | None = None
    provider_cost_msats: int | None = None
    possibly_billed_msats: int | None = None
    ttft_ms: float | None = None
    stream_duration_ms: float | None = None
    error_status: int | None = None
    error_message: str | None = None


def failed(status: int, message: str, possibly_billed_msats: int | None = None) -> Outcome:
    return Outcome(
        False,
        possibly_billed_msats=possibly_billed_msats,
        error_status=status,
        error_message=message,
    )


def tokens(usage: Usage | None, est_input: int, content_chunks: int | None) -> tuple[int, int]:
    """Tokens from the provider's usage; estimates where it said nothing."""
    in_tok = usage.prompt_tokens if usage is not None else None
    out_tok = usage.completion_tokens if usage is not None else None
    if in_tok is None:
        in_tok = est_input
    if out_tok is None:
        out_tok = content_chunks or 0
    return in_tok, out_tok


def cached_tokens(usage: Usage | None) -> int:
    """Prompt tokens the provider says it read from its cache (priced at the cache rate)."""
    cached = usage.cached_tokens if usage is not None else None
    return cached or 0


def stream_cost(
    told_msats: int | None,
    has_usage: bool,
    rates: Rates,
    used: tuple[int, int],
    est_output_tokens: int,
    cached: int = 0,
) -> tuple[int | None, int | None]:
    """A stream's ``(cost_msats, possibly_billed_msats)``: the cost the trailer told the client;
    without a trailer (the stream was cut), the cost of the usage the upstream sent, if any;
    with neither, no cost but the estimate as possibly billed (the node may bill it in full)."""
    if told_msats is not None:
        return told_msats, None
    in_tok, out_tok = used
    if has_usage:
        return cost_msats(rates, in_tok, out_tok, cached), None
    return None, cost_msats(rates, in_tok, est_output_tokens)


def billed_estimate(ex: Exchange, route: Route | None = None) -> int | None:
    """What the request may have cost without a usage to say so: the routing estimate for each
    attempt that may have been billed (timed out, or answered unreadably) and for the one an
    upstream may still be working on."""
    by_name = {c.provider.name: c for c in route.candidates} if route is not None else {}
    billed = [by_name[n] for n in ex.attempts.billed if n in by_name]
    if ex.attempts.in_flight and ex.candidate is not None:
        billed.append(ex.candidate)
    if not billed:
        return None
    return sum(cost_msats(c.rates, ex.est_input_tokens, ex.est_output_tokens) for c in billed)


def record_of(ex: Exchange, o: Outcome, redact: Redactor) -> RequestRecord:
    message = o.error_message
    return RequestRecord(
        request_id=ex.request_id,
        timestamp=ex.timestamp,
        model=ex.model,
        provider=ex.provider,
        policy=ex.policy,
        streaming=ex.streaming,
        input_tokens=o.input_tokens,
        output_tokens=o.output_tokens,
        cost_msats=o.cost_msats,
        provider_cost_msats=o.provider_cost_msats,
        latency_ms=round(ex.elapsed_ms()),
        ttft_ms=None if o.ttft_ms is None else round(o.ttft_ms),
        stream_duration_ms=None if o.stream_duration_ms is None else round(o.stream_duration_ms),
        success=o.success,
        error_status=o.error_status,
        error_message=None if message is None else redact.text(message),
        attempts=max(1, ex.attempts.tried),
        possibly_billed_msats=o.possibly_billed_msats,
    )
