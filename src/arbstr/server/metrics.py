"""Prometheus metrics (``GET /metrics``, on with ``[metrics] enabled = true``).

:meth:`Metrics.observe` takes each finished request's row on the request path and only adds
to plain counters (no locks: rows and scrapes both happen on the event loop); the collector
turns a copy of them into metric families at scrape time, in a registry of its own. Labels
are config names, model ids the providers list (any other model id is ``other``), API names
and fixed enums; never a key, a token or request text.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from arbstr.config import Config
from arbstr.records import RequestRecord
from arbstr.routing.router import AUTO_MODELS

if TYPE_CHECKING:
    from arbstr.routing import HealthBoard
    from arbstr.routstr.prices import PriceBook

# seconds: from a cached answer's tens of milliseconds to a long reasoning stream
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_LE = (*(repr(b) for b in BUCKETS_S), "+Inf")
NONE = "none"  # a label with no value (no provider chosen, no tier)
OTHER = "other"  # a model id no provider lists

CALL_LABELS = ("provider", "model", "api")
MONEY_LABELS = ("provider", "model", "api", "policy")
REQUEST_LABELS = ("provider", "model", "api", "tier", "policy", "status")
ERROR_LABELS = ("provider", "model", "api", "status")
ATTEMPT_LABELS = ("provider", "model", "api", "outcome")

CallKey = tuple[str, str, str]
MoneyKey = tuple[str, str, str, str]
RowKey = tuple[str, str, str, str, str, bool]


class Histogram:
    """Counts per bucket (not cumulative; the last is above every bound) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS_S, value)] += 1
        self.sum += value


class Call:
    """What rows of one (provider, model, api) add up to."""

    __slots__ = ("duration", "input_tokens", "output_tokens", "ttft")

    def __init__(self) -> None:
        self.duration = Histogram()
        self.ttft = Histogram()
        self.input_tokens = 0
        self.output_tokens = 0


class Money:
    """Exact msats of one (provider, model, api, policy): spent and possibly billed."""

    __slots__ = ("billed_msats", "spent_msats")

    def __init__(self) -> None:
        self.spent_msats = 0
        self.billed_msats = 0


class Row:
    """One requests_total series, with the series it shares with others resolved once."""

    __slots__ = ("attempts", "call", "call_key", "count", "money", "outcome_key")

    def __init__(self, call: Call, call_key: CallKey, money: Money, success: bool) -> None:
        self.call = call
        self.call_key = call_key
        self.money = money
        self.count = 0
        self.attempts = 0  # the last attempts, with this row's outcome, on its provider
        provider, model, api = call_key
        self.outcome_key = (provider, model, api, "success" if success else "error")


class Metrics:
    """The counters and the model ids allowed as labels."""

    def __init__(self, config: Config, prices: PriceBook, health: HealthBoard) -> None:
        self._prices = prices
        self._health = health
        self._fixed = frozenset(
            {
                *AUTO_MODELS,
                *(m for t in config.tiers for m in t.models),
                *(m for r in config.policies.rules for m in r.allowed_models),
            }
        )
        self._known: frozenset[str] = frozenset()
        self._known_from: object = None
        self.rows: dict[RowKey, Row] = {}
        self.calls: dict[CallKey, Call] = {}
        self.money: dict[MoneyKey, Money] = {}
        self.errors: dict[tuple[str, str, str, str], int] = {}
        # failed attempts; the others are counted in their row
        self.failed_attempts: dict[tuple[str, str, str, str], int] = {}

    def model_label(self, model: str) -> str:
        """``model`` if a provider (as configured or discovered) or the config lists it."""
        listed = self._prices.listed
        if listed is not self._known_from:  # (a price refresh builds new providers)
            self._known = self._fixed.union(m for p in listed for m in p.model_order)
            self._known_from = listed
        return model if model in self._known else OTHER

    def observe(self, r: RequestRecord, failures: Mapping[str, int], tried: int) -> None:
        """Count one finished request: ``r`` its row, ``failures`` its failed attempts per
        provider and ``tried`` every attempt sent (the last, unless failed, on ``r.provider``)."""
        provider = r.provider or NONE
        model = r.model
        if self._prices.listed is not self._known_from or model not in self._known:
            model = self.model_label(model)  # (inline: the common case costs no call)
        api = r.api
        key = (provider, model, api, r.tier or NONE, r.policy or NONE, r.success)
        row = self.rows.get(key)
        if row is None:
            row = self._row(key)
        row.count += 1
        call = row.call
        seconds = r.latency_ms / 1000.0
        h = call.duration  # (Histogram.observe inline)
        h.counts[bisect_left(BUCKETS_S, seconds)] += 1
        h.sum += seconds
        if r.ttft_ms is not None:
            call.ttft.observe(r.ttft_ms / 1000.0)
        if r.input_tokens:
            call.input_tokens += r.input_tokens
        if r.output_tokens:
            call.output_tokens += r.output_tokens
        if r.cost_msats:
            row.money.spent_msats += r.cost_msats
        if r.possibly_billed_msats:
            row.money.billed_msats += r.possibly_billed_msats
        if failures:
            attempts = self.failed_attempts
            for name, n in failures.items():
                k = (name, model, api, "error")
                attempts[k] = attempts.get(k, 0) + n
                tried -= n
        if tried > 0:
            row.attempts += tried
        if not r.success:
            status = r.error_status
            code = str(status) if status is not None and 100 <= status <= 599 else OTHER
            ek = (provider, model, api, code)
            self.errors[ek] = self.errors.get(ek, 0) + 1

    def _row(self, key: RowKey) -> Row:
        provider, model, api, _, policy, success = key
        call_key = (provider, model, api)
        call = self.calls.get(call_key)
        if call is None:
            call = self.calls[call_key] = Call()
        money_key = (provider, model, api, policy)
        money = self.money.get(money_key)
        if money is None:
            money = self.money[money_key] = Money()
        row = self.rows[key] = Row(call, call_key, money, success)
        return row

    def _attempts(self) -> dict[tuple[str, str, str, str], int]:
        out = dict(self.failed_attempts)
        for row in self.rows.values():
            if row.attempts:
                k = row.outcome_key
                out[k] = out.get(k, 0) + row.attempts
        return out

    def provider_up(self) -> dict[str, bool]:
        """Each provider: its breaker lets requests through (closed or half-open)."""
        return {name: e["state"] != "open" for name, e in self._health.snapshot().items()}

    def snapshot(self) -> Snapshot:
        """A copy of every counter (on the event loop: formatting it may then run elsewhere)."""
        return Snapshot(
            rows={k: r.count for k, r in self.rows.items()},
            calls={
                k: (
                    tuple(c.duration.counts),
                    c.duration.sum,
                    tuple(c.ttft.counts),
                    c.ttft.sum,
                    c.input_tokens,
                    c.output_tokens,
                )
                for k, c in self.calls.items()
            },
            money={k: (v.spent_msats, v.billed_msats) for k, v in self.money.items()},
            errors=dict(self.errors),
            attempts=self._attempts(),
            up=self.provider_up(),
        )


CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
HistCounts = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    rows: dict[RowKey, int]
    # duration counts and sum, ttft counts and sum, input and output tokens
    calls: dict[CallKey, tuple[HistCounts, float, HistCounts, float, int, int]]
    money: dict[MoneyKey, tuple[int, int]]  # spent and possibly billed msats
    errors: dict[tuple[str, str, str, str], int]
    attempts: dict[tuple[str, str, str, str], int]
    up: dict[str, bool]


def render(snap: Snapshot) -> bytes:
    """``snap`` in the Prometheus text format (pure: may run in a worker thread), through a
    registry of its own (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap))
    return generate_latest(registry)


def cumulative(counts: HistCounts) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for le, n in zip(_LE, counts, strict=True):
        total += n
        out.append((le, total))
    return out


class _Collector:
    """Metric families from a :class:`Snapshot`, built at scrape time."""

    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        m = self._snap
        requests = CounterMetricFamily(
            "arbstr_requests", "Requests answered (one per request log row).", labels=REQUEST_LABELS
        )
        for (p, model, api, tier, policy, ok), count in m.rows.items():
            status = "success" if ok else "error"
            requests.add_metric([p, model, api, tier, policy, status], count)
        yield requests
        errors = CounterMetricFamily(
            "arbstr_request_errors", "Failed requests by HTTP status.", labels=ERROR_LABELS
        )
        for ek, n in m.errors.items():
            errors.add_metric(list(ek), n)
        yield errors
        attempts = CounterMetricFamily(
            "arbstr_attempts",
            "Upstream attempts, retries and fallbacks included.",
            labels=ATTEMPT_LABELS,
        )
        for ak, n in m.attempts.items():
            attempts.add_metric(list(ak), n)
        yield attempts
        yield from _calls(m.calls)
        yield from _money(m.money)
        up = GaugeMetricFamily(
            "arbstr_provider_up",
            "1 while the provider's circuit breaker lets requests through.",
            labels=("provider",),
        )
        for name, ok in m.up.items():
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up


def _calls(
    calls: dict[CallKey, tuple[HistCounts, float, HistCounts, float, int, int]],
) -> Iterator[Metric]:
    duration = HistogramMetricFamily(
        "arbstr_request_duration_seconds",
        "Time from the request to the end of its answer.",
        labels=CALL_LABELS,
    )
    ttft = HistogramMetricFamily(
        "arbstr_time_to_first_token_seconds",
        "Streams: time from the request to the upstream's first byte.",
        labels=CALL_LABELS,
    )
    tokens_in = CounterMetricFamily(
        "arbstr_input_tokens", "Prompt tokens (as reported, else estimated).", labels=CALL_LABELS
    )
    tokens_out = CounterMetricFamily(
        "arbstr_output_tokens",
        "Completion tokens (as reported, else counted).",
        labels=CALL_LABELS,
    )
    for ck, (d_counts, d_sum, t_counts, t_sum, n_in, n_out) in calls.items():
        labels = list(ck)
        duration.add_metric(labels, cumulative(d_counts), d_sum)
        if any(t_counts):
            ttft.add_metric(labels, cumulative(t_counts), t_sum)
        tokens_in.add_metric(labels, n_in)
        tokens_out.add_metric(labels, n_out)
    yield from (duration, ttft, tokens_in, tokens_out)


def _money(money: dict[MoneyKey, tuple[int, int]]) -> Iterator[Metric]:
    spent = CounterMetricFamily(
        "arbstr_spent_sats", "What requests cost (sats, from exact msats).", labels=MONEY_LABELS
    )
    billed = CounterMetricFamily(
        "arbstr_possibly_billed_sats",
        "Estimated cost of requests that may have been billed without a known cost (sats).",
        labels=MONEY_LABELS,
    )
    for mk, (spent_msats, billed_msats) in money.items():
        labels = list(mk)
        spent.add_metric(labels, spent_msats / 1000)
        billed.add_metric(labels, billed_msats / 1000)
    yield spent
    yield billed
