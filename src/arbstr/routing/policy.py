"""Which policy rule applies to a request. Pure."""

from __future__ import annotations

from arbstr.config import Policies, Rule
from arbstr.errors import InvalidRequest

_MAX_ECHO = 80  # characters of an unknown name echoed back


def select_policy(policies: Policies, header: str | None, last_user_text: str | None) -> Rule:
    """``X-Arbstr-Policy`` if given (unknown name -> 400), else the first rule whose keyword
    occurs as a whole word (or whose ``keyword_regex`` matches), case-insensitively, in the last
    user message, else the default rule."""
    if header is not None:
        name = header.strip()
        rule = policies.by_name.get(name)
        if rule is None:
            known = ", ".join(sorted(policies.by_name))
            shown = name if len(name) <= _MAX_ECHO else name[: _MAX_ECHO - 1] + "…"
            raise InvalidRequest(
                f"unknown policy {shown!r} in X-Arbstr-Policy; known policies: {known}",
                code="unknown_policy",
            )
        return rule
    if policies.has_keywords and last_user_text:
        lowered = last_user_text.lower()
        for rule in policies.rules:
            if _matches(rule, last_user_text, lowered):
                return rule
    return policies.default


def _matches(rule: Rule, text: str, lowered: str) -> bool:
    if rule.keyword_regex is not None:
        return rule.keyword_regex.search(text) is not None
    for kw in rule.keywords:  # noqa: SIM110 - a loop: any() over a generator costs 2x here
        if kw in lowered and _whole_word(lowered, kw):
            return True
    return False


def _whole_word(text: str, word: str) -> bool:
    """``word`` occurs in ``text`` with no word character (``\\w``) right before or after it:
    ``code`` in "write code." but not in "decode" (what ``(?<!\\w)code(?!\\w)`` matches,
    without a regex scan of the whole text)."""
    start = text.find(word)
    while start >= 0:
        end = start + len(word)
        if (start == 0 or not _is_word(text[start - 1])) and (
            end == len(text) or not _is_word(text[end])
        ):
            return True
        start = text.find(word, start + 1)
    return False


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"
