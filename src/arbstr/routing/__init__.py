"""Pure routing decisions: which policy rule (``policy``), what a request costs and is
estimated to cost (``pricing``), which providers in which order (``router``), whether and how
to retry (``retry``), and each provider's breaker state (``health``). No I/O."""

from arbstr.routing.health import HealthBoard
from arbstr.routing.policy import select_policy
from arbstr.routing.pricing import (
    cost_msats,
    estimate_cost,
    estimate_input_tokens,
    estimate_output_tokens,
)
from arbstr.routing.retry import Fail, Failure, Fallback, Retry, decide
from arbstr.routing.router import AUTO_MODELS, Candidate, Route, route

__all__ = [
    "AUTO_MODELS",
    "Candidate",
    "Fail",
    "Failure",
    "Fallback",
    "HealthBoard",
    "Retry",
    "Route",
    "cost_msats",
    "decide",
    "estimate_cost",
    "estimate_input_tokens",
    "estimate_output_tokens",
    "route",
    "select_policy",
]
