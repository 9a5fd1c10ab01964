"""The answers of ``GET /v1/stats`` and ``GET /v1/requests`` as typed values.

Field order is the JSON key order. The server and ``arbstr stats``/``arbstr requests --json``
both encode them with :func:`encode` (the CLI only re-indents the same bytes), so the two
always print the same document. Money is in sats with three decimals, summed exactly in
millisats before it becomes a float here.
"""

from __future__ import annotations

import msgspec


class Counts(msgspec.Struct):
    total: int
    success: int
    error: int
    streaming: int
    escalated: int = 0  # answers re-asked one tier up (rows of the re-asks)


class Compared(msgspec.Struct):
    """The requests with both a provider-reported charge and arbstr's computed cost: what
    was charged against what the advertised prices imply (``diff_sats`` > 0: charged more)."""

    requests: int
    charged_sats: float
    computed_sats: float
    diff_sats: float


class Costs(msgspec.Struct):
    # what the users paid: the provider's reported charge where it reported one, else
    # arbstr's computed cost; and arbstr's computed cost alone, where it could compute one
    total_cost_sats: float
    computed_cost_sats: float
    total_input_tokens: int
    total_output_tokens: int
    # requests where the provider reported its charge, and the sum of those charges
    provider_reported_requests: int
    total_provider_cost_sats: float | None
    provider_cost_diff_sats: float | None  # charged_vs_computed.diff_sats (None: none)
    charged_vs_computed: Compared
    # estimated cost of requests that may have been billed although nothing says what they
    # cost (timeouts, disconnects, interrupted streams); never part of total_cost_sats
    possibly_billed_sats: float
    possibly_billed_requests: int


class Performance(msgspec.Struct):
    avg_latency_ms: float | None
    p50_latency_ms: int | None
    p95_latency_ms: int | None


class GroupStats(msgspec.Struct):
    counts: Counts
    costs: Costs
    performance: Performance


class Stats(msgspec.Struct, omit_defaults=True):
    """``groups`` is present only when the query was grouped; ``escalations`` (re-asks by
    ``"economy->standard"`` and reason code) only when there were any."""

    since: str | None
    until: str | None
    counts: Counts
    costs: Costs
    performance: Performance
    groups: dict[str, GroupStats] | None = None
    escalations: dict[str, dict[str, int]] | None = None


class Tokens(msgspec.Struct):
    input: int | None
    output: int | None


class Cost(msgspec.Struct):
    sats: float | None  # what the user paid: provider_sats when reported, else computed_sats
    computed_sats: float | None
    provider_sats: float | None
    source: str | None  # "provider", "computed", or None when neither is known
    possibly_billed_sats: float | None


class Timing(msgspec.Struct):
    latency_ms: int | None  # None only for a value no arbstr writes
    stream_duration_ms: int | None


class RowError(msgspec.Struct):
    status: int | None
    message: str | None


class RequestRow(msgspec.Struct):
    id: int
    request_id: str
    timestamp: str
    model: str
    provider: str | None
    policy: str | None
    api: str
    tier: str | None
    complexity: float | None
    escalated_from: str | None
    escalation: str | None
    streaming: bool
    success: bool
    tokens: Tokens
    cost: Cost
    timing: Timing
    error: RowError | None


class RequestsPage(msgspec.Struct):
    data: list[RequestRow]
    page: int
    per_page: int
    total: int
    total_pages: int


Payload = Stats | RequestsPage

_encoder = msgspec.json.Encoder()


def encode(payload: Payload) -> bytes:
    """The JSON body the server sends."""
    return _encoder.encode(payload)


def encode_indented(payload: Payload) -> str:
    """The same document, indented for a terminal (``--json``)."""
    return msgspec.json.format(encode(payload), indent=2).decode("utf-8")
