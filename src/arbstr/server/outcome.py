"""How a request ended, as its row: tokens, exact costs, what may have been billed."""

from __future__ import annotations

from dataclasses import dataclass

from arbstr.money import Rates
from arbstr.records import RequestRecord
from arbstr.redact import Redactor
from arbstr.routing import Route, cost_msats
from arbstr.server.charge import Charge
from arbstr.server.exchange import Exchange
from arbstr.upstream import Usage


@dataclass(slots=True)
class Outcome:
    success: bool
    input_tokens: int | None = None
    output_tokens: int | None = None
    charge: Charge | None = None  # what the request cost: reported and computed figures
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


def cache_write_tokens(usage: Usage | None) -> int:
    """Prompt tokens the provider says it wrote to its cache (priced at the cache-write rate)."""
    written = usage.cache_write_tokens if usage is not None else None
    return written or 0


def stream_cost(
    told: Charge | None,
    has_usage: bool,
    provider_msats: int | None,
    rates: Rates,
    used: tuple[int, int],
    est_output_tokens: int,
    cached: int = 0,
    cache_written: int = 0,
) -> tuple[Charge, int | None]:
    """A stream's ``(charge, possibly_billed_msats)``: the charge the trailer told the client;
    without a trailer (the stream was cut), the usage the upstream sent, if any, priced, next
    to the provider's reported charge; with neither a usage nor a reported charge, none but
    the estimate as possibly billed: the node reads its upstream to the end and bills the
    whole answer, so the larger of ``est_output_tokens`` and the tokens relayed so far."""
    if told is not None:
        return told, None
    in_tok, out_tok = used
    if has_usage:
        computed = cost_msats(rates, in_tok, out_tok, cached, cache_written)
        return Charge(computed, provider_msats), None
    if provider_msats is not None:
        return Charge(None, provider_msats), None
    return Charge(None, None), cost_msats(rates, in_tok, max(est_output_tokens, out_tok))


def billed_estimate(ex: Exchange, route: Route | None = None) -> int | None:
    """What the request may have cost without a usage to say so: the routing estimate for each
    attempt that may have been billed (timed out, or answered unreadably), and for the one an
    upstream may still be working on, which is billed in full: at least the output tokens
    already relayed of a stream the client left."""
    attempts = ex.attempts
    if not attempts.billed and not attempts.in_flight:
        return None  # the usual case, on every answered request: nothing to add up
    by_name = {c.provider.name: c for c in route.candidates} if route is not None else {}
    billed = [by_name[n] for n in ex.attempts.billed if n in by_name]
    est_in, est_out = ex.est_input_tokens, ex.est_output_tokens
    total = sum(cost_msats(c.rates, est_in, est_out) for c in billed)
    if ex.attempts.in_flight and ex.candidate is not None:
        relayed = max(est_out, ex.relayed_output_tokens)
        return total + cost_msats(ex.candidate.rates, est_in, relayed)
    return total if billed else None


def record_of(ex: Exchange, o: Outcome, redact: Redactor) -> RequestRecord:
    message, charge = o.error_message, o.charge
    return RequestRecord(
        request_id=ex.request_id,
        timestamp=ex.timestamp,
        model=ex.model,
        provider=ex.provider,
        policy=ex.policy,
        streaming=ex.streaming,
        input_tokens=o.input_tokens,
        output_tokens=o.output_tokens,
        cost_msats=None if charge is None else charge.msats,
        provider_cost_msats=None if charge is None else charge.provider_msats,
        latency_ms=round(ex.elapsed_ms()),
        ttft_ms=None if o.ttft_ms is None else round(o.ttft_ms),
        stream_duration_ms=None if o.stream_duration_ms is None else round(o.stream_duration_ms),
        success=o.success,
        error_status=o.error_status,
        error_message=None if message is None else redact.text(message),
        attempts=max(1, ex.attempts.tried),
        possibly_billed_msats=o.possibly_billed_msats,
        computed_cost_msats=None if charge is None else charge.computed_msats,
        api=ex.api,
        tier=ex.tier,
        complexity=ex.complexity,
        escalated_from=ex.escalated_from,
        escalation=ex.escalation,
    )


def add_msats(a: int | None, b: int | None) -> int | None:
    """Two optional amounts added (None only when both are None)."""
    if a is None:
        return b
    return a if b is None else a + b
