"""Conversation stickiness, the pure parts: keys, the bounded map, upward-only tiers and the
reordering of a route."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from arbstr.apis.chat import CHAT
from arbstr.apis.messages import MESSAGES
from arbstr.apis.responses import RESPONSES
from arbstr.config import Provider
from arbstr.money import Rates
from arbstr.routing import Candidate, Route
from arbstr.routing.sticky import (
    MAX_PREFIX_CHARS,
    Conversations,
    Sticky,
    conversation_key,
    higher_tier,
    prefer,
)
from harness import make_config, provider


def chat(model: str, system: str | None, *turns: str) -> Any:
    msgs: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return CHAT.parse(json.dumps({"model": model, "messages": msgs}).encode())


texts = st.text(min_size=1, max_size=300)


@given(texts, texts, texts, texts)
def test_the_same_prefix_gives_the_same_key(system: str, first: str, a: str, b: str) -> None:
    k1 = conversation_key(None, chat("gpt-4o", system, first))
    k2 = conversation_key(None, chat("gpt-4o", system, first, a, b))
    assert k1 is not None and k1 == k2 and len(k1) == 16


@given(texts, texts, texts)
def test_a_different_system_gives_another_key(s1: str, s2: str, first: str) -> None:
    k1 = conversation_key(None, chat("gpt-4o", s1, first))
    k2 = conversation_key(None, chat("gpt-4o", s2, first))
    assert (k1 == k2) == (s1 == s2)


def test_model_and_first_user_text_are_part_of_the_key() -> None:
    base = conversation_key(None, chat("gpt-4o", "sys", "hello"))
    assert base != conversation_key(None, chat("gpt-4o-mini", "sys", "hello"))
    assert base != conversation_key(None, chat("gpt-4o", "sys", "hullo"))


def test_a_single_turn_is_never_keyed_without_a_session_header() -> None:
    assert conversation_key(None, chat("gpt-4o", None, "hello")) is None
    assert conversation_key(b"abc", chat("gpt-4o", None, "hello")) is not None


def test_a_session_header_keys_whatever_the_text() -> None:
    one = conversation_key(b"s-1", chat("gpt-4o", "a", "x"))
    assert one == conversation_key(b"s-1", chat("gpt-4o", "b", "y", "z", "w"))
    assert one != conversation_key(b"s-2", chat("gpt-4o", "a", "x"))
    assert one != conversation_key(b"s-1", chat("auto", "a", "x"))  # per model asked for


def test_only_a_bounded_prefix_is_hashed() -> None:
    long = "x" * MAX_PREFIX_CHARS
    assert conversation_key(None, chat("m", long + "a", "q")) == conversation_key(
        None, chat("m", long + "b", "q")
    )


def test_messages_and_responses_expose_the_first_user_text() -> None:
    m = MESSAGES.parse(
        json.dumps(
            {
                "model": "claude",
                "max_tokens": 10,
                "system": "be brief",
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "second"},
                ],
            }
        ).encode()
    )
    assert m.features.first_user_text == "first" and m.features.system_text == "be brief"
    r = RESPONSES.parse(
        json.dumps(
            {
                "model": "gpt-4o",
                "input": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "second"},
                ],
            }
        ).encode()
    )
    assert r.features.first_user_text == "first" and r.last_user_text == "second"
    assert conversation_key(None, r) is not None


def test_lru_drops_the_least_recently_answered() -> None:
    now = [0.0]
    c = Conversations(max_entries=2, idle_s=100, clock=lambda: now[0])
    c.remember(b"a", "p", "m", None)
    c.remember(b"b", "p", "m", None)
    c.remember(b"a", "q", "m", None)  # a answered again: b is now the oldest
    c.remember(b"c", "p", "m", None)
    assert len(c) == 2 and c.get(b"b") is None
    got = c.get(b"a")
    assert got is not None and got.provider == "q"


def test_an_idle_conversation_is_forgotten() -> None:
    now = [0.0]
    c = Conversations(max_entries=10, idle_s=30, clock=lambda: now[0])
    c.remember(b"a", "p", "m", "frontier")
    now[0] = 30.0
    assert c.get(b"a") is not None
    now[0] = 30.5
    assert c.get(b"a") is None and len(c) == 0
    c.remember(b"a", "p", "m", "economy")  # a new conversation: its tier starts afresh
    got = c.get(b"a")
    assert got is not None and got.tier == "economy"


def test_idle_entries_are_dropped_when_another_is_stored() -> None:
    now = [0.0]
    c = Conversations(max_entries=10, idle_s=5, clock=lambda: now[0])
    for k in (b"a", b"b", b"c"):
        c.remember(k, "p", "m", None)
    now[0] = 6.0
    c.remember(b"d", "p", "m", None)
    assert len(c) == 1


def test_zero_entries_is_off() -> None:
    c = Conversations(max_entries=0)
    assert not c.enabled
    c.remember(b"a", "p", "m", None)
    assert len(c) == 0


def test_the_stored_tier_only_goes_up() -> None:
    c = Conversations(clock=lambda: 0.0)
    for tier, model, stored in (
        ("economy", "cheap", ("cheap", "economy")),
        ("frontier", "big", ("big", "frontier")),
        ("standard", "mid", ("big", "frontier")),  # a lower answer keeps it where it was
        (None, "other", ("big", "frontier")),
        ("frontier", "big2", ("big2", "frontier")),
    ):
        c.remember(b"k", "p", model, tier)
        got = c.get(b"k")
        assert got is not None and (got.model, got.tier) == stored


tiers = st.sampled_from([None, "economy", "standard", "frontier"])


@given(tiers, tiers)
def test_higher_tier_is_the_max(a: str | None, b: str | None) -> None:
    order = [None, "economy", "standard", "frontier"]
    assert higher_tier(a, b) == order[max(order.index(a), order.index(b))]


def _cands() -> tuple[Candidate, ...]:
    cfg = make_config(
        {
            "providers": [
                provider("alpha", "http://127.0.0.1:1/v1", models=["m1", "m2"]),
                provider("beta", "http://127.0.0.1:2/v1", models=["m1", "m2"]),
            ]
        }
    )
    a, b = cfg.providers
    rates = Rates.of(1, 1, 0)

    def c(p: Provider, m: str) -> Candidate:
        return Candidate(p, m, rates, 1.0, None)

    return (c(a, "m1"), c(b, "m1"), c(a, "m2"), c(b, "m2"))


def test_prefer_ranks_the_conversations_candidate_first() -> None:
    cands = _cands()
    r = Route("m1", cands, "economy")
    got, c = prefer(r, Sticky("beta", "m2", "economy", 0), by_provider_only=False, usable=bool)
    assert c is cands[3] and got.candidates[0] is c and got.model == "m2"
    assert sorted(map(id, got.candidates)) == sorted(map(id, cands)) and got.tier == "economy"


def test_prefer_a_concrete_model_by_provider_only() -> None:
    cands = _cands()[:2]
    r = Route("m1", cands)
    got, c = prefer(r, Sticky("beta", "other-id", None, 0), by_provider_only=True, usable=bool)
    assert c is cands[1] and got.candidates == (cands[1], cands[0])


def test_prefer_misses_an_unusable_or_absent_candidate() -> None:
    cands = _cands()
    r = Route("m1", cands)
    got, c = prefer(
        r,
        Sticky("beta", "m1", None, 0),
        by_provider_only=False,
        usable=lambda c: c.provider.name != "beta",
    )
    assert c is None and got is r
    got, c = prefer(r, Sticky("gamma", "m1", None, 0), by_provider_only=False, usable=bool)
    assert c is None and got is r
