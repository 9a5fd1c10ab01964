"""One request's state as it goes along, and the ``x-arbstr-*`` headers it yields."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from arbstr.apinames import ApiName
from arbstr.money import format_msats
from arbstr.routing import Candidate
from arbstr.routing.budgets import Admission, Hold
from arbstr.server.http import Headers
from arbstr.upstream import AttemptLog

MAX_HEADER_CHARS = 256


def header_value(text: str) -> bytes:
    """``text`` made safe as a response header value: control characters replaced, bounded
    (config names and checked models pass through unchanged)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > MAX_HEADER_CHARS:
        text = text[: MAX_HEADER_CHARS - 1] + "…"
    return text.encode("utf-8", "replace")


def complexity_header(ex: Exchange) -> bytes:
    """``x-arbstr-complexity``: the score and its main reasons, e.g. ``0.62 (code, tools (12))``."""
    reasons = f" ({', '.join(ex.complexity_reasons)})" if ex.complexity_reasons else ""
    return header_value(f"{ex.complexity:.2f}{reasons}")


@dataclass(slots=True)
class Exchange:
    request_id: str
    started: float  # perf_counter
    timestamp: str
    api: ApiName = "chat"
    model: str = ""
    policy: str | None = None
    tier: str | None = None  # the tier routed within, when one applied
    complexity: float | None = None  # the scorer's score of the request, when scored
    complexity_reasons: tuple[str, ...] = ()  # its main reasons, the largest first
    streaming: bool = False
    escalated_from: str | None = None  # a re-ask one tier up: the request id it re-asks
    escalation: str | None = None  # ... and the failure signal's reason code
    note: str | None = None  # a successful answer's error_message: why it was re-asked
    est_input_tokens: int = 0
    est_output_tokens: int = 0
    candidate: Candidate | None = None  # the one being (or last) tried
    relayed_output_tokens: int = 0  # of a stream the client left: what it got so far
    recorded: bool = False  # its row has been written
    sticky_key: bytes | None = None  # the conversation it belongs to (None: none)
    sticky: str | None = None  # hit | miss | new (x-arbstr-sticky), with a sticky_key
    sticky_to: Candidate | None = None  # the conversation's candidate, ranked first on a hit
    attempts: AttemptLog = field(default_factory=AttemptLog)
    budget_admission: Admission | None = None  # what the budgets admitted, until held
    budget_hold: Hold | None = None  # what it holds against budgets until its row settles it
    budget_left_msats: int | None = None  # the tightest covering budget's left, after the hold

    @property
    def provider(self) -> str | None:
        c = self.candidate
        return None if c is None else c.provider.name

    def headers(self) -> Headers:
        h: Headers = [(b"x-arbstr-request-id", self.request_id.encode())]
        c = self.candidate
        if c is not None:
            h.append((b"x-arbstr-provider", c.provider.name.encode()))
        if self.model:
            h.append((b"x-arbstr-model", header_value(self.model)))
        if self.policy is not None:
            h.append((b"x-arbstr-policy", self.policy.encode()))
        if self.tier is not None:
            h.append((b"x-arbstr-tier", self.tier.encode()))
        if self.complexity is not None:
            h.append((b"x-arbstr-complexity", complexity_header(self)))
        if self.sticky is not None:
            h.append((b"x-arbstr-sticky", self._sticky_verdict()))
        retries = self.attempts.header()
        if retries is not None:
            h.append((b"x-arbstr-retries", retries.encode()))
        if self.budget_left_msats is not None:
            left = format_msats(max(0, self.budget_left_msats)).encode()
            h.append((b"x-arbstr-budget-remaining-sats", left))
        return h

    def _sticky_verdict(self) -> bytes:
        # a hit that fell back to another candidate is a miss
        if (
            self.sticky == "hit"
            and self.candidate is not None
            and self.candidate is not self.sticky_to
        ):
            return b"miss"
        return self.sticky.encode() if self.sticky is not None else b""

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
