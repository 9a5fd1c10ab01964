"""Candidate ranking (arbstr.routing.router): cost, ties, caps, allowed models, auto, latency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.config import Provider, Rule, config_from_data
from arbstr.errors import InvalidRequest, NoProvider
from arbstr.money import Rates
from arbstr.routing.pricing import estimate_cost
from arbstr.routing.router import Route, route


def prov(
    name: str,
    models: list[str] | None = None,
    i: float = 10,
    o: float = 30,
    b: float = 0,
    model_rates: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "url": f"https://{name}.example/v1",
        "api_key": "${KEY}",
        "input_rate": i,
        "output_rate": o,
        "base_fee": b,
    }
    if models is not None:
        entry["models"] = models
    if model_rates:
        entry["model_rates"] = model_rates
    return entry


def build(
    providers: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None
) -> tuple[tuple[Provider, ...], dict[str, Rule]]:
    data = {"providers": providers, "policies": {"rules": rules or []}}
    cfg = config_from_data(data, source="<test>", env={"KEY": "sk-0123456789abcdef"})
    return cfg.providers, dict(cfg.policies.by_name)


def go(
    providers: tuple[Provider, ...],
    rule: Rule,
    model: str,
    input_tokens: int = 100,
    output_tokens: int | Mapping[str, int] = 100,
    latency: Mapping[str, float | None] | None = None,
) -> Route:
    def out_for(m: str) -> int:
        return output_tokens if isinstance(output_tokens, int) else output_tokens[m]

    return route(providers, rule, model, input_tokens, out_for, latency or {})


def names(r: Route) -> list[str]:
    return [c.provider.name for c in r.candidates]


# --- lowest cost ---------------------------------------------------------------------------


def test_ranked_by_estimated_cost() -> None:
    ps, rules = build(
        [prov("pricey", i=20, o=60), prov("cheap", i=1, o=2), prov("middle", i=10, o=30, b=1)]
    )
    r = go(ps, rules["default"], "gpt-4o", 1000, 1000)
    assert r.model == "gpt-4o"
    assert names(r) == ["cheap", "middle", "pricey"]
    assert [c.est_cost for c in r.candidates] == [3.0, 41.0, 80.0]
    assert all(c.model == "gpt-4o" for c in r.candidates)


def test_ranking_depends_on_the_token_estimates() -> None:
    # "inny" is cheap on input and dear on output; "outy" the other way round
    ps, rules = build([prov("inny", i=1, o=100), prov("outy", i=100, o=1)])
    assert names(go(ps, rules["default"], "m", 10_000, 10)) == ["inny", "outy"]
    assert names(go(ps, rules["default"], "m", 10, 10_000)) == ["outy", "inny"]


def test_ties_break_by_provider_name() -> None:
    ps, rules = build([prov("zeta"), prov("alpha"), prov("mid")])
    assert names(go(ps, rules["default"], "gpt-4o")) == ["alpha", "mid", "zeta"]


def test_models_empty_or_absent_means_any_model() -> None:
    ps, rules = build([prov("any1"), prov("any2", models=[]), prov("only", models=["x"])])
    assert names(go(ps, rules["default"], "some/new-model")) == ["any1", "any2"]
    assert names(go(ps, rules["default"], "x")) == ["any1", "any2", "only"]


def test_per_model_rates_are_used() -> None:
    ps, rules = build(
        [
            prov(
                "a", models=["big", "small"], i=10, o=30, model_rates={"small": {"output_rate": 1}}
            ),
            prov("b", models=["big", "small"], i=5, o=5),
        ]
    )
    small = go(ps, rules["default"], "small", 100, 1000)
    assert names(small) == ["a", "b"]  # a: 1 + 1 = 2 sats; b: 0.5 + 5 = 5.5
    assert small.candidates[0].rates == Rates.of(10, 1, 0)  # input rate inherited
    assert small.candidates[0].est_cost == pytest.approx(2.0)
    big = go(ps, rules["default"], "big", 100, 1000)
    assert names(big) == ["b", "a"]
    assert big.candidates[1].rates == Rates.of(10, 30, 0)


# --- rules: allowed_models and the price cap -----------------------------------------------


def test_model_outside_allowed_models_is_a_400() -> None:
    ps, rules = build([prov("a")], [{"name": "code", "allowed_models": ["gpt-4o", "claude"]}])
    with pytest.raises(InvalidRequest) as info:
        go(ps, rules["code"], "gpt-4o-mini")
    assert info.value.status == 400
    assert info.value.code == "model_not_allowed"
    assert "'gpt-4o-mini'" in info.value.message
    assert "'code'" in info.value.message
    assert "gpt-4o, claude" in info.value.message
    assert names(go(ps, rules["code"], "claude")) == ["a"]


def test_max_sats_per_1k_output_drops_dearer_providers() -> None:
    ps, rules = build(
        [prov("under", o=49.9), prov("equal", o=50), prov("over", o=50.1)],
        [{"name": "capped", "max_sats_per_1k_output": 50}],
    )
    assert names(go(ps, rules["capped"], "gpt-4o")) == ["under", "equal"]
    assert names(go(ps, rules["default"], "gpt-4o")) == ["under", "equal", "over"]


def test_price_cap_uses_the_per_model_output_rate() -> None:
    ps, rules = build(
        [prov("a", o=100, model_rates={"cheap": {"output_rate": 5}})],
        [{"name": "capped", "max_sats_per_1k_output": 10}],
    )
    assert names(go(ps, rules["capped"], "cheap")) == ["a"]
    with pytest.raises(NoProvider):
        go(ps, rules["capped"], "dear")


def test_no_candidate_is_no_provider_naming_model_and_policy() -> None:
    ps, rules = build(
        [prov("a", models=["gpt-4o"], o=80)], [{"name": "capped", "max_sats_per_1k_output": 50}]
    )
    with pytest.raises(NoProvider) as info:
        go(ps, rules["default"], "llama-3")
    assert info.value.status == 400
    assert info.value.code == "no_provider"
    assert "'llama-3'" in info.value.message
    assert "'default'" in info.value.message
    with pytest.raises(NoProvider) as capped:
        go(ps, rules["capped"], "gpt-4o")
    assert "'gpt-4o'" in capped.value.message
    assert "'capped'" in capped.value.message
    assert "max_sats_per_1k_output = 50" in capped.value.message


def test_no_providers_configured() -> None:
    ps, rules = build([])
    with pytest.raises(NoProvider):
        go(ps, rules["default"], "gpt-4o")


# --- auto ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auto", ["auto", "arbstr/auto"])
def test_auto_picks_the_cheapest_model_and_keeps_only_its_providers(auto: str) -> None:
    ps, rules = build(
        [
            prov(
                "a",
                models=["big", "small"],
                i=10,
                o=30,
                model_rates={"small": {"input_rate": 1, "output_rate": 2}},
            ),
            prov(
                "b",
                models=["big", "small"],
                i=8,
                o=20,
                model_rates={"small": {"input_rate": 2, "output_rate": 3}},
            ),
            prov("c", models=["big"], i=0, o=0.5),
            prov("d", models=["other"], i=0, o=0),
        ],
        [{"name": "pick", "allowed_models": ["big", "small"]}],
    )
    r = go(ps, rules["pick"], auto, 1000, 1000)
    # cheapest pair is (c, big) at 0.5 sats: every candidate serves "big", none "small"
    assert r.model == "big"
    assert names(r) == ["c", "b", "a"]
    assert {c.model for c in r.candidates} == {"big"}


def test_auto_uses_per_model_output_estimates() -> None:
    ps, rules = build(
        [prov("a", models=["chatty"], i=1, o=1), prov("b", models=["terse"], i=1, o=10)],
        [{"name": "pick", "allowed_models": ["chatty", "terse"]}],
    )
    few = go(ps, rules["pick"], "auto", 10, {"chatty": 10_000, "terse": 10})
    assert few.model == "terse"
    many = go(ps, rules["pick"], "auto", 10, {"chatty": 10, "terse": 10_000})
    assert many.model == "chatty"


def test_auto_respects_the_price_cap() -> None:
    ps, rules = build(
        [prov("a", models=["x"], o=1), prov("b", models=["y"], o=0.1, i=1000)],
        [{"name": "pick", "allowed_models": ["x", "y"], "max_sats_per_1k_output": 0.5}],
    )
    r = go(ps, rules["pick"], "auto", 1000, 10)
    assert r.model == "y"
    assert names(r) == ["b"]


def test_auto_ties_break_by_provider_then_model() -> None:
    ps, rules = build(
        [prov("b", models=["m1"]), prov("a", models=["m2", "m1"])],
        [{"name": "pick", "allowed_models": ["m2", "m1"]}],
    )
    r = go(ps, rules["pick"], "auto")
    assert r.model == "m1"  # (a, m1) < (a, m2) < (b, m1), all the same cost
    assert names(r) == ["a", "b"]


def test_auto_without_allowed_models_is_a_400() -> None:
    ps, rules = build([prov("a")])
    with pytest.raises(InvalidRequest) as info:
        go(ps, rules["default"], "auto")
    assert info.value.status == 400
    assert "'default'" in info.value.message
    assert "allowed_models" in info.value.message


def test_auto_with_no_provider_for_any_allowed_model() -> None:
    ps, rules = build([prov("a", models=["x"])], [{"name": "pick", "allowed_models": ["y", "z"]}])
    with pytest.raises(NoProvider) as info:
        go(ps, rules["pick"], "auto")
    assert info.value.code == "no_provider"
    assert "y, z" in info.value.message
    assert "'pick'" in info.value.message


def test_a_concrete_model_is_never_replaced() -> None:
    ps, rules = build(
        [prov("cheap", models=["small"], i=0, o=0), prov("dear", models=["big"], i=99, o=99)],
        [{"name": "pick", "allowed_models": ["small", "big"]}],
    )
    r = go(ps, rules["pick"], "big")
    assert r.model == "big"
    assert names(r) == ["dear"]


# --- lowest latency ------------------------------------------------------------------------


def test_lowest_latency_known_first_ascending_unknown_last_then_cost() -> None:
    ps, rules = build(
        [
            prov("slow", i=1, o=1),
            prov("fast", i=50, o=50),
            prov("unknown-cheap", i=0, o=0),
            prov("unknown-dear", i=90, o=90),
            prov("fast-twin-dear", i=60, o=60),
            prov("fast-twin", i=50, o=50),
        ],
        [{"name": "quick", "strategy": "lowest_latency"}],
    )
    latency: dict[str, float | None] = {
        "slow": 900.0,
        "fast": 20.0,
        "fast-twin": 20.0,
        "fast-twin-dear": 20.0,
        "unknown-dear": None,
    }
    r = go(ps, rules["quick"], "gpt-4o", latency=latency)
    assert names(r) == [
        "fast",  # 20 ms, cost 10, name "fast" < "fast-twin"
        "fast-twin",  # 20 ms, cost 10
        "fast-twin-dear",  # 20 ms, cost 12
        "slow",  # 900 ms
        "unknown-cheap",  # no observation: last, by cost
        "unknown-dear",
    ]
    assert [c.latency_ms for c in r.candidates] == [20.0, 20.0, 20.0, 900.0, None, None]
    # the same providers under lowest_cost ignore latency
    assert names(go(ps, rules["default"], "gpt-4o", latency=latency))[0] == "unknown-cheap"


def test_lowest_latency_as_default_strategy_with_zero_latency() -> None:
    data = {
        "providers": [prov("a"), prov("b", i=0, o=0)],
        "policies": {"default_strategy": "lowest_latency"},
    }
    cfg = config_from_data(data, source="<test>", env={"KEY": "k"})
    r = route(cfg.providers, cfg.policies.default, "m", 10, lambda m: 10, {"a": 0.0})
    assert [c.provider.name for c in r.candidates] == ["a", "b"]


# --- properties ----------------------------------------------------------------------------

rate = st.integers(0, 50).map(lambda n: n / 2)  # few distinct values: plenty of ties
provider_specs = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True),
        st.sampled_from([None, ["m"], ["m", "n"], ["n"]]),
        rate,
        rate,
        rate,
    ),
    max_size=8,
    unique_by=lambda t: t[0],
)


@settings(max_examples=50)
@given(specs=provider_specs, tin=st.integers(1, 10_000), tout=st.integers(1, 10_000))
def test_route_is_sorted_by_cost_then_name_and_a_permutation_of_eligible(
    specs: list[tuple[str, list[str] | None, float, float, float]], tin: int, tout: int
) -> None:
    ps, rules = build([prov(n, models=m, i=i, o=o, b=b) for n, m, i, o, b in specs])
    eligible = sorted(p.name for p in ps if p.models is None or "m" in p.models)
    if not eligible:
        with pytest.raises(NoProvider):
            go(ps, rules["default"], "m", tin, tout)
        return
    r = go(ps, rules["default"], "m", tin, tout)
    assert sorted(names(r)) == eligible
    keys = [(c.est_cost, c.provider.name) for c in r.candidates]
    assert keys == sorted(keys)
    for c in r.candidates:
        assert c.model == "m"
        assert c.est_cost == estimate_cost(c.provider.rates_for("m"), tin, tout)


@settings(max_examples=50)
@given(specs=provider_specs, cap=st.none() | rate, auto=st.booleans())
def test_route_never_mixes_models_and_honours_the_cap(
    specs: list[tuple[str, list[str] | None, float, float, float]],
    cap: float | None,
    auto: bool,
) -> None:
    rule: dict[str, Any] = {"name": "r", "allowed_models": ["m", "n"]}
    if cap is not None:
        rule["max_sats_per_1k_output"] = cap
    ps, rules = build([prov(n, models=m, i=i, o=o, b=b) for n, m, i, o, b in specs], [rule])
    try:
        r = go(ps, rules["r"], "auto" if auto else "n")
    except NoProvider:
        return
    assert len({c.model for c in r.candidates}) == 1
    assert r.model == r.candidates[0].model
    if not auto:
        assert r.model == "n"
    for c in r.candidates:
        assert c.provider.serves(r.model)
        assert cap is None or c.rates.output_f <= cap
    # every provider serving the chosen model within the cap is a candidate
    expected = {
        p.name for p in ps if p.serves(r.model) and (cap is None or p.rates.output_f <= cap)
    }
    assert set(names(r)) == expected
