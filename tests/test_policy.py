"""Policy selection (arbstr.routing.policy): header, then keywords (whole words) or a rule's
keyword_regex in the last user message, then the default rule."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.config import Policies, config_from_data
from arbstr.errors import ConfigError, InvalidRequest
from arbstr.routing.policy import select_policy


def policies(rules: list[dict[str, Any]], default_strategy: str = "lowest_cost") -> Policies:
    data = {"policies": {"default_strategy": default_strategy, "rules": rules}}
    return config_from_data(data, source="<test>", env={}).policies


POLICIES = policies(
    [
        {"name": "code_generation", "keywords": ["Code", "function", "implement"]},
        {"name": "summaries", "keywords": ["summarize", "tl;dr"]},
        {"name": "broad", "keywords": ["e"]},
        {"name": "header_only", "keywords": []},
    ]
)


# --- the X-Arbstr-Policy header ------------------------------------------------------------


def test_header_names_a_rule() -> None:
    rule = select_policy(POLICIES, "summaries", None)
    assert rule.name == "summaries"
    assert rule is POLICIES.by_name["summaries"]


def test_header_default_is_accepted() -> None:
    assert select_policy(POLICIES, "default", "implement it") is POLICIES.default
    assert POLICIES.default.name == "default"


def test_header_wins_over_keywords() -> None:
    assert select_policy(POLICIES, "header_only", "write code to summarize").name == "header_only"


def test_header_surrounding_whitespace_is_ignored() -> None:
    assert select_policy(POLICIES, "  summaries ", None).name == "summaries"


@pytest.mark.parametrize("name", ["nope", "", "Summaries", "code generation"])
def test_unknown_header_is_a_400_naming_the_known_policies(name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        select_policy(POLICIES, name, "write some code")
    err = info.value
    assert err.status == 400
    assert err.code == "unknown_policy"
    assert err.type == "invalid_request_error"
    assert repr(name.strip()) in err.message
    for known in ("broad", "code_generation", "default", "header_only", "summaries"):
        assert known in err.message
    assert b'"code":"unknown_policy"' in err.body()


def test_a_huge_unknown_header_is_not_echoed_in_full() -> None:
    with pytest.raises(InvalidRequest) as info:
        select_policy(POLICIES, "x" * 8000, None)
    assert len(info.value.message) < 300


@given(text=st.text(max_size=30), kw=st.text(alphabet="abc;_-1 ", min_size=1, max_size=4))
def test_whole_word_match_is_what_the_word_boundary_regex_says(text: str, kw: str) -> None:
    kw = kw.strip() or "a"
    p = policies([{"name": "kw", "keywords": [kw]}])
    regex = re.compile(rf"(?<!\w){re.escape(kw)}(?!\w)", re.IGNORECASE)
    expected = regex.search(text.lower()) is not None
    assert (select_policy(p, None, text).name == "kw") == expected


# --- keywords ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["please write CODE", "Implement a parser", "a FuNcTiOn please", "code.", "(code)", "code"],
)
def test_keyword_match_is_a_case_insensitive_whole_word(text: str) -> None:
    assert select_policy(POLICIES, None, text).name == "code_generation"


@pytest.mark.parametrize(
    "text", ["please decode this", "unicode text", "encoder", "implementation", "functions"]
)
def test_keyword_inside_a_word_does_not_match(text: str) -> None:
    assert select_policy(POLICIES, None, text).name != "code_generation"


def test_keyword_with_punctuation_matches_as_written() -> None:
    assert select_policy(POLICIES, None, "TL;DR please").name == "summaries"


def test_keyword_regex_replaces_the_keywords() -> None:
    p = policies([{"name": "sql", "keyword_regex": r"\bselect\b.+\bfrom\b"}])
    assert select_policy(p, None, "SELECT a FROM t").name == "sql"
    assert select_policy(p, None, "please select one") is p.default


def test_an_invalid_keyword_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"policies\.rules\[0\]\.keyword_regex: not a valid"):
        policies([{"name": "bad", "keyword_regex": "(unclosed"}])


def test_first_matching_rule_wins() -> None:
    # "summarize" (rule 2) and "e" (rule 3) both occur; "code" (rule 1) does too
    assert select_policy(POLICIES, None, "summarize the code").name == "code_generation"
    assert select_policy(POLICIES, None, "summarize these").name == "summaries"
    assert select_policy(POLICIES, None, "option e please").name == "broad"
    assert select_policy(POLICIES, None, "hello") is POLICIES.default


def test_rule_order_not_keyword_order_decides() -> None:
    p = policies(
        [
            {"name": "first", "keywords": ["zzz", "apple"]},
            {"name": "second", "keywords": ["a"]},
        ]
    )
    # "a" occurs earlier in the text, but the first rule matches too and comes first
    assert select_policy(p, None, "a big apple").name == "first"


@pytest.mark.parametrize("text", [None, "", "xyz", "123 !?"])
def test_no_keyword_means_default(text: str | None) -> None:
    assert select_policy(POLICIES, None, text) is POLICIES.default


def test_default_rule_carries_the_default_strategy() -> None:
    p = policies([{"name": "r", "keywords": ["x"]}], default_strategy="lowest_latency")
    assert select_policy(p, None, "nothing").strategy == "lowest_latency"
    assert select_policy(p, None, "x").strategy == "lowest_latency"  # inherits


def test_no_rules_at_all() -> None:
    p = policies([])
    assert select_policy(p, None, "code code code") is p.default
    assert select_policy(p, "default", None) is p.default
    with pytest.raises(InvalidRequest):
        select_policy(p, "code_generation", None)


words = st.text(alphabet="bcdfghjklmnpqrstvwxyz ", max_size=40)


@settings(max_examples=50)
@given(before=words, after=words, data=st.data())
def test_keyword_as_a_word_anywhere_in_any_case_selects_the_rule(
    before: str, after: str, data: st.DataObject
) -> None:
    p = policies([{"name": "kw", "keywords": ["Deploy"]}])
    cased = "".join(
        c.upper() if data.draw(st.booleans(), label=f"upper {i}") else c
        for i, c in enumerate("deploy")
    )
    assert select_policy(p, None, f"{before} {cased}, {after}").name == "kw"
    # glued to other letters it is not the word; without it (its vowels are not in the
    # alphabet) nothing matches
    assert select_policy(p, None, f"{before}x{cased}{after}") is p.default
    assert select_policy(p, None, before + after) is p.default
