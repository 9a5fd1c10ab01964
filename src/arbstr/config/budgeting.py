"""The config's ``[[budgets]]`` resolved and checked against its policies and providers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from arbstr.config.model import Budget
from arbstr.config.schema import BudgetSection
from arbstr.errors import ConfigError
from arbstr.money import sats_to_msats

Fail = Callable[[str, str], ConfigError]


def resolve_budgets(
    sections: Sequence[BudgetSection],
    policies: Collection[str],
    providers: Collection[str],
    fail: Fail,
) -> tuple[Budget, ...]:
    """Each budget named once, its ``policy`` and ``provider`` ones the config defines."""
    out: list[Budget] = []
    seen: set[str] = set()
    for i, bs in enumerate(sections):
        where = f"budgets[{i}]"
        if bs.name in seen:
            raise fail(f"{where}.name", f"budget {bs.name!r} is defined twice")
        seen.add(bs.name)
        if bs.policy is not None and bs.policy not in policies:
            known = ", ".join(sorted(policies))
            raise fail(f"{where}.policy", f"no policy named {bs.policy!r} (known: {known})")
        if bs.provider is not None and bs.provider not in providers:
            known = ", ".join(sorted(providers)) or "none"
            raise fail(f"{where}.provider", f"no provider named {bs.provider!r} (known: {known})")
        out.append(
            Budget(
                name=bs.name,
                limit_msats=sats_to_msats(bs.sats),
                per=bs.per,
                action=bs.action,
                policy=bs.policy,
                model=bs.model,
                provider=bs.provider,
            )
        )
    return tuple(out)
