"""Candidates for a request, ranked. Pure: config + observations in, ranked list out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from arbstr.config import Provider, Rule
from arbstr.errors import InvalidRequest, NoProvider
from arbstr.money import Rates
from arbstr.routing.pricing import estimate_cost

AUTO_MODELS = frozenset({"auto", "arbstr/auto"})


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


def _allowed(c: Candidate, allowed: Sequence[str]) -> bool:
    """``c`` serves one of ``allowed`` (named by its listed id or by an alias)."""
    return any(c.provider.resolve(a) == c.model for a in allowed)


def route(
    providers: Sequence[Provider],
    rule: Rule,
    requested_model: str,
    input_tokens: int,
    output_tokens_for: Callable[[str], int],
    latency_ms: Mapping[str, float | None],
    affords: Callable[[Candidate], bool] | None = None,
) -> Route:
    """Rank the candidates for a request.

    A concrete model is never replaced by another; ``auto`` picks the best (provider, model)
    pair among the rule's ``allowed_models`` and keeps only that model's providers for
    fallback. ``affords(candidate)`` (None: no funds known) says whether the provider's key
    can cover the request: those that cannot are ranked after those that can, never dropped.
    Raises :class:`InvalidRequest` / :class:`NoProvider` (both 400).
    """
    key = _rank_key(rule.strategy, affords)
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
    found.sort(key=key)
    return Route(found[0].model, tuple(found))
