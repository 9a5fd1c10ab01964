"""Planning a request (the :class:`~arbstr.server.pipeline.ApiHandler`'s pure half): parse,
choose the policy, score ``auto``, route within the tier, stick to the conversation's
provider, keep within the budgets. No I/O: the real route and the ``POST /v1/route`` dry run
plan alike."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from arbstr.apis.base import Api, ApiRequest
from arbstr.config import Provider, Rule
from arbstr.routing import (
    AUTO_MODELS,
    Candidate,
    Route,
    TierMap,
    chosen_tier,
    estimate_input_tokens,
    estimate_output_tokens,
    reservation_for,
    select_policy,
    tier_map,
)
from arbstr.routing.complexity import score
from arbstr.routing.sticky import Sticky, conversation_key, higher_tier, prefer
from arbstr.server.budgets import estimate, within_budgets
from arbstr.server.chat import HotPaths
from arbstr.server.exchange import Exchange
from arbstr.server.pipeline_streams import rid

log = logging.getLogger("arbstr.pipeline")


@dataclass(frozen=True, slots=True)
class Plan:
    """A parsed and routed request: what the real route sends and the dry run explains."""

    request: ApiRequest
    rule: Rule
    route: Route
    tier: str | None  # the tier asked for (header, pseudo-model or score), before any move up
    in_tokens: int
    out_tokens: Callable[[str], int]
    reserve: Callable[[Candidate], int | None]
    affords: Callable[[Candidate], bool] | None


class Planner(HotPaths):
    """Parsing and routing for one API's handler."""

    api: Api
    _parse: Callable[[bytes], ApiRequest]
    _served_from: Sequence[Provider] | None

    def _serve(self, providers: Sequence[Provider]) -> None:
        """The providers that serve this API, natively or through its translation (kept
        until the price book replaces its tuple)."""
        name, via = self.api.name, self.fallback and self.fallback.name
        ok = [p for p in providers if name in p.apis or (via is not None and via in p.apis)]
        self._served = providers if len(ok) == len(providers) else tuple(ok)
        self._served_from = providers
        # each listed model's tier, placed by price: once per price refresh
        self._tiers = tier_map(self.gw.config.tiers, self._served)

    def plan(
        self,
        body: bytes,
        policy_header: str | None,
        tier_header: str | None,
        ex: Exchange,
        session: bytes | None = None,
    ) -> Plan:
        """Parse, choose the policy, score, route (into ``ex`` as it goes). No I/O. Raises
        :class:`ArbstrError` as the route answers it."""
        gw = self.gw
        req = self._parse(body)
        ex.model = req.model
        ex.streaming = req.stream
        rule = select_policy(gw.config.policies, policy_header, req.last_user_text)
        ex.policy = rule.name
        in_tokens = estimate_input_tokens(req.text_chars)
        ex.est_input_tokens = in_tokens
        ratios = gw.ratios
        with_output = req.estimate_output

        def out_tokens(model: str) -> int:
            if not with_output:
                return 0
            return estimate_output_tokens(req.max_tokens, in_tokens, ratios.get(rule.name, model))

        def reserve(c: Candidate) -> int | None:
            # what c's node holds back before forwarding, from its published limits
            return reservation_for(c.provider.model_info.get(c.model), c.rates, req.max_tokens)

        affords = gw.funds.predicate(reserve)  # None (nothing to check) until funds are known
        providers = gw.prices.providers
        if providers is not self._served_from:
            self._serve(providers)
        scored_tier = self._scored(req, ex, rule) if req.model in AUTO_MODELS else None
        tier = chosen_tier(req.model, tier_header, scored_tier)
        conversations = gw.sticky
        key = conversation_key(session, req) if conversations.enabled else None
        stuck = conversations.get(key) if key is not None else None
        if stuck is not None and scored_tier is not None and tier_header is None:
            tier = higher_tier(tier, stuck.tier)  # within a conversation: only upward
        r = self._route(req, rule, in_tokens, out_tokens, affords, tier)
        if key is not None:
            concrete = tier is None and req.model not in AUTO_MODELS
            r = self._stick(ex, key, stuck, r, affords, concrete)
        if gw.budgets.enabled:
            r = self._budgeted(ex, r, req, rule, in_tokens, out_tokens, affords)
        ex.tier = r.tier
        if r.reason is not None:
            log.info("tier: %s", r.reason, extra=rid(ex))
        ex.model = r.model
        ex.est_output_tokens = out_tokens(r.model)
        return Plan(req, rule, r, tier, in_tokens, out_tokens, reserve, affords)

    def _budgeted(
        self,
        ex: Exchange,
        r: Route,
        req: ApiRequest,
        rule: Rule,
        in_tokens: int,
        out_tokens: Callable[[str], int],
        affords: Callable[[Candidate], bool] | None,
    ) -> Route:
        """``r`` within the ``[[budgets]]`` (see :func:`within_budgets`)."""

        def reroute(tier: str) -> Route:
            return self._route(req, rule, in_tokens, out_tokens, affords, tier)

        auto = req.model in AUTO_MODELS
        book = self.gw.budgets
        return within_budgets(book, ex, r, auto, reroute, estimate(in_tokens, out_tokens))

    @property
    def served(self) -> Sequence[Provider]:
        """The providers serving this API (as of the last plan)."""
        return self._served

    @property
    def tiers(self) -> TierMap:
        return self._tiers

    def _stick(
        self,
        ex: Exchange,
        key: bytes,
        stuck: Sticky | None,
        r: Route,
        affords: Callable[[Candidate], bool] | None,
        concrete: bool,
    ) -> Route:
        """The route with the conversation's candidate first when it is usable (see
        :func:`~arbstr.routing.sticky.prefer`), and the verdict for ``x-arbstr-sticky``."""
        ex.sticky_key = key
        if stuck is None:
            ex.sticky = "new"
            return r
        health = self.gw.health

        def usable(c: Candidate) -> bool:
            return health.state(c.provider.name) != "open" and (affords is None or affords(c))

        r, ex.sticky_to = prefer(r, stuck, by_provider_only=concrete, usable=usable)
        ex.sticky = "miss" if ex.sticky_to is None else "hit"
        return r

    def _scored(self, req: ApiRequest, ex: Exchange, rule: Rule) -> str | None:
        """Score an ``auto`` request (into ``ex``, for its headers and row) and say the tier
        it routes within: the scored one, unless the policy names its models and no
        ``[[tiers]]`` are configured (then ``auto`` is the cheapest of those, as always)."""
        c = score(req, self.gw.config.complexity)
        ex.complexity, ex.complexity_reasons = c.score, c.reasons
        if self.gw.config.tiers or not rule.allowed_models:
            return c.tier
        return None
