"""The config's ``[[tiers]]`` and ``[providers.model_info."m"]`` resolved (for the loader)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from arbstr.config.model import TIER_NAMES, ModelInfo, Tier
from arbstr.config.schema import ModelInfoSection, TierSection
from arbstr.errors import ConfigError

Fail = Callable[[str, str], ConfigError]


def resolve_tiers(sections: Sequence[TierSection], fail: Fail) -> tuple[Tier, ...]:
    """``[[tiers]]``: known names, each at most once, cheapest first, a model in one tier."""
    out: list[Tier] = []
    owner: dict[str, str] = {}
    for i, ts in enumerate(sections):
        where = f"tiers[{i}]"
        if ts.name not in TIER_NAMES:
            raise fail(f"{where}.name", f"unknown tier {ts.name!r}; known: {', '.join(TIER_NAMES)}")
        if any(t.name == ts.name for t in out):
            raise fail(f"{where}.name", f"tier {ts.name!r} is given twice")
        if out and TIER_NAMES.index(ts.name) < TIER_NAMES.index(out[-1].name):
            raise fail(
                f"{where}.name", f"tiers must be listed cheapest first ({', '.join(TIER_NAMES)})"
            )
        for m in ts.models:
            if m in owner:
                raise fail(f"{where}.models", f"model {m!r} is already in tier {owner[m]!r}")
            owner[m] = ts.name
        out.append(Tier(ts.name, tuple(ts.models)))
    return tuple(out)


def resolve_model_info(
    sections: Mapping[str, ModelInfoSection],
) -> dict[str, ModelInfo]:
    """A provider's configured model limits, as :class:`ModelInfo` (discovery's are overlaid)."""
    return {
        model: ModelInfo(
            context_length=s.context_length,
            max_completion_tokens=s.max_completion_tokens,
            input_modalities=tuple(s.input_modalities or ()),
            tools=s.tools,
        )
        for model, s in sections.items()
    }
