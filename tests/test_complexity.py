"""The complexity scorer (pure), its ``[complexity]`` config, and the request features the
chat, Responses and Messages parsers count for it."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.apis.base import ApiRequest, RequestFeatures
from arbstr.apis.chat import parse_chat
from arbstr.apis.messages import parse_messages
from arbstr.apis.responses import parse_responses
from arbstr.config.complexity import DEFAULT_WEIGHTS, SIGNALS, ComplexitySettings
from arbstr.config.load import config_from_data
from arbstr.errors import ConfigError
from arbstr.routing.complexity import score

enc = msgspec.json.encode
S = ComplexitySettings()


def req(text: str = "hi", chars: int | None = None, **features: Any) -> ApiRequest:
    return ApiRequest(
        api="chat",
        model="m",
        stream=False,
        text_chars=len(text) if chars is None else chars,
        last_user_text=text,
        max_tokens=None,
        features=RequestFeatures(**features),
    )


def chat(text: str, **body: Any) -> ApiRequest:
    return parse_chat(enc({"model": "m", "messages": [{"role": "user", "content": text}], **body}))


# -- examples -----------------------------------------------------------------------------------


def test_say_hi_is_economy() -> None:
    c = score(chat("say hi"), S)
    assert c.tier == "economy" and c.reasons == ()


def test_a_code_review_with_paths_and_tools_is_frontier() -> None:
    code = "```python\n" + "def f(x):\n    return x + 1\n" * 3000 + "```\n"
    text = (
        f"Review src/arbstr/routing/router.py and ./tests/test_router.py:\n{code}```diff\n-a\n```"
    )
    tools = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(12)]
    c = score(chat(text, tools=tools), S)
    assert c.tier == "frontier"
    assert c.reasons[0].startswith("long prompt (2") and "code" in c.reasons


def test_a_proof_is_at_least_standard() -> None:
    c = score(chat("Prove that the square root of 2 is irrational."), S)
    assert c.tier in ("standard", "frontier") and c.reasons == ("reasoning",)


def test_reasons_name_the_counts() -> None:
    c = score(req("x", tools=12, turns=40), S)
    assert set(c.reasons) == {"tools (12)", "deep conversation (40 turns)"}
    assert score(req("x", chars=4 * 31_000), S).reasons == ("long prompt (31k tokens)",)


def test_markers_are_words_not_substrings() -> None:
    assert score(req("improve this sentence"), S).reasons == ()  # "improve" is not "prove"
    assert score(req("why?"), S).reasons == ("reasoning",)
    assert score(req("solve $$x^2 = \\frac{1}{2}$$"), S).reasons == ("math",)
    assert score(req("see https://example.com/a.html"), S).reasons == ()  # a URL, not a path
    assert score(req("open C:\\Users\\me"), S).reasons == ("file paths",)


# -- properties ---------------------------------------------------------------------------------

_TEXTS = st.text(st.sampled_from("ab \n`/.$\\?why provemath"), max_size=300)
_FEATURES = st.fixed_dictionaries(
    {
        "turns": st.integers(0, 200),
        "tools": st.integers(0, 50),
        "tool_results": st.integers(0, 20),
        "images": st.integers(0, 5),
        "response_format": st.sampled_from([None, "json_object", "json_schema"]),
        "tool_choice_required": st.booleans(),
    }
)
_ADDITIONS: list[tuple[str, dict[str, Any], str]] = [
    # (feature raised, features to add, text to append)
    ("tools", {"tools": 8}, ""),
    ("tool_results", {"tool_results": 3}, ""),
    ("images", {"images": 1}, ""),
    ("turns", {"turns": 30}, ""),
    ("tool_choice", {"tool_choice_required": True}, ""),
    ("reasoning", {}, " prove it step by step"),
    ("math", {}, " the integral $$\\frac12$$"),
    ("code", {}, "\n```py\nx\n```\n"),
    ("paths", {}, " src/x.py"),
]


@given(_TEXTS, st.integers(0, 1_000_000), _FEATURES)
@settings(max_examples=200)
def test_deterministic_and_in_range(text: str, chars: int, features: dict[str, Any]) -> None:
    r = req(text, chars, **features)
    c = score(r, S)
    assert 0.0 <= c.score <= 1.0
    assert c == score(r, S) == score(req(text, chars, **features), S)
    assert len(c.reasons) <= 3
    assert c.tier == ("economy" if c.score < 0.35 else "frontier" if c.score >= 0.7 else "standard")


@given(_TEXTS, st.integers(0, 500_000), st.integers(0, 500_000), _FEATURES)
def test_monotone_in_prompt_size(text: str, a: int, b: int, features: dict[str, Any]) -> None:
    small, large = sorted((a, b))
    assert (
        score(req(text, small, **features), S).score <= score(req(text, large, **features), S).score
    )


@given(_TEXTS, st.integers(0, 200_000), _FEATURES, st.sampled_from(_ADDITIONS))
def test_monotone_in_each_signal(
    text: str, chars: int, features: dict[str, Any], addition: tuple[str, dict[str, Any], str]
) -> None:
    _, more, suffix = addition
    raised = {
        k: max(v, features[k]) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in more.items()
    }
    before = score(req(text, chars, **features), S).score
    after = score(req(text + suffix, chars, **{**features, **raised}), S).score
    assert after >= before


@given(st.dictionaries(st.sampled_from(SIGNALS), st.floats(0, 10), min_size=1), _FEATURES)
def test_reasons_in_order_of_weight(weights: dict[str, float], features: dict[str, Any]) -> None:
    s = ComplexitySettings(weights={**DEFAULT_WEIGHTS, **weights})
    text = "Why? prove the integral $$x$$ in src/a.py\n```\nx\n```"
    c = score(req(text, 4 * 20_000, **features), s)
    contributions = [_contribution(reason, text, features, s) for reason in c.reasons]
    assert contributions == sorted(contributions, reverse=True)


def _contribution(reason: str, text: str, features: dict[str, Any], s: ComplexitySettings) -> float:
    """The weight times strength behind one reason, read back by zeroing every other weight."""
    for name in SIGNALS:
        only = ComplexitySettings(
            weights={n: (s.weights[n] if n == name else 0.0) for n in SIGNALS}
        )
        c = score(req(text, 4 * 20_000, **features), only)
        if c.reasons == (reason,):
            return -math.log(1.0 - c.score) if c.score < 1 else float("inf")
    raise AssertionError(reason)


# -- config -------------------------------------------------------------------------------------


def test_config_defaults_and_overrides() -> None:
    assert config_from_data({}, source="c").complexity == ComplexitySettings()
    cfg = config_from_data(
        {"complexity": {"weights": {"code": 2.5}, "economy_below": 0.2, "frontier_from": 0.9}},
        source="c",
    ).complexity
    assert cfg.weights["code"] == 2.5 and cfg.weights["math"] == DEFAULT_WEIGHTS["math"]
    assert (cfg.economy_below, cfg.frontier_from) == (0.2, 0.9)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"weights": {"cod": 1.0}}, "complexity.weights.cod: unknown signal"),
        ({"weights": {"code": 1.0, "math": -1.0}}, "complexity.weights.math:"),
        ({"weights": {"code": "high"}}, "complexity.weights.code:"),
        ({"economy_below": 1.5}, "complexity.economy_below:"),
        ({"economy_below": 0.8, "frontier_from": 0.5}, "complexity.frontier_from: must be >"),
        ({"tiers": 3}, "complexity.tiers: unknown key"),
    ],
)
def test_config_errors_name_the_field(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match="^c: " + field.replace(".", r"\.")):
        config_from_data({"complexity": section}, source="c")


# -- parser features ----------------------------------------------------------------------------


def test_chat_features() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be exact"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "1", "content": "42"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}] * 3,
        "tool_choice": "required",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
    }
    assert parse_chat(enc(body)).features == RequestFeatures(
        turns=4,
        tools=3,
        tool_results=1,
        images=2,
        response_format="json_schema",
        tool_choice_required=True,
        system_text="be exact",
        first_user_text="what is this",
    )


@pytest.mark.parametrize(
    ("choice", "required"),
    [
        ("auto", False),
        ("none", False),
        ("required", True),
        ({"type": "function", "function": {"name": "f"}}, True),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}, True),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}, False),
        (7, False),
    ],
)
def test_chat_tool_choice(choice: Any, required: bool) -> None:
    assert chat("x", tool_choice=choice).features.tool_choice_required is required


def test_chat_odd_optional_fields_are_absent_features() -> None:
    f = chat("x", tools={"not": "a list"}, response_format="json", tool_choice=None).features
    assert (f.tools, f.response_format, f.tool_choice_required) == (0, None, False)
    assert (
        chat("x", response_format={"type": "json_object"}).features.response_format == "json_object"
    )
    assert chat("x", response_format={"type": "text"}).features.response_format is None


def test_responses_features() -> None:
    body = {
        "model": "m",
        "instructions": "be exact",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:,"},
                ],
            },
            {"type": "function_call", "call_id": "1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "1", "output": "42"},
        ],
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
    }
    assert parse_responses(enc(body)).features == RequestFeatures(
        turns=3,
        tools=2,
        tool_results=1,
        images=1,
        response_format="json_schema",
        tool_choice_required=True,
        system_text="be exact",
        first_user_text="look",
    )
    plain = parse_responses(enc({"model": "m", "input": "hi", "tool_choice": "auto"})).features
    assert plain == RequestFeatures(turns=1, first_user_text="hi")


def test_messages_features() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "be exact"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "data": ""}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "1", "content": "42"}],
            },
        ],
        "tools": [{"name": "f", "input_schema": {}}],
        "tool_choice": {"type": "any"},
    }
    assert parse_messages(enc(body)).features == RequestFeatures(
        turns=3,
        tools=1,
        tool_results=1,
        images=1,
        tool_choice_required=True,
        system_text="be exact",
        first_user_text="look",
    )
    for choice, required in (({"type": "auto"}, False), ({"type": "tool", "name": "f"}, True)):
        body["tool_choice"] = choice
        assert parse_messages(enc(body)).features.tool_choice_required is required
