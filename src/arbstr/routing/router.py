"""Candidates for a request, ranked. Pure: config + observations in, ranked list out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from arbstr.config import TIER_NAMES, Provider, Rule
from arbstr.errors import InvalidRequest, NoProvider
from arbstr.money import Rates
from arbstr.routing.fit import Misfit, Needs, misfit
from arbstr.routing.pricing import estimate_cost
from arbstr.routing.tiers import EMPTY, TierMap

AUTO_MODELS = frozenset({"auto", "arbstr/auto"})
# pseudo-models that pin a tier
TIER_MODELS: Mapping[str, str] = {f"arbstr/{t}": t for t in TIER_NAMES}


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: Provider
    model: str  # the provider's listed id for the requested model (what goes upstream)
    rates: Rates
    est_cost: float
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class Route:
    model: str  # the concrete model, as the best candidate lists it
    candidates: tuple[Candidate, ...]  # best first
    tier: str | None = None  # the tier routed within (None: no tier applied)
    reason: str | None = None  # why the tier is above the one asked for


def chosen_tier(model: str, header: str | None, scored: str | None) -> str | None:
    """The tier a request routes within: the ``X-Arbstr-Tier`` header, else the one its
    pseudo-model pins, else (for ``auto``) the scorer's; a concrete model has none. Raises
    :class:`InvalidRequest` for an unknown header value."""
    if header is not None and header not in TIER_NAMES:
        raise InvalidRequest(
            f"X-Arbstr-Tier: unknown tier {header!r}; known: {', '.join(TIER_NAMES)}",
            code="invalid_tier",
        )
    pinned = TIER_MODELS.get(model)
    if pinned is None and model not in AUTO_MODELS:
        return None
    return header or pinned or scored


RankKey = tuple[bool, float, float, float, str]


def _rank_key(
    strategy: str, affords: Callable[[Candidate], bool] | None
) -> Callable[[Candidate], RankKey]:
    """Sort key: first whether the provider's key cannot cover the request (``affords``;
    None: nothing known, every candidate can), then cost or latency, then the name."""
    if strategy == "lowest_latency":

        def by_latency(c: Candidate) -> RankKey:
            short = affords is not None and not affords(c)
            known = c.latency_ms is not None
            return (short, 0.0 if known else 1.0, c.latency_ms or 0.0, c.est_cost, c.provider.name)

        return by_latency

    def by_cost(c: Candidate) -> RankKey:
        return (affords is not None and not affords(c), c.est_cost, 0.0, 0.0, c.provider.name)

    return by_cost


def candidates_for_model(
    providers: Sequence[Provider],
    rule: Rule,
    model: str,
    input_tokens: int,
    output_tokens: int,
    latency_ms: Mapping[str, float | None],
) -> list[Candidate]:
    """Providers that serve ``model`` (or an alias of it, :meth:`Provider.resolve`) within the
    rule's price cap, unranked; each candidate's ``model`` is the provider's listed id."""
    out: list[Candidate] = []
    cap = rule.max_sats_per_1k_output
    for p in providers:
        listed = p.resolve(model)
        if listed is None:
            continue
        rates = p.rates_for(listed)
        if cap is not None and rates.output_f > cap:
            continue
        est = estimate_cost(rates, input_tokens, output_tokens)
        out.append(Candidate(p, listed, rates, est, latency_ms.get(p.name)))
    return out


def allowed(p: Provider, listed: str, names: Sequence[str]) -> bool:
    """``p``'s ``listed`` model is one of ``names`` (named by its listed id or by an alias)."""
    return listed in names or any(p.resolve(a) == listed for a in names)


def _allowed(c: Candidate, names: Sequence[str]) -> bool:
    return allowed(c.provider, c.model, names)


def _fitting(found: Sequence[Candidate], needs: Needs) -> tuple[list[Candidate], Misfit | None]:
    """The candidates whose model fits the request, and why the first that does not."""
    if not any(c.provider.model_info for c in found):
        return list(found), None  # nothing is known of any: every one fits (the usual case)
    ok: list[Candidate] = []
    first: Misfit | None = None
    for c in found:
        why = misfit(c.model, c.provider.model_info.get(c.model), needs)
        if why is None:
            ok.append(c)
        elif first is None:
            first = why
    return ok, first


def _unfit(why: Misfit) -> InvalidRequest:
    return InvalidRequest(why.message, code=why.code)


def _tiered(
    providers: Sequence[Provider],
    rule: Rule,
    tier: str,
    tiers: TierMap,
    needs: Needs,
    output_tokens_for: Callable[[str], int],
    latency_ms: Mapping[str, float | None],
    key: Callable[[Candidate], RankKey],
) -> Route:
    """The cheapest fitting model of ``tier`` with every fitting candidate of the tier behind
    it; a tier with none moves the request up a tier (never down), saying so in the reason."""
    skipped: list[str] = []
    first: Misfit | None = None
    allowed = rule.allowed_models
    for name in TIER_NAMES[TIER_NAMES.index(tier) :]:
        pool: list[Candidate] = []
        seen: set[tuple[str, str]] = set()
        for m in tiers.models(name):
            for c in candidates_for_model(
                providers, rule, m, needs.prompt_tokens, output_tokens_for(m), latency_ms
            ):
                if (c.provider.name, c.model) in seen or (allowed and not _allowed(c, allowed)):
                    continue
                seen.add((c.provider.name, c.model))
                pool.append(c)
        ok, why = _fitting(pool, needs)
        if ok:
            ok.sort(key=lambda c: (*key(c), c.model))
            reason = "; ".join(skipped) + f"; routed in tier {name}" if skipped else None
            return Route(ok[0].model, tuple(ok), name, reason)
        first = first or why
        skipped.append(
            f"no model of tier {name} fits ({why.message})"
            if why is not None
            else f"no provider offers a model of tier {name}"
        )
    if first is not None:
        raise _unfit(first)
    raise NoProvider(
        f"no provider offers a model of tier {tier!r} or above under policy {rule.name!r}"
    )


def route(
    providers: Sequence[Provider],
    rule: Rule,
    requested_model: str,
    input_tokens: int,
    output_tokens_for: Callable[[str], int],
    latency_ms: Mapping[str, float | None],
    affords: Callable[[Candidate], bool] | None = None,
    *,
    tier: str | None = None,
    tiers: TierMap = EMPTY,
    max_tokens: int | None = None,
    images: int = 0,
    tools: int = 0,
) -> Route:
    """Rank the candidates for a request.

    A concrete model is never replaced by another. With a ``tier`` (see :func:`chosen_tier`;
    only for ``auto`` and the ``arbstr/<tier>`` pseudo-models) the candidates are every
    provider of every fitting model of that tier in ``tiers``, ranked together (within the
    rule's ``allowed_models`` when it has some). ``auto`` without a tier picks the best
    (provider, model) pair among the rule's ``allowed_models`` and keeps only that model's
    providers for fallback. Models the request does not fit (prompt estimate + ``max_tokens``
    over the context, ``images`` to a text-only model, ``tools`` to one without) are skipped.
    ``affords(candidate)`` (None: no funds known) says whether the provider's key can cover
    the request: those that cannot are ranked after those that can, never dropped.
    Raises :class:`InvalidRequest` / :class:`NoProvider` (both 400).
    """
    key = _rank_key(rule.strategy, affords)
    needs = Needs(input_tokens, max_tokens or 0, images, tools)
    pinned = TIER_MODELS.get(requested_model)
    if pinned is not None or (tier is not None and requested_model in AUTO_MODELS):
        within = tier or pinned
        assert within is not None
        return _tiered(providers, rule, within, tiers, needs, output_tokens_for, latency_ms, key)
    if requested_model in AUTO_MODELS:
        if not rule.allowed_models:
            raise InvalidRequest(
                f"model {requested_model!r} lets arbstr choose among the policy's allowed_models,"
                f" but policy {rule.name!r} has none",
                code="no_provider",
            )
        # one group per allowed model (its aliases may reach the same listed ids: counted once)
        groups: list[list[Candidate]] = []
        seen: set[tuple[str, str]] = set()
        for m in rule.allowed_models:
            group = []
            for c in candidates_for_model(
                providers, rule, m, input_tokens, output_tokens_for(m), latency_ms
            ):
                if (c.provider.name, c.model) not in seen:
                    seen.add((c.provider.name, c.model))
                    group.append(c)
            groups.append(group)
        pool = [c for g in groups for c in g]
        if not pool:
            raise NoProvider(
                f"no provider offers any of {', '.join(rule.allowed_models)}"
                f" under policy {rule.name!r}"
            )
        fits, why = _fitting(pool, needs)
        if not fits:
            assert why is not None
            raise _unfit(why)
        fitting = {id(c) for c in fits}
        groups = [[c for c in g if id(c) in fitting] for g in groups]
        pool = fits
        best = min(pool, key=lambda c: (*key(c), c.model))
        chosen = next(g for g in groups if any(c is best for c in g))
        chosen.sort(key=key)
        return Route(best.model, tuple(chosen))

    found = candidates_for_model(
        providers,
        rule,
        requested_model,
        input_tokens,
        output_tokens_for(requested_model),
        latency_ms,
    )
    allowed = rule.allowed_models
    if allowed and requested_model not in allowed:
        found = [c for c in found if _allowed(c, allowed)]
        if not found:
            raise InvalidRequest(
                f"model {requested_model!r} is not allowed by policy {rule.name!r};"
                f" allowed: {', '.join(allowed)}",
                code="model_not_allowed",
            )
    if not found:
        raise NoProvider(
            f"no provider offers model {requested_model!r} under policy {rule.name!r}"
            + (
                f" (max_sats_per_1k_output = {rule.max_sats_per_1k_output:g})"
                if rule.max_sats_per_1k_output is not None
                else ""
            )
        )
    fits, why = _fitting(found, needs)
    if not fits:
        assert why is not None
        raise _unfit(why)
    found = fits
    found.sort(key=key)
    return Route(found[0].model, tuple(found))
