"""Per-provider circuit breaker state and latency averages.

closed -> (N consecutive failures) -> open for a cool-down -> half_open (one probe) ->
closed on success, open again on failure. Single-threaded (event loop) use only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
LATENCY_ALPHA = 0.2  # weight of the newest sample in the moving average


@dataclass(slots=True)
class ProviderHealth:
    state: State = "closed"
    consecutive_failures: int = 0
    open_until: float = 0.0
    probe_in_flight: bool = False
    latency_ms_avg: float | None = None


class HealthBoard:
    def __init__(
        self,
        names: Iterable[str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._h: dict[str, ProviderHealth] = {n: ProviderHealth() for n in names}
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        # a provider's Retry-After lengthens the cool-down up to this, never for ever
        self.max_cooldown_s = max(max_cooldown_s, cooldown_s)
        self._clock = clock
        # name -> latency average, kept in step with _h for the router (no per-request dict build)
        self.latency_ms: dict[str, float | None] = dict.fromkeys(self._h)

    def get(self, name: str) -> ProviderHealth:
        h = self._h.get(name)
        if h is None:
            h = self._h[name] = ProviderHealth()
            self.latency_ms[name] = None
        return h

    def state(self, name: str) -> State:
        h = self.get(name)
        if h.state == "open" and self._clock() >= h.open_until:
            return "half_open"
        return h.state

    def acquire(self, name: str) -> bool:
        """Claim the right to send one attempt. In half-open only one probe at a time."""
        h = self.get(name)
        if h.state == "closed":
            return True
        if h.state == "open":
            if self._clock() < h.open_until:
                return False
            h.state = "half_open"
        if h.probe_in_flight:
            return False
        h.probe_in_flight = True
        return True

    def record_success(self, name: str, latency_ms: float | None = None) -> None:
        h = self.get(name)
        h.state = "closed"
        h.consecutive_failures = 0
        h.probe_in_flight = False
        if latency_ms is not None:
            avg = h.latency_ms_avg
            h.latency_ms_avg = (
                latency_ms if avg is None else avg + LATENCY_ALPHA * (latency_ms - avg)
            )
            self.latency_ms[name] = h.latency_ms_avg

    def record_failure(self, name: str, retry_after_s: float | None = None) -> None:
        h = self.get(name)
        h.consecutive_failures += 1
        h.probe_in_flight = False
        if h.state == "half_open" or h.consecutive_failures >= self.failure_threshold:
            cooldown = min(max(self.cooldown_s, retry_after_s or 0.0), self.max_cooldown_s)
            h.state = "open"
            h.open_until = self._clock() + cooldown

    def release(self, name: str) -> None:
        """An attempt ended without a verdict on the provider (e.g. the client left)."""
        self.get(name).probe_in_flight = False

    def snapshot(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, h in self._h.items():
            avg = h.latency_ms_avg
            out[name] = {
                "state": self.state(name),
                "consecutive_failures": h.consecutive_failures,
                "latency_ms_avg": None if avg is None else round(avg, 2),
            }
        return out
