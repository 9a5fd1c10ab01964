"""``arbstr stats --by hour|day|week``: sats per time bucket as a horizontal bar chart of
plain text lines, at most ``width`` columns each. Pure."""

from __future__ import annotations

from arbstr.storage.payloads import Stats

BAR = "█"
WIDTH = 80


def bar_length(value: float, largest: float, room: int) -> int:
    """Bars are proportional to the value: the largest fills ``room`` columns."""
    if largest <= 0 or value <= 0:
        return 0
    return round(value / largest * room)


def chart(result: Stats, unit: str, width: int = WIDTH) -> list[str]:
    """Title, one line per bucket (key, bar, sats), and a legend with the total."""
    groups = result.groups or {}
    rows = [(key, g.costs.total_cost_sats) for key, g in groups.items()]
    numbers = [f"{sats:,.3f}" for _, sats in rows]
    label_w = max((len(k) for k, _ in rows), default=0)
    number_w = max((len(n) for n in numbers), default=0)
    room = max(1, width - label_w - number_w - 2)
    largest = max((sats for _, sats in rows), default=0.0)
    lines = [f"arbstr sats per {unit} (UTC), {result.since} to {result.until}"]
    for (key, sats), number in zip(rows, numbers, strict=True):
        bar = BAR * bar_length(sats, largest, room)
        lines.append(f"{key:<{label_w}} {bar:<{room}} {number:>{number_w}}")
    lines.append(
        f"total {result.costs.total_cost_sats:,.3f} sats, {result.counts.total:,} requests,"
        f" {len(rows):,} {unit}s; longest bar {largest:,.3f} sats"
    )
    return [line[:width] for line in lines]
