"""Why each provider/model a request could go to is ranked or skipped: the dry run's
explanation of a :class:`~arbstr.routing.router.Route`. Pure; never on the request path."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from arbstr.config import TIER_NAMES, Provider, Rule
from arbstr.routing.fit import Needs, misfit
from arbstr.routing.pricing import estimate_cost
from arbstr.routing.router import AUTO_MODELS, TIER_MODELS, Candidate, Route, allowed
from arbstr.routing.tiers import TierMap

Skip = Literal[
    "wrong_api",
    "price_cap",
    "not_allowed",
    "context_length",
    "unsupported_input",
    "cooling_down",
    "other_model",
]
_MISFIT: dict[str, Skip] = {
    "context_length_exceeded": "context_length",
    "unsupported_input": "unsupported_input",
}


@dataclass(frozen=True, slots=True)
class Considered:
    provider: str
    model: str  # the provider's listed id
    est_cost: float  # sats
    skipped: Skip | None  # None: a candidate, in rank order
    funds_short: bool = False  # its key is known not to cover the request (ranked last)


def considered_models(
    route: Route, rule: Rule, requested: str, tier: str | None, tiers: TierMap
) -> list[str]:
    """The models the router looked at: the tiers from the one asked for up to the one
    routed in, the policy's ``allowed_models`` for a tierless ``auto``, else the model."""
    asked = tier or TIER_MODELS.get(requested)
    if route.tier is not None and asked is not None:
        names = TIER_NAMES[TIER_NAMES.index(asked) : TIER_NAMES.index(route.tier) + 1]
        return [m for n in names for m in tiers.models(n)]
    if requested in AUTO_MODELS:
        return list(rule.allowed_models)
    return [requested]


def explain(
    route: Route,
    providers: Sequence[Provider],
    served: Collection[str],
    rule: Rule,
    requested: str,
    tier: str | None,
    tiers: TierMap,
    needs: Needs,
    output_tokens_for: Callable[[str], int],
    affords: Callable[[Candidate], bool] | None,
    cooling: Callable[[str], bool],
) -> list[Considered]:
    """Every (provider, listed model) pair considered for ``route``: its candidates in rank
    order (those whose breaker is open marked ``cooling_down``), then the others with the
    first reason that ruled them out. ``served``: names of the providers serving the API."""
    ranked = {(c.provider.name, c.model): c for c in route.candidates}
    cap = rule.max_sats_per_1k_output
    allow = rule.allowed_models
    concrete = requested not in AUTO_MODELS and requested not in TIER_MODELS
    out: list[Considered] = []
    skipped: list[Considered] = []
    for c in route.candidates:
        short = affords is not None and not affords(c)
        why: Skip | None = "cooling_down" if cooling(c.provider.name) else None
        out.append(Considered(c.provider.name, c.model, c.est_cost, why, short))
    seen = set(ranked)
    for m in considered_models(route, rule, requested, tier, tiers):
        for p in providers:
            listed = p.resolve(m)
            if listed is None or (p.name, listed) in seen:
                continue
            seen.add((p.name, listed))
            rates = p.rates_for(listed)
            est = estimate_cost(rates, needs.prompt_tokens, output_tokens_for(m))
            reason: Skip
            if p.name not in served:
                reason = "wrong_api"
            elif cap is not None and rates.output_f > cap:
                reason = "price_cap"
            elif allow and not (concrete and requested in allow) and not allowed(p, listed, allow):
                reason = "not_allowed"
            else:
                bad = misfit(listed, p.model_info.get(listed), needs)
                reason = _MISFIT[bad.code] if bad is not None else "other_model"
            skipped.append(Considered(p.name, listed, est, reason))
    # cooling candidates after the usable ones, as the attempts will skip them
    return [c for c in out if c.skipped is None] + [c for c in out if c.skipped] + skipped
