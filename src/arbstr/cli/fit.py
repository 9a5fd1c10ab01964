"""Which columns of a table fit a terminal, and how wide each is. Pure.

Each column has an importance rank (0 = most important), the width its content needs and the
narrowest it may be cut to (free text such as an error message is cut with an ellipsis; a
number never is). The least important columns are dropped first until the rest fit at their
narrowest; the width left over then widens the kept columns, most important first, up to
what their content needs. The most important column is never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Need:
    rank: int  # 0 = most important
    natural: int  # the width the content needs
    least: int  # the narrowest it may be cut to (== natural: never cut)


@dataclass(frozen=True, slots=True)
class Overhead:
    """The columns a table's borders and padding take: ``per_column * n + fixed``."""

    per_column: int = 2
    fixed: int = 0

    def of(self, n: int) -> int:
        return self.per_column * n + self.fixed if n else 0


def fit(needs: Sequence[Need], width: int, overhead: Overhead = Overhead()) -> dict[int, int]:
    """The kept columns (by index) and the width given to each. ``width`` is the room the
    whole table may take. When even the most important column does not fit at its narrowest,
    it alone is kept, at that width (the table is then wider than ``width``)."""
    if not needs:
        return {}
    by_rank = sorted(range(len(needs)), key=lambda i: (needs[i].rank, i))
    kept = list(by_rank)
    while len(kept) > 1 and sum(needs[i].least for i in kept) + overhead.of(len(kept)) > width:
        kept.pop()  # the least important of those left
    widths = {i: needs[i].least for i in kept}
    spare = width - sum(widths.values()) - overhead.of(len(kept))
    for i in kept:  # most important first
        if spare <= 0:
            break
        grow = min(spare, needs[i].natural - widths[i])
        if grow > 0:
            widths[i] += grow
            spare -= grow
    return dict(sorted(widths.items()))


def hidden_note(hidden: Sequence[str], width: int) -> str:
    """The one line under a table that had columns dropped."""
    if not hidden:
        return ""
    n = len(hidden)
    note = f"{n} column{'s' if n > 1 else ''} hidden ({', '.join(hidden)}); --wide shows all"
    if len(note) > width:
        note = f"{n} hidden; --wide shows all"
    return note[:width]


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, an ellipsis marking a cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""
