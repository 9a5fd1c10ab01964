"""The complexity scorer's settings (``[complexity]``): a weight per signal and the two tier
thresholds. Resolved by the loader; read by :mod:`arbstr.routing.complexity`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from arbstr.config.schema import ComplexitySection
from arbstr.errors import ConfigError

# signal name -> default weight (the scorer's signals, in the order ties are broken)
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "prompt_size": 1.0,
        "reasoning": 1.0,
        "math": 0.8,
        "code": 0.8,
        "file_paths": 0.4,
        "tools": 0.5,
        "tool_results": 0.4,
        "conversation": 0.5,
        "images": 0.3,
        "json_output": 0.2,
        "tool_choice": 0.2,
    }
)
SIGNALS = tuple(DEFAULT_WEIGHTS)
DEFAULT_ECONOMY_BELOW = 0.35
DEFAULT_FRONTIER_FROM = 0.70


@dataclass(frozen=True, slots=True)
class ComplexitySettings:
    """Weights of every signal (all of :data:`SIGNALS`) and the tier thresholds: a score
    below ``economy_below`` is economy, from ``frontier_from`` on frontier, else standard."""

    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    economy_below: float = DEFAULT_ECONOMY_BELOW
    frontier_from: float = DEFAULT_FRONTIER_FROM


DEFAULT_COMPLEXITY = ComplexitySettings()


def resolve_complexity(
    section: ComplexitySection, fail: Callable[[str, str], ConfigError]
) -> ComplexitySettings:
    """``[complexity]`` over the defaults; unknown signal names and crossed thresholds fail."""
    weights = dict(DEFAULT_WEIGHTS)
    for name, weight in section.weights.items():
        if name not in weights:
            raise fail(f"complexity.weights.{name}", f"unknown signal; known: {', '.join(SIGNALS)}")
        weights[name] = weight
    if section.frontier_from <= section.economy_below:
        raise fail("complexity.frontier_from", "must be > complexity.economy_below")
    return ComplexitySettings(
        weights=MappingProxyType(weights),
        economy_below=section.economy_below,
        frontier_from=section.frontier_from,
    )
