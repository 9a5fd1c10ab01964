"""A Routstr node's prices and charges, pure: USD per token -> ``sats_pricing`` at a BTC/USD
rate, the reservation before forwarding, and what a request is billed (see fake_routstr.py).

Amounts are exact: Decimal from the published floats' JSON spelling, rounded half-up to the
millisat (reservations up), which is how arbstr computes its own figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

__all__ = ["SATS_PER_BTC", "NodeModel", "SatsPricing", "usd_msats"]

SATS_PER_BTC = 100_000_000


@dataclass(frozen=True)
class NodeModel:
    """A listed model: its short ``id``, USD prices per token, limits, and whether the
    (simulated) upstream reports a USD cost for each answer (``upstream_cost_usd``)."""

    id: str
    prompt_usd: float
    completion_usd: float
    request_usd: float = 0.0
    cache_read_usd: float | None = None  # default: a tenth of prompt_usd
    cache_write_usd: float | None = None  # default: 1.25 x prompt_usd
    vendor: str = "openai"
    context_length: int = 128_000
    max_completion_tokens: int = 16_384
    upstream_cost_usd: float | None = None

    @property
    def canonical_slug(self) -> str:
        return f"{self.vendor}/{self.id}"


@dataclass(frozen=True)
class SatsPricing:
    """A model's ``sats_pricing`` at one BTC/USD rate (sats per token; ``request`` per call)."""

    prompt: float
    completion: float
    request: float
    input_cache_read: float
    input_cache_write: float
    max_cost: float
    max_completion_cost: float

    @classmethod
    def of(cls, m: NodeModel, btc_usd: float) -> SatsPricing:
        def sats(usd: float) -> float:
            return float(f"{usd * SATS_PER_BTC / btc_usd:.12g}")

        prompt, completion = sats(m.prompt_usd), sats(m.completion_usd)
        read = m.prompt_usd / 10 if m.cache_read_usd is None else m.cache_read_usd
        write = m.prompt_usd * 1.25 if m.cache_write_usd is None else m.cache_write_usd
        request = sats(m.request_usd)
        max_completion = float(f"{completion * m.max_completion_tokens:.12g}")
        max_cost = float(f"{prompt * m.context_length + max_completion + request:.12g}")
        return cls(prompt, completion, request, sats(read), sats(write), max_cost, max_completion)

    def as_json(self) -> dict[str, float]:
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "request": self.request,
            "input_cache_read": self.input_cache_read,
            "input_cache_write": self.input_cache_write,
            "max_cost": self.max_cost,
            "max_completion_cost": self.max_completion_cost,
        }

    def reservation_msats(self, max_tokens: int | None) -> int:
        """The worst case held before forwarding, rounded up to the millisat."""
        sats = _d(self.max_cost)
        if max_tokens is not None:
            unused = _d(self.max_completion_cost) - max_tokens * _d(self.completion)
            sats -= max(Decimal(0), unused)
        return int((sats * 1000).to_integral_value(ROUND_CEILING))

    def tokens_msats(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> int:
        """The token formula; ``request`` is not part of it."""
        sats = (
            _d(self.prompt) * (prompt_tokens - cached_tokens)
            + _d(self.input_cache_read) * cached_tokens
            + _d(self.completion) * completion_tokens
        )
        return _msats(sats)


def usd_msats(usd: float, btc_usd: float) -> int:
    """A USD amount in millisats at ``btc_usd``."""
    return _msats(_d(usd) * SATS_PER_BTC / _d(btc_usd))


def _d(x: float) -> Decimal:
    return Decimal(repr(x))  # the number as JSON spells it, which is what clients read


def _msats(sats: Decimal) -> int:
    return int((sats * 1000).to_integral_value(ROUND_HALF_UP))
