"""Tier placement (arbstr.routing.tiers) and the [[tiers]] / model_info config sections."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.config import TIER_NAMES, ModelInfo, Tier, config_from_data
from arbstr.errors import ConfigError
from arbstr.routing.tiers import place, tier_map
from arbstr.routstr.prices import apply_prices

RANK = {t: i for i, t in enumerate(TIER_NAMES)}


def load(extra: dict[str, Any]) -> Any:
    data = {
        "providers": [
            {
                "name": "a",
                "url": "https://a.example/v1",
                "models": ["small", "mid", "big", "huge"],
                "output_rate": 10,
                "model_rates": {
                    "small": {"output_rate": 1},
                    "mid": {"output_rate": 5},
                    "big": {"output_rate": 40},
                    "huge": {"output_rate": 90},
                },
            }
        ],
        **extra,
    }
    return config_from_data(data, source="<test>", env={})


def test_config_tiers_resolve_in_order() -> None:
    cfg = load({"tiers": [{"name": "economy", "models": ["small"]}, {"name": "frontier"}]})
    assert cfg.tiers == (Tier("economy", ("small",)), Tier("frontier", ()))


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([{"name": "cheap"}], "tiers[0].name: unknown tier 'cheap'"),
        ([{"name": "economy"}, {"name": "economy"}], "tiers[1].name: tier 'economy' is given"),
        ([{"name": "frontier"}, {"name": "economy"}], "tiers[1].name: tiers must be listed"),
        (
            [{"name": "economy", "models": ["x"]}, {"name": "frontier", "models": ["x"]}],
            "tiers[1].models: model 'x' is already in tier 'economy'",
        ),
    ],
)
def test_config_tier_errors_name_the_field(tiers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load({"tiers": tiers})


def test_model_info_section_overlays_discovered_info() -> None:
    data = {
        "providers": [
            {
                "name": "a",
                "url": "https://a.example/v1",
                "discover": True,
                "model_info": {"m": {"context_length": 8000, "tools": False}},
            }
        ]
    }
    (p,) = config_from_data(data, source="<test>", env={}).providers
    assert p.model_info["m"] == ModelInfo(context_length=8000, tools=False)
    found = {"m": ModelInfo(context_length=128000, input_modalities=("text", "image"))}
    merged = apply_prices(p, {}, found).model_info["m"]
    assert merged.context_length == 8000 and merged.tools is False
    assert merged.input_modalities == ("text", "image")


def test_model_info_section_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="context_length"):
        config_from_data(
            {
                "providers": [
                    {
                        "name": "a",
                        "url": "https://a.example",
                        "model_info": {"m": {"context_length": 0}},
                    }
                ]
            },
            source="<t>",
            env={},
        )


def test_no_tiers_configured_splits_by_price_terciles() -> None:
    got = place((), {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, {})
    assert got.members == {"economy": ("a", "b"), "standard": ("c", "d"), "frontier": ("e", "f")}


def test_equal_prices_still_fill_every_tier_by_name() -> None:
    got = place((), {"gpt-4o": 15, "gpt-4o-mini": 15, "claude-3.5-sonnet": 15}, {})
    assert set(got.members) == set(TIER_NAMES)


def test_untiered_models_go_to_the_tier_whose_prices_bracket_them() -> None:
    cfg = load(
        {
            "tiers": [
                {"name": "economy", "models": ["small"]},
                {"name": "frontier", "models": ["huge"]},
            ]
        }
    )
    got = tier_map(cfg.tiers, cfg.providers)
    # boundary: sqrt(1 * 90) ≈ 9.5: mid (5) is economy, big (40) frontier
    assert got.of == {"small": "economy", "huge": "frontier", "mid": "economy", "big": "frontier"}
    assert got.models("economy") == ("small", "mid")
    assert got.models("standard") == ()


def test_a_configured_model_nobody_lists_stays_in_its_tier() -> None:
    cfg = load({"tiers": [{"name": "standard", "models": ["mid", "elsewhere"]}]})
    got = tier_map(cfg.tiers, cfg.providers)
    assert got.models("standard") == ("small", "mid", "big", "huge", "elsewhere")


rates_st = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.floats(0, 1000, allow_nan=False),
    min_size=1,
    max_size=25,
)


@st.composite
def configured(draw: st.DrawFn) -> tuple[tuple[Tier, ...], dict[str, float]]:
    rates = draw(rates_st)
    names = draw(st.lists(st.sampled_from(TIER_NAMES), unique=True))
    ordered = [t for t in TIER_NAMES if t in names]
    tiers = []
    pool = sorted(rates)
    for t in ordered:
        picked = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
        pool = [m for m in pool if m not in picked]
        tiers.append(Tier(t, tuple(picked)))
    return tuple(tiers), rates


@given(configured())
def test_every_listed_model_gets_exactly_one_tier(
    case: tuple[tuple[Tier, ...], dict[str, float]],
) -> None:
    tiers, rates = case
    got = place(tiers, rates, {})
    assert set(got.of) == set(rates)
    listed = [m for ms in got.members.values() for m in ms if m in rates]
    assert sorted(listed) == sorted(rates)
    for t in tiers:
        for m in t.models:
            assert got.of[m] == t.name  # configured wins


@given(configured())
def test_placement_of_untiered_models_is_monotone_in_price(
    case: tuple[tuple[Tier, ...], dict[str, float]],
) -> None:
    tiers, rates = case
    got = place(tiers, rates, {})
    fixed = {m for t in tiers for m in t.models}
    free = [m for m in rates if m not in fixed]
    for a in free:
        for b in free:
            if rates[a] < rates[b]:
                assert RANK[got.of[a]] <= RANK[got.of[b]]
