"""Which tier (economy, standard, frontier) each listed model is in. Pure; computed once per
price refresh (the providers' tuple changes only then), never per request.

Rule. A model a ``[[tiers]]`` entry names (by id or by an alias a provider resolves) is in that
tier. Every other listed model is placed by its output rate (the cheapest any provider lists it
at): each configured tier with priced models has a median output rate; the boundary between two
consecutive such tiers is the geometric mean of their medians (the arithmetic one when either is
0), never below the previous boundary; a model goes to the first tier whose upper boundary is
at or above its rate. With no ``[[tiers]]`` at all, the listed models sorted by (output rate,
name) are cut into terciles: the cheapest third economy, the next standard, the rest frontier.
Both rules are monotone: a dearer model is never in a cheaper tier than a cheaper one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from arbstr.config import TIER_NAMES, Provider, Tier


@dataclass(frozen=True, slots=True)
class TierMap:
    """Each listed model's tier, and each tier's models (cheapest first)."""

    of: Mapping[str, str]  # listed model id -> tier name
    members: Mapping[str, tuple[str, ...]]  # tier name -> listed ids (by output rate, name)

    def models(self, tier: str) -> tuple[str, ...]:
        return self.members.get(tier, ())


EMPTY = TierMap({}, {})


def output_rates(providers: Sequence[Provider]) -> dict[str, float]:
    """Each listed model's cheapest output rate (sats per 1k) over the providers listing it
    (a provider of any model lists none)."""
    out: dict[str, float] = {}
    for p in providers:
        if p.models is None:
            continue
        for m in p.models:
            rate = p.rates_for(m).output_f
            if m not in out or rate < out[m]:
                out[m] = rate
    return out


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _between(a: float, b: float) -> float:
    return math.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2


def place(tiers: Sequence[Tier], rates: Mapping[str, float], resolve: Mapping[str, str]) -> TierMap:
    """Every model in ``rates`` (listed id -> output rate) in exactly one tier. ``resolve`` maps
    a configured name to the listed id it reaches (ids map to themselves)."""
    of: dict[str, str] = {}
    if not tiers:
        if not rates:
            return EMPTY
        ranked = sorted(rates, key=lambda m: (rates[m], m))
        n = len(ranked)
        for i, m in enumerate(ranked):
            of[m] = TIER_NAMES[min(2, i * 3 // n)]
        return _build(of, rates)
    for t in tiers:
        for name in t.models:
            listed = resolve.get(name, name)
            if listed in rates and listed not in of:
                of[listed] = t.name
    priced = [
        (t.name, _median([rates[m] for m, tn in of.items() if tn == t.name]))
        for t in tiers
        if any(tn == t.name for tn in of.values())
    ]
    if not priced:  # nothing configured is listed: the rest by terciles
        by_price = place((), rates, resolve)
        return _build(dict(by_price.of), rates, tiers, resolve)
    bounds: list[float] = []
    for (_, lo), (_, hi) in itertools.pairwise(priced):
        b = _between(lo, hi)
        bounds.append(max(b, bounds[-1]) if bounds else b)
    for m, rate in rates.items():
        if m in of:
            continue
        i = next((i for i, b in enumerate(bounds) if rate <= b), len(bounds))
        of[m] = priced[i][0]
    return _build(of, rates, tiers, resolve)


def _build(
    of: dict[str, str],
    rates: Mapping[str, float],
    tiers: Sequence[Tier] = (),
    resolve: Mapping[str, str] | None = None,
) -> TierMap:
    members: dict[str, list[str]] = {}
    for m in sorted(of, key=lambda m: (rates[m], m)):
        members.setdefault(of[m], []).append(m)
    # a configured model no provider lists (one serving any model may still take it) stays
    # in its tier, after the priced ones
    for t in tiers:
        for name in t.models:
            if resolve is not None and resolve.get(name, name) not in rates:
                members.setdefault(t.name, []).append(name)
    return TierMap(of, {t: tuple(ms) for t, ms in members.items()})


def tier_map(tiers: Sequence[Tier], providers: Sequence[Provider]) -> TierMap:
    """:func:`place` over what ``providers`` list now."""
    rates = output_rates(providers)
    resolve: dict[str, str] = {}
    for t in tiers:
        for name in t.models:
            for p in providers:
                listed = p.resolve(name)
                if listed is not None and listed in rates:
                    resolve[name] = listed
                    break
    return place(tiers, rates, resolve)
