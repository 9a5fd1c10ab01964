"""Request-log test data: reproducible RequestRecords and a plain-Python reference for what
/v1/stats and /v1/requests must answer about them."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from arbstr.records import RequestRecord

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet")
PROVIDERS = ("alpha", "beta", None)
POLICIES = ("default", "code_generation", None)
# keep generated rows this far from the range boundaries (1h, 24h, 7d, 30d ago), so that the
# seconds between generating and querying cannot move a row across one
_BOUNDARY_MARGIN = timedelta(minutes=10)
_BOUNDARIES = (timedelta(hours=1), timedelta(hours=24), timedelta(days=7), timedelta(days=30))


def ts(dt: datetime) -> str:
    """The stored timestamp format."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def record(**kw: Any) -> RequestRecord:
    """A successful non-streaming record; override any field."""
    base: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "timestamp": ts(datetime.now(UTC)),
        "model": "gpt-4o",
        "provider": "alpha",
        "policy": "default",
        "streaming": False,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_msats": 700,
        "provider_cost_msats": None,
        "latency_ms": 42,
        "ttft_ms": None,
        "stream_duration_ms": None,
        "success": True,
        "error_status": None,
        "error_message": None,
        "attempts": 1,
    }
    base.update(kw)
    return RequestRecord(**base)


def make_records(n: int, now: datetime, seed: int = 7) -> list[RequestRecord]:
    """``n`` varied records spread over the last ~40 days (a few in the future's past edge)."""
    rng = random.Random(seed)
    out: list[RequestRecord] = []
    while len(out) < n:
        age = timedelta(seconds=rng.choice((rng.uniform(0, 7200), rng.uniform(0, 40 * 86400))))
        if any(abs(age - b) < _BOUNDARY_MARGIN for b in _BOUNDARIES):
            continue
        when = now - age
        success = rng.random() < 0.8
        streaming = rng.random() < 0.4
        provider = rng.choice(PROVIDERS)
        tokens_known = success or rng.random() < 0.3
        computed = rng.randint(0, 80_000) if tokens_known else None
        reported = _reported(computed, rng)
        out.append(
            RequestRecord(
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                timestamp=ts(when),
                model=rng.choice(MODELS),
                provider=provider,
                policy=rng.choice(POLICIES),
                streaming=streaming,
                input_tokens=rng.randint(1, 4000) if tokens_known else None,
                output_tokens=rng.randint(0, 2000) if tokens_known else None,
                cost_msats=computed if reported is None else reported,
                computed_cost_msats=computed,
                provider_cost_msats=reported,
                latency_ms=rng.randint(1, 30_000),
                ttft_ms=rng.randint(1, 500) if streaming else None,
                stream_duration_ms=rng.randint(1, 20_000) if streaming else None,
                success=success,
                error_status=None if success else rng.choice((400, 502, 503, 499)),
                error_message=None if success else rng.choice(("boom", "upstream [x] failed")),
                attempts=rng.randint(1, 3),
                possibly_billed_msats=(
                    rng.randint(0, 50_000) if not tokens_known and rng.random() < 0.5 else None
                ),
            )
        )
    return out


def _reported(cost: int | None, rng: random.Random) -> int | None:
    """What the provider said it charged: half the time nothing; else arbstr's own cost,
    or now and then a little more or less (a node charging off its advertised price); now
    and then a charge for a request arbstr could not price (a cut stream)."""
    if cost is None:
        return rng.randint(0, 5000) if rng.random() < 0.1 else None
    if rng.random() < 0.5:
        return None
    if rng.random() < 0.7:
        return cost
    return max(0, cost + rng.randint(-500, 2000))


Pred = Callable[[RequestRecord], bool]


def where(
    since: str | None = None,
    until: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    policy: str | None = None,
    success: bool | None = None,
    streaming: bool | None = None,
) -> Pred:
    def pred(r: RequestRecord) -> bool:
        return (
            (since is None or r.timestamp >= since)
            and (until is None or r.timestamp <= until)
            and (model is None or r.model == model)
            and (provider is None or r.provider == provider)
            and (policy is None or r.policy == policy)
            and (success is None or r.success == success)
            and (streaming is None or r.streaming == streaming)
        )

    return pred


def nearest_rank(values: Sequence[int], p: int) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def expected_group(rows: Iterable[RequestRecord]) -> dict[str, Any]:
    rows = list(rows)
    ok = [r.latency_ms for r in rows if r.success]
    msats = sum(r.cost_msats for r in rows if r.cost_msats is not None)
    computed = sum(r.computed_cost_msats for r in rows if r.computed_cost_msats is not None)
    reported = [r.provider_cost_msats for r in rows if r.provider_cost_msats is not None]
    both = [
        (r.provider_cost_msats, r.computed_cost_msats)
        for r in rows
        if r.provider_cost_msats is not None and r.computed_cost_msats is not None
    ]
    charged_both = sum(pc for pc, _ in both)
    computed_both = sum(cc for _, cc in both)
    maybe = [r.possibly_billed_msats for r in rows if r.possibly_billed_msats is not None]
    return {
        "counts": {
            "total": len(rows),
            "success": sum(r.success for r in rows),
            "error": sum(not r.success for r in rows),
            "streaming": sum(r.streaming for r in rows),
            "escalated": sum(r.escalation is not None for r in rows),
        },
        "costs": {
            "total_cost_sats": msats / 1000,
            "computed_cost_sats": computed / 1000,
            "total_input_tokens": sum(r.input_tokens or 0 for r in rows),
            "total_output_tokens": sum(r.output_tokens or 0 for r in rows),
            "provider_reported_requests": len(reported),
            "total_provider_cost_sats": sum(reported) / 1000 if reported else None,
            "provider_cost_diff_sats": (charged_both - computed_both) / 1000 if both else None,
            "charged_vs_computed": {
                "requests": len(both),
                "charged_sats": charged_both / 1000,
                "computed_sats": computed_both / 1000,
                "diff_sats": (charged_both - computed_both) / 1000,
            },
            "possibly_billed_sats": sum(maybe) / 1000,
            "possibly_billed_requests": len(maybe),
        },
        "performance": {
            "avg_latency_ms": sum(ok) / len(ok) if ok else None,
            "p50_latency_ms": nearest_rank(ok, 50),
            "p95_latency_ms": nearest_rank(ok, 95),
        },
    }


def expected_stats(
    records: Sequence[RequestRecord], pred: Pred, group_by: str | None = None
) -> dict[str, Any]:
    rows = [r for r in records if pred(r)]
    out = expected_group(rows)
    if group_by is not None:
        keys: dict[str, list[RequestRecord]] = {}
        for r in rows:
            key = getattr(r, group_by)
            keys.setdefault("(none)" if key is None else key, []).append(r)
        out["groups"] = {k: expected_group(v) for k, v in keys.items()}
    return out


def assert_stats_match(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Exact for counts, tokens and msats; avg latency to 0.01 ms."""

    def check(a: dict[str, Any], e: dict[str, Any]) -> None:
        assert a["counts"] == e["counts"]
        assert a["costs"] == e["costs"]
        ap, ep = a["performance"], e["performance"]
        assert ap["p50_latency_ms"] == ep["p50_latency_ms"]
        assert ap["p95_latency_ms"] == ep["p95_latency_ms"]
        if ep["avg_latency_ms"] is None:
            assert ap["avg_latency_ms"] is None
        else:
            assert abs(ap["avg_latency_ms"] - ep["avg_latency_ms"]) <= 0.006

    check(actual, expected)
    if "groups" in expected:
        assert set(actual["groups"]) == set(expected["groups"])
        for key, group in expected["groups"].items():
            check(actual["groups"][key], group)
    else:
        assert "groups" not in actual


def sort_key(sort: str) -> Callable[[tuple[int, RequestRecord]], tuple[Any, ...]]:
    """Ascending order of (row id, record) as SQLite sorts it: NULL first, then id."""

    def key(item: tuple[int, RequestRecord]) -> tuple[Any, ...]:
        rid, r = item
        value = {"timestamp": r.timestamp, "cost_sats": r.cost_msats, "latency_ms": r.latency_ms}[
            sort
        ]
        return (value is not None, value if value is not None else 0, rid)

    return key
