"""What a request cost the user, decided once for JSON answers and streams alike.

A Routstr node's reported charge is what the user pays (it may bill from its upstream's own
figure rather than its advertised per-token prices), so ``cost_sats`` is that charge when the
provider reported one, else arbstr's cost computed from the usage and the candidate's rates.
Both figures are kept, so the log can show where they differ. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from arbstr.money import format_msats

Source = Literal["provider", "computed"]


@dataclass(frozen=True, slots=True)
class Charge:
    """``computed_msats``: arbstr's formula over the usage (None: no usage to price);
    ``provider_msats``: the provider's reported charge (None: it reported none)."""

    computed_msats: int | None
    provider_msats: int | None

    @property
    def msats(self) -> int | None:
        """What the user pays: the reported charge when there is one, else the computed cost."""
        return self.computed_msats if self.provider_msats is None else self.provider_msats

    @property
    def source(self) -> Source | None:
        if self.provider_msats is not None:
            return "provider"
        return None if self.computed_msats is None else "computed"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``x-arbstr-cost-sats`` and ``x-arbstr-cost-source`` (none when nothing is known)."""
        # (msats and source spelt out: this runs for every answer)
        if self.provider_msats is not None:
            return [
                (b"x-arbstr-cost-sats", format_msats(self.provider_msats).encode()),
                (b"x-arbstr-cost-source", b"provider"),
            ]
        if self.computed_msats is None:
            return []
        return [
            (b"x-arbstr-cost-sats", format_msats(self.computed_msats).encode()),
            (b"x-arbstr-cost-source", b"computed"),
        ]

    def trailer_fields(self) -> dict[str, Any]:
        """The cost part of a stream's ``arbstr`` trailer object, in sats."""
        return {
            "cost_sats": _sats(self.msats),
            "cost_source": self.source,
            "computed_cost_sats": _sats(self.computed_msats),
            "provider_cost_sats": _sats(self.provider_msats),
        }


def _sats(msats: int | None) -> float | None:
    return None if msats is None else msats / 1000
