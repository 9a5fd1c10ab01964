"""Escalation on the answer path: a tiered answer (``auto`` or ``arbstr/<tier>``) below
frontier that shows a failure signal (:mod:`arbstr.routing.escalation`), under a rule with
``escalate = true``, is re-asked one tier up, at most once per tier; the client gets the last
answer that came back. Every attempt keeps its own row: the re-asked one its real outcome and
cost with ``escalated: <reason>``, each re-ask a new request id with ``escalated_from`` and
``escalation``. A re-ask that fails (or finds no tier to go to) leaves the previous answer as
the client's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arbstr.apis.base import ApiRequest
from arbstr.config import Provider, Rule
from arbstr.errors import ArbstrError
from arbstr.routing import Candidate, Route, TierMap, estimate_output_tokens, route
from arbstr.routing.budgets import Admission
from arbstr.routing.escalation import next_tier, signal
from arbstr.server.budgets import admitted_reask, estimate, hold
from arbstr.server.charge import Charge
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.exchange import Exchange, header_value
from arbstr.server.http import Message
from arbstr.server.ids import iso_now, new_request_id
from arbstr.server.outcome import billed_estimate, failed
from arbstr.server.pipeline_streams import Prepared, StreamsMixin, rid
from arbstr.upstream.client import JsonReply

log = logging.getLogger("arbstr.pipeline")


@dataclass(slots=True)
class Answer:
    """One JSON answer as the client would get it, with its cost."""

    cand: Candidate
    reply: JsonReply
    charge: Charge
    body: bytes
    ctype: str
    in_tok: int
    out_tok: int


def escalated_header(trail: list[Exchange], delivered: Exchange) -> bytes:
    """``x-arbstr-escalated``: each hop up to the delivered answer, e.g.
    ``economy->standard (invalid_json)``."""
    hops: list[str] = []
    for prev, e in itertools.pairwise(trail):
        if prev is delivered:
            break
        hops.append(f"{prev.tier}->{e.tier} ({e.escalation})")
    return header_value(", ".join(hops))


async def _discard(message: Message) -> None:
    """The send of a re-ask: a failed re-ask's error is recorded, not sent."""


class Escalations(StreamsMixin):
    _served: Sequence[Provider]
    _tiers: TierMap

    if TYPE_CHECKING:

        def _answer(self, ex: Exchange, cand: Candidate, reply: JsonReply) -> Answer: ...

        def _answered(
            self, prep: Prepared, ex: Exchange, a: Answer, message: str | None = None
        ) -> None: ...

    def _route(
        self,
        req: ApiRequest,
        rule: Rule,
        in_tokens: int,
        out_tokens: Callable[[str], int],
        affords: Callable[[Candidate], bool] | None,
        tier: str | None,
    ) -> Route:
        """``req`` ranked among the providers serving this API (within ``tier``, if any)."""
        return route(
            self._served,
            rule,
            req.model,
            in_tokens,
            out_tokens,
            self.gw.health.latency_ms,
            affords,
            tier=tier,
            tiers=self._tiers,
            max_tokens=req.max_tokens,
            images=req.features.images,
            tools=req.features.tools,
        )

    def _rerouted(
        self, prep: Prepared, rule: Rule, in_tokens: int, tier: str
    ) -> tuple[Route, Admission | None] | None:
        """The request routed again within ``tier``, with what the budgets admitted of it
        (None: nothing there fits, or the budgets refuse it)."""
        gw = self.gw
        req = prep.request
        with_output = req.estimate_output

        def out_tokens(model: str) -> int:
            if not with_output:
                return 0
            learned = gw.ratios.get(rule.name, model)
            return estimate_output_tokens(req.max_tokens, in_tokens, learned)

        try:
            r = self._route(
                req, rule, in_tokens, out_tokens, gw.funds.predicate(prep.reserve), tier
            )
        except ArbstrError:
            return None
        book = gw.budgets
        if not book.enabled:
            return r, None
        up = admitted_reask(book, rule.name, r, estimate(in_tokens, out_tokens))
        if up is None:
            log.info("escalation to %s: not within the budgets", tier)
        return up

    async def _escalated(
        self,
        prep: Prepared,
        answer: Answer,
        watch: DisconnectWatch,
        trail: list[Exchange],
        rule: Rule,
    ) -> tuple[Prepared, Exchange, Answer]:
        """Re-ask while the answer shows a failure signal and a tier above is left; returns
        the request, exchange and answer the client gets (``trail`` gains each re-ask)."""
        ex = trail[-1]
        while True:
            up = next_tier(ex.tier)
            if up is None:
                return prep, ex, answer
            reason = signal(self.api.name, answer.body, prep.request)
            if reason is None:
                return prep, ex, answer
            routed = self._rerouted(prep, rule, ex.est_input_tokens, up)
            if routed is None:
                log.info("escalation (%s): no tier above %s fits", reason, ex.tier, extra=rid(ex))
                return prep, ex, answer
            self._answered(prep, ex, answer, f"escalated: {reason}")
            r = routed[0]
            nxt, again = self._reask(prep, ex, routed, reason)
            trail.append(nxt)
            try:
                delivered = await self._attempts(again, nxt, _discard, watch, False)
            except asyncio.CancelledError:
                if watch.gone and not nxt.recorded:
                    self._record(nxt, failed(499, "client disconnected", billed_estimate(nxt, r)))
                raise
            if delivered is None:  # its failure is recorded; the previous answer stands
                return prep, ex, answer
            cand, reply = delivered
            assert isinstance(reply, JsonReply)
            prep, ex, answer = again, nxt, self._answer(nxt, cand, reply)

    def _reask(
        self, prep: Prepared, ex: Exchange, routed: tuple[Route, Admission | None], reason: str
    ) -> tuple[Exchange, Prepared]:
        """The re-ask of ``ex`` on the route of ``routed`` (one tier up), holding what the
        budgets admitted of it: its own exchange, which names the one it escalates, and the
        request prepared for that route."""
        r, adm = routed
        nxt = Exchange(new_request_id(), time.perf_counter(), iso_now(), ex.api)
        nxt.model = r.model
        nxt.policy = ex.policy
        nxt.tier = r.tier
        nxt.complexity, nxt.complexity_reasons = ex.complexity, ex.complexity_reasons
        nxt.streaming = ex.streaming
        nxt.est_input_tokens = ex.est_input_tokens
        nxt.est_output_tokens = ex.est_output_tokens
        nxt.escalated_from = ex.request_id
        nxt.escalation = reason
        if adm is not None:
            nxt.budget_admission = adm
            hold(self.gw.budgets, nxt)
        log.info(
            "escalated %s->%s (%s) as %s", ex.tier, r.tier, reason, nxt.request_id, extra=rid(ex)
        )
        again = Prepared(
            self.api,
            self.api.upstream_body(prep.original, prep.request, r.model),
            prep.request,
            r,
            prep.original,
            prep.reserve,
            prep.extra_head,
        )
        return nxt, again
