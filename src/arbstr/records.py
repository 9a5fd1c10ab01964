"""What is recorded about each chat request, and where it goes.

The request path builds one :class:`RequestRecord` per chat request and hands it to a
:class:`RecordSink` (which must never block); learned output/input token ratios live in a
:class:`RatioBook`. Prompts and completions are never part of a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# No request has more tokens than this; a larger count is a provider's bug, not a count
# (the request log stores it as unknown, and nothing is learned from it).
MAX_TOKENS = 10**9  # per count per request; a larger count is a provider bug, not a bill


@dataclass(slots=True)
class RequestRecord:
    """One chat request. Money is in integer millisats: ``cost_msats`` is what the user pays,
    ``provider_cost_msats`` (what the provider said it charged) when it said so, else
    ``computed_cost_msats`` (arbstr's cost from the token usage and the rates); and
    ``possibly_billed_msats`` the estimated cost of a request that may have been billed
    although nothing says what it cost (read timeout, client disconnect, interrupted stream),
    never part of ``cost_msats``."""

    request_id: str
    timestamp: str  # ISO 8601 UTC
    model: str
    provider: str | None
    policy: str | None
    streaming: bool
    input_tokens: int | None
    output_tokens: int | None
    cost_msats: int | None
    provider_cost_msats: int | None
    latency_ms: int
    ttft_ms: int | None
    stream_duration_ms: int | None
    success: bool
    error_status: int | None
    error_message: str | None
    attempts: int = 1
    possibly_billed_msats: int | None = None
    computed_cost_msats: int | None = None
    api: str = "chat"  # the client API it came in (arbstr.apinames.ALL_APIS)
    tier: str | None = None  # the tier it was routed within (economy, standard, frontier)
    complexity: float | None = None  # the complexity scorer's score, when it scored it
    escalated_from: str | None = None  # a re-ask one tier up: the request id it re-asks
    escalation: str | None = None  # ... and the failure signal that made it (reason code)


class RecordSink(Protocol):
    def submit(self, record: RequestRecord) -> None:
        """Queue a record for storage. Must not block or raise."""


class MemorySink:
    """Keeps records in memory (used when no database is configured, and by tests)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)


class RatioBook:
    """Running average of output/input token ratios per (policy, model)."""

    def __init__(self) -> None:
        self._ratios: dict[tuple[str, str], tuple[float, int]] = {}

    def get(self, policy: str, model: str) -> float | None:
        entry = self._ratios.get((policy, model))
        return None if entry is None else entry[0]

    def observe(self, policy: str, model: str, input_tokens: int, output_tokens: int) -> None:
        if not (0 < input_tokens <= MAX_TOKENS and 0 <= output_tokens <= MAX_TOKENS):
            return
        ratio = output_tokens / input_tokens
        avg, n = self._ratios.get((policy, model), (0.0, 0))
        n += 1
        self._ratios[(policy, model)] = (avg + (ratio - avg) / n, n)

    def load(self, policy: str, model: str, avg_ratio: float, sample_count: int) -> None:
        self._ratios[(policy, model)] = (avg_ratio, sample_count)
