"""Pure routing decisions: which policy rule (``policy``), what a request costs and is
estimated to cost (``pricing``), which providers in which order (``router``), whether and how
to retry (``retry``), each provider's breaker state (``health``) and what its key can pay
(``funds``). No I/O."""

from arbstr.routing.funds import FundsBoard, reservation_for, reservation_msats
from arbstr.routing.health import HealthBoard
from arbstr.routing.policy import select_policy
from arbstr.routing.pricing import (
    cost_msats,
    estimate_cost,
    estimate_input_tokens,
    estimate_output_tokens,
)
from arbstr.routing.retry import Fail, Failure, Fallback, Retry, decide
from arbstr.routing.router import AUTO_MODELS, TIER_MODELS, Candidate, Route, chosen_tier, route
from arbstr.routing.tiers import TierMap, tier_map

__all__ = [
    "AUTO_MODELS",
    "TIER_MODELS",
    "Candidate",
    "Fail",
    "Failure",
    "Fallback",
    "FundsBoard",
    "HealthBoard",
    "Retry",
    "Route",
    "TierMap",
    "chosen_tier",
    "cost_msats",
    "decide",
    "estimate_cost",
    "estimate_input_tokens",
    "estimate_output_tokens",
    "reservation_for",
    "reservation_msats",
    "route",
    "select_policy",
    "tier_map",
]
