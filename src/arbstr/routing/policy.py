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
        for rule in policies.rules:
            pattern = rule.keyword_pattern
            if pattern is not None and pattern.search(last_user_text):
                return rule
    return policies.default
