"""What the built-in mock providers are, and a config that points at started ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arbstr.mock.server import MockProvider


@dataclass(frozen=True)
class MockSpec:
    """One mock provider: its name, the models it serves and its advertised prices."""

    name: str
    models: tuple[str, ...]
    input_rate: float  # sats per 1000 input tokens
    output_rate: float  # sats per 1000 output tokens
    base_fee: float  # sats per request


MOCK_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet")
MOCK_TIERS = (
    ("economy", ("gpt-4o-mini",)),
    ("standard", ("gpt-4o",)),
    ("frontier", ("claude-3.5-sonnet",)),
)

# mock-alpha is cheaper than mock-beta on every rate, hence for every model and request.
DEFAULT_MOCKS: tuple[MockSpec, ...] = (
    MockSpec("mock-alpha", MOCK_MODELS, input_rate=5.0, output_rate=15.0, base_fee=0.0),
    MockSpec("mock-beta", MOCK_MODELS, input_rate=8.0, output_rate=24.0, base_fee=1.0),
)


def mock_config_data(providers: Sequence[MockProvider]) -> dict[str, Any]:
    """A config dict, shaped like the TOML config file, for the given started mocks."""
    models: list[str] = []
    for provider in providers:
        models.extend(m for m in provider.spec.models if m not in models)
    code_models = [m for m in ("claude-3.5-sonnet", "gpt-4o") if m in models]
    rules: list[dict[str, Any]] = [
        {
            "name": "code_generation",
            "allowed_models": code_models or models,
            "strategy": "lowest_cost",
            "max_sats_per_1k_output": 50,
            "keywords": ["code", "function", "implement"],
        },
        {
            "name": "cheap",
            "allowed_models": [m for m in ("gpt-4o-mini",) if m in models] or models,
            "strategy": "lowest_cost",
            "keywords": [],
        },
    ]
    return {
        "providers": [
            {
                "name": p.spec.name,
                "url": p.url,
                "api_key": f"sk-mock-{p.spec.name}",
                "models": list(p.spec.models),
                "input_rate": p.spec.input_rate,
                "output_rate": p.spec.output_rate,
                "base_fee": p.spec.base_fee,
            }
            for p in providers
        ],
        "policies": {"default_strategy": "lowest_cost", "rules": rules},
        # the mock's models cost the same; tiers say what they stand for
        "tiers": [
            {"name": name, "models": [m for m in tier_models if m in models]}
            for name, tier_models in MOCK_TIERS
            if any(m in models for m in tier_models)
        ],
    }
