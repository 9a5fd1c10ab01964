"""Routing within a tier (arbstr.routing.router with a TierMap): cheapest fitting model,
every model of the tier as fallback, upward-only moves, fit errors, the tier header's value."""

from __future__ import annotations

from typing import Any

import pytest

from arbstr.config import Provider, Rule, config_from_data
from arbstr.errors import InvalidRequest, NoProvider
from arbstr.routing import chosen_tier, route, tier_map
from arbstr.routing.router import Route
from arbstr.routing.tiers import TierMap

MODELS = {
    "tiny": {"output_rate": 1},
    "small": {"output_rate": 2},
    "mid": {"output_rate": 10},
    "big": {"output_rate": 50},
}


def setup(
    model_info: dict[str, dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> tuple[tuple[Provider, ...], dict[str, Rule], TierMap]:
    def prov(name: str, fee: float) -> dict[str, Any]:
        return {
            "name": name,
            "url": f"https://{name}.example/v1",
            "models": list(MODELS),
            "base_fee": fee,
            "model_rates": MODELS,
            "model_info": model_info or {},
        }

    data = {
        "providers": [prov("a", 0), prov("b", 1)],
        "tiers": [
            {"name": "economy", "models": ["tiny", "small"]},
            {"name": "standard", "models": ["mid"]},
            {"name": "frontier", "models": ["big"]},
        ],
        "policies": {"rules": rules or []},
    }
    cfg = config_from_data(data, source="<t>", env={})
    return cfg.providers, dict(cfg.policies.by_name), tier_map(cfg.tiers, cfg.providers)


def go(
    providers: tuple[Provider, ...],
    rule: Rule,
    model: str,
    tiers: TierMap,
    tier: str | None = None,
    prompt: int = 100,
    images: int = 0,
    tools: int = 0,
) -> Route:
    return route(
        providers,
        rule,
        model,
        prompt,
        lambda m: 100,
        {},
        tier=tier,
        tiers=tiers,
        images=images,
        tools=tools,
    )


def pairs(r: Route) -> list[tuple[str, str]]:
    return [(c.provider.name, c.model) for c in r.candidates]


def test_pinned_tier_picks_the_cheapest_model_and_falls_back_across_the_tier() -> None:
    providers, rules, tiers = setup()
    r = go(providers, rules["default"], "arbstr/economy", tiers)
    assert r.model == "tiny" and r.tier == "economy" and r.reason is None
    assert pairs(r) == [("a", "tiny"), ("a", "small"), ("b", "tiny"), ("b", "small")]


def test_auto_takes_the_given_tier_and_none_is_plain_auto() -> None:
    providers, rules, tiers = setup(rules=[{"name": "r", "allowed_models": ["big", "mid"]}])
    r = go(providers, rules["default"], "auto", tiers, tier="standard")
    assert r.model == "mid" and r.tier == "standard"
    plain = go(providers, rules["r"], "auto", tiers)
    assert plain.model == "mid" and plain.tier is None


def test_a_tier_is_intersected_with_the_policys_allowed_models() -> None:
    providers, rules, tiers = setup(rules=[{"name": "r", "allowed_models": ["small", "big"]}])
    r = go(providers, rules["r"], "arbstr/economy", tiers)
    assert {m for _, m in pairs(r)} == {"small"}


def test_no_fitting_model_moves_up_a_tier_never_down() -> None:
    providers, rules, tiers = setup(
        {"tiny": {"context_length": 8000}, "small": {"context_length": 8000}}
    )
    r = go(providers, rules["default"], "arbstr/economy", tiers, prompt=100_000)
    assert r.tier == "standard" and r.model == "mid"
    assert r.reason is not None and "economy" in r.reason and "standard" in r.reason
    # frontier never falls down to standard or economy
    providers, rules, tiers = setup({"big": {"context_length": 8000}})
    with pytest.raises(InvalidRequest) as err:
        go(providers, rules["default"], "arbstr/frontier", tiers, prompt=100_000)
    assert err.value.code == "context_length_exceeded" and "'big'" in err.value.message


def test_unfit_models_are_skipped_within_the_tier() -> None:
    providers, rules, tiers = setup({"tiny": {"input_modalities": ["text"]}})
    r = go(providers, rules["default"], "arbstr/economy", tiers, images=1)
    assert {m for _, m in pairs(r)} == {"small"} and r.tier == "economy"


def test_a_concrete_model_that_cannot_fit_is_a_400_naming_it() -> None:
    providers, rules, tiers = setup({"tiny": {"context_length": 8192}, "mid": {"tools": False}})
    with pytest.raises(InvalidRequest) as err:
        go(providers, rules["default"], "tiny", tiers, prompt=100_000)
    assert err.value.status == 400 and err.value.code == "context_length_exceeded"
    assert "'tiny'" in err.value.message and "8192" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        go(providers, rules["default"], "mid", tiers, tools=2)
    assert err.value.code == "unsupported_input"
    ok = go(providers, rules["default"], "tiny", tiers, prompt=100)
    assert ok.model == "tiny" and ok.tier is None


def test_auto_without_tier_skips_unfit_models() -> None:
    providers, rules, tiers = setup(
        {"mid": {"context_length": 8000}},
        rules=[{"name": "r", "allowed_models": ["mid", "big"]}],
    )
    assert go(providers, rules["r"], "auto", tiers, prompt=100_000).model == "big"


def test_an_empty_tier_moves_up_and_none_above_is_no_provider() -> None:
    providers, rules, _ = setup()
    only_cheap = TierMap({"tiny": "economy"}, {"economy": ("tiny",)})
    with pytest.raises(NoProvider):
        go(providers, rules["default"], "arbstr/standard", only_cheap)
    r = go(providers, rules["default"], "arbstr/economy", only_cheap)
    assert r.model == "tiny"


def test_chosen_tier() -> None:
    assert chosen_tier("auto", None, None) is None
    assert chosen_tier("auto", None, "standard") == "standard"
    assert chosen_tier("arbstr/economy", None, "frontier") == "economy"  # the pin wins
    assert chosen_tier("arbstr/economy", "frontier", None) == "frontier"  # the header wins
    assert chosen_tier("gpt-4o", "frontier", "standard") is None  # concrete: never replaced
    with pytest.raises(InvalidRequest) as err:
        chosen_tier("auto", "premium", None)
    assert err.value.status == 400 and "premium" in err.value.message
